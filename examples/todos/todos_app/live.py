"""The live page, ``GET /live``: the user's todos rendered on the server as a table, kept
live by htmx's SSE extension from ``sync.live_html`` (no JS build: htmx and its
extension are files in static/). A write in any browser (or straight in Postgres)
shows in every open page within the shape's latency.

- ``GET /live/events``: the Server-Sent Events of the user's todos (``sync.live_html``
  with a per-request shape: the lists the user owns or was shared).
- ``POST /live/todos``, ``/live/todos/{id}/toggle``, ``/live/todos/{id}/delete``: plain
  form posts. htmx sends them without leaving the page (``hx-post``, answered 204: the
  change comes back through the stream); without JavaScript they redirect to the page.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

import pysync
from todos_app.auth import current_user
from todos_app.models import Todo, TodoList

VisibleLists = Callable[[AsyncSession, str], Awaitable[list[int]]]
User = Annotated[str, Depends(current_user)]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{user}'s live todos</title>
<script src="/static/htmx.min.js"></script>
<script src="/static/htmx-ext-sse.min.js"></script>
<style>
body {{ font-family: sans-serif; max-width: 40em; margin: 2em auto; }}
td {{ padding: 0.2em 0.6em; }} tr.done td.title {{ text-decoration: line-through; }}
td form {{ margin: 0; }}
</style></head>
<body>
<h1>{user}'s todos, live</h1>
<form method="post" action="/live/todos" hx-post="/live/todos" hx-swap="none"
      hx-on::after-request="if (event.detail.successful) this.reset()">
  <select name="list_id">{options}</select>
  <input name="title" required maxlength="200" placeholder="a new todo">
  <button>add</button>
</form>
<div hx-ext="sse" sse-connect="/live/events" sse-swap="message" hx-swap="none"></div>
<table><tbody id="todos">{rows}</tbody></table>
</body></html>
"""


def todo_row(row: Mapping[str, Any]) -> str:
    """One todo as the page shows it: the row the stream swaps by its id."""
    todo_id = html.escape(str(row["id"]))
    title = html.escape(str(row["title"]))
    done = bool(row["done"])
    marked = ' class="done"' if done else ""

    def button(action: str, label: str) -> str:
        url = f"/live/todos/{todo_id}/{action}"
        return (
            f'<form method="post" action="{url}" hx-post="{url}" hx-swap="none">'
            f'<button name="{action}">{label}</button></form>'
        )

    return (
        f'<tr id="todo-{todo_id}" data-todo="{title}"{marked}>'
        f"<td>{button('toggle', '☑' if done else '☐')}</td>"
        f'<td class="title">{title}</td>'
        f"<td>{button('delete', '✕')}</td></tr>"
    )


def add_live_page(app: FastAPI, sync: pysync.Sync, visible_lists: VisibleLists) -> None:
    """The page and its endpoints on ``app``; ``visible_lists(db, user)``: the ids of the
    lists ``user`` may see and edit."""

    @app.get("/live", response_class=HTMLResponse)
    async def page(request: Request, user: User) -> HTMLResponse:
        async with request.app.state.sessions() as db:
            lists = await visible_lists(db, user)
            names = (
                await db.execute(
                    sa.select(TodoList.id, TodoList.name)
                    .where(TodoList.id.in_(lists))
                    .order_by(TodoList.id)
                )
            ).all()
            todos = (await db.scalars(sa.select(Todo).where(Todo.list_id.in_(lists)))).all()
        options = "".join(
            f'<option value="{list_id}">{html.escape(name)}</option>' for list_id, name in names
        )
        rows = "".join(todo_row({"id": t.id, "title": t.title, "done": t.done}) for t in todos)
        return HTMLResponse(PAGE.format(user=html.escape(user), options=options, rows=rows))

    @app.get("/live/events")
    async def events(request: Request, user: User) -> Response:
        async def todos_shape() -> pysync.ShapeDefinition:
            async with request.app.state.sessions() as db:
                lists = await visible_lists(db, user)
            return pysync.shape(Todo, where=Todo.list_id.in_(lists))

        return await sync.live_html(request, todos_shape, render=todo_row, target="#todos")

    @app.post("/live/todos")
    async def add(request: Request, user: User) -> Response:
        form = await _form(request)
        title = form.get("title", "").strip()[:200]
        try:
            list_id = int(form.get("list_id", ""))
        except ValueError:
            raise HTTPException(422, "list_id: a list's id") from None
        if not title:
            raise HTTPException(422, "title: a todo needs a title")
        async with request.app.state.sessions() as db:
            if list_id not in await visible_lists(db, user):
                raise HTTPException(404, "no such list of yours")
            db.add(Todo(list_id=list_id, title=title))
            await db.commit()
        return _done(request)

    @app.post("/live/todos/{todo_id}/{action}")
    async def change(request: Request, todo_id: uuid.UUID, action: str, user: User) -> Response:
        if action not in ("toggle", "delete"):
            raise HTTPException(404, "toggle or delete")
        async with request.app.state.sessions() as db:
            todo = await db.get(Todo, todo_id, with_for_update=True)
            if todo is None or todo.list_id not in await visible_lists(db, user):
                raise HTTPException(404, "no such todo of yours")
            if action == "toggle":
                todo.done = not todo.done
            else:
                await db.delete(todo)
            await db.commit()
        return _done(request)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of each)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[-1] for name, values in fields.items()}


def _done(request: Request) -> Response:
    # htmx (hx-post) stays on the page: the stream brings the change. A plain form post
    # goes back to the page (post/redirect/get).
    if request.headers.get("hx-request"):
        return Response(status_code=204)
    return RedirectResponse("/live", status_code=303)
