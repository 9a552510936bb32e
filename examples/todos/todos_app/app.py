"""The todos app: FastAPI + SQLAlchemy, with pysync deciding what each user syncs.

- ``GET /shapes/lists``, ``/shapes/todos``, ``/shapes/shares``: per-user shapes. Each is a
  function (the lists the user owns or has been shared, read from the database), so a
  live request is interruptible: when sharing changes who sees what, the write endpoint
  calls ``sync.interrupt``; users whose visible set changed refetch at once, the others
  keep waiting.
- ``POST /api/mutations``: TanStack DB's optimistic writes, applied by ``pysync.Writer``
  in one transaction; the answer's ``txid`` is what the page waits for in the shape.
- ``POST /api/lists``, ``POST``/``DELETE /api/lists/{id}/shares/{user}``: lists and sharing.
- ``GET /live``: the todos as a server-rendered page kept live by htmx (todos_app/live.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import pysync
from todos_app.auth import COOKIE, Signer, current_user
from todos_app.live import add_live_page
from todos_app.models import Base, Share, Todo, TodoList

STATIC = Path(__file__).resolve().parent.parent / "static"


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as db:
        yield db


User = Annotated[str, Depends(current_user)]
Db = Annotated[AsyncSession, Depends(session)]


def create_app(
    sync: pysync.Sync | None = None, *, key: bytes | None = None, seed: bool = False
) -> FastAPI:
    """The app on ``sync`` (default: ``pysync.Sync()``, which uses ``DATABASE_URL`` or,
    without it, a private Postgres in ``./.pysync``). ``seed`` adds demo users' lists."""
    sync = sync or pysync.Sync()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if not sync.started:  # a test may hand in a started one
                await stack.enter_async_context(sync)
            engine = create_async_engine(
                sync.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
            )
            stack.push_async_callback(engine.dispose)
            await create_tables(engine, seed=seed)
            app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
            yield

    app = FastAPI(lifespan=lifespan)
    app.state.signer = Signer(
        key or os.environ.get("TODOS_KEY", "").encode() or secrets.token_bytes(32)
    )
    # Preflights never carry the cookie: answered before auth runs.
    app.add_middleware(pysync.PreflightMiddleware, cors=sync.cors, paths=["/shapes/"])

    # -- pages and sign-in ----------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/login")
    async def login(user: str, request: Request) -> RedirectResponse:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE, request.app.state.signer.sign(user), httponly=True, samesite="lax"
        )
        return response

    @app.get("/api/me")
    async def me(user: User) -> dict[str, str]:
        return {"user": user}

    # -- shapes: what each user syncs -------------------------------------------------

    async def visible_lists(db: AsyncSession, user: str) -> list[int]:
        shared = sa.select(Share.list_id).where(Share.user == user)
        query = sa.select(TodoList.id).where(
            sa.or_(TodoList.owner == user, TodoList.id.in_(shared))
        )
        return list((await db.scalars(query.order_by(TodoList.id))).all())

    def per_user(make_shape: Callable[[list[int]], pysync.ShapeDefinition]) -> Any:
        """An endpoint rendering the user's shape; the function re-runs on interrupts."""

        async def endpoint(request: Request, user: User) -> Response:
            async def shape() -> pysync.ShapeDefinition:
                async with request.app.state.sessions() as db:
                    return make_shape(await visible_lists(db, user))

            return await sync.render(request, shape, check_secret=False)

        return endpoint

    app.add_api_route(
        "/shapes/lists", per_user(lambda ids: pysync.shape(TodoList, where=TodoList.id.in_(ids)))
    )
    app.add_api_route(
        "/shapes/todos", per_user(lambda ids: pysync.shape(Todo, where=Todo.list_id.in_(ids)))
    )
    app.add_api_route(
        "/shapes/shares", per_user(lambda ids: pysync.shape(Share, where=Share.list_id.in_(ids)))
    )

    # The same todos as a server-rendered page kept live by htmx (todos_app/live.py).
    add_live_page(app, sync, visible_lists)

    def shapes_changed() -> None:
        # Every function-defined shape of these tables re-runs; only users whose set of
        # visible lists changed are sent to refetch (409 with their new shape).
        for model in (TodoList, Todo, Share):
            sync.interrupt(model)

    # -- writes -----------------------------------------------------------------------

    @app.post("/api/mutations")
    async def mutations(request: Request, user: User, db: Db) -> Response:
        visible = set(await visible_lists(db, user))
        await db.rollback()  # the writer runs its own transaction

        def may_write(list_id: Any) -> None:
            if list_id not in visible:
                raise pysync.MutationForbidden(f"list {list_id} is not yours")

        def check(mutation: pysync.Mutation) -> None:
            # mutation.data: for updates and deletes the row as stored (read and locked by
            # the writer), never the client's "original"; {} for an insert.
            if mutation.operation != "insert":
                may_write(mutation.data["list_id"])
            if "list_id" in mutation.changes:
                may_write(mutation.changes["list_id"])

        writer = pysync.Writer().allow(Todo, check=check)
        return await writer.handle(request, connection=db)

    @app.post("/api/lists")
    async def new_list(body: dict[str, str], user: User, db: Db) -> dict[str, int]:
        name = (body.get("name") or "").strip()[:100]
        if not name:
            raise HTTPException(422, "a list needs a name")
        todo_list = TodoList(owner=user, name=name)
        db.add(todo_list)
        await db.commit()
        shapes_changed()
        return {"id": todo_list.id}

    async def owned(db: AsyncSession, list_id: int, user: str) -> TodoList:
        todo_list = await db.get(TodoList, list_id)
        if todo_list is None or todo_list.owner != user:
            raise HTTPException(404, "no such list of yours")
        return todo_list

    @app.post("/api/lists/{list_id}/shares/{other}")
    async def share(list_id: int, other: str, user: User, db: Db) -> JSONResponse:
        await owned(db, list_id, user)
        await db.execute(
            postgresql.insert(Share).values(list_id=list_id, user=other).on_conflict_do_nothing()
        )
        await db.commit()
        shapes_changed()
        return JSONResponse({"shared": True})

    @app.delete("/api/lists/{list_id}/shares/{other}")
    async def unshare(list_id: int, other: str, user: User, db: Db) -> JSONResponse:
        await owned(db, list_id, user)
        await db.execute(sa.delete(Share).where(Share.list_id == list_id, Share.user == other))
        await db.commit()
        shapes_changed()
        return JSONResponse({"shared": False})

    return app


async def create_tables(engine: AsyncEngine, *, seed: bool) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        if (
            seed
            and not (await conn.execute(sa.select(sa.func.count()).select_from(TodoList))).scalar()
        ):
            for owner, name, titles in (
                ("ann", "Ann's groceries", ["milk", "bread"]),
                ("bob", "Bob's chores", ["dishes", "laundry"]),
            ):
                list_id = (
                    await conn.execute(
                        sa.insert(TodoList).values(owner=owner, name=name).returning(TodoList.id)
                    )
                ).scalar_one()
                await conn.execute(
                    sa.insert(Todo), [{"list_id": list_id, "title": t} for t in titles]
                )


app = create_app(seed=True)
"""``uvicorn todos_app.app:app``: the demo, with Ann's and Bob's lists."""
