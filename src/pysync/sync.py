"""Embedding pysync in a Starlette / FastAPI app.

    sync = Sync(DATABASE_URL, storage_dir="./.pysync")
    app = Starlette(routes=[
        *sync.routes(),                                   # /v1/shape, as Electric
        sync.shape_route("/todos", ShapeDefinition.create("todos")),
        sync.shape_route("/my-todos", lambda request: ShapeDefinition.create(
            "todos", where="user_id = $1", params=[request.state.user_id])),
    ], lifespan=sync.lifespan)
    ...
    sync.interrupt("todos")    # release waiting long-polls after a definition changed
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pysync.engine import Engine
from pysync.http import responses
from pysync.http.api import ShapeAPI
from pysync.http.waiters import ShapeMatcher
from pysync.shapes.definition import ShapeDefinition

ShapeSource = ShapeDefinition | Callable[[Request], ShapeDefinition | Awaitable[ShapeDefinition]]

_running: list[Sync] = []


class Sync:
    """An engine plus its HTTP API, started and stopped by the app's lifespan."""

    def __init__(
        self,
        database_url: str,
        *,
        storage_dir: Path | str | None = None,
        secret: str | None = None,
        long_poll_timeout: float = 20.0,
        slot: str = "pysync",
        publication: str = "pysync",
        max_shapes: int | None = None,
        allow_delete: bool = False,
    ) -> None:
        self.engine = Engine(
            database_url, storage_dir=storage_dir, slot=slot, publication=publication,
            max_shapes=max_shapes,
        )
        self.api = ShapeAPI(
            self.engine, secret=secret, long_poll_timeout=long_poll_timeout, allow_delete=allow_delete
        )

    async def start(self) -> None:
        await self.engine.start()
        _running.append(self)

    async def stop(self) -> None:
        if self in _running:
            _running.remove(self)
        await self.engine.stop()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def routes(self) -> list[Route]:
        """Electric's routes: ``/v1/shape`` (client-defined shapes) and ``/v1/health``."""
        return self.api.routes()

    def shape_route(self, path: str, shape: ShapeSource, *, check_secret: bool = True) -> Route:
        """A route serving one server-defined shape (clients send only offset, handle,
        live, cursor). ``shape`` may be a function of the request, re-evaluated when an
        ``interrupt`` hits a waiting request: if its result changed, the client gets a
        409 must-refetch with the new shape.

        With a ``secret`` configured, the route requires it too, unless ``check_secret``
        is False (the app authorises requests itself)."""

        async def resolve(request: Request) -> ShapeDefinition:
            if isinstance(shape, ShapeDefinition):
                return shape
            result = shape(request)
            if inspect.isawaitable(result):
                result = await result
            return result

        async def step(request: Request) -> Response:
            if request.method == "OPTIONS":
                return responses.options(request)
            if check_secret:
                self.api.authorise(request)
            parsed = self.api.parse_query(request.query_params, shape_from_params=False)
            definition = await resolve(request)
            recheck = None if isinstance(shape, ShapeDefinition) else (lambda: resolve(request))
            return await self.api.serve(request, parsed, definition, recheck=recheck)

        async def endpoint(request: Request) -> Response:
            return await self.api.handle(request, step)

        return Route(path, endpoint, methods=["GET", "HEAD", "OPTIONS"])

    def interrupt(self, shape: ShapeMatcher | None = None, **options: Any) -> int:
        """Release waiting live requests whose shape matches; returns how many.

        ``shape`` is a table name, a ShapeDefinition or a callable receiving the
        normalised shape; ``table``, ``namespace``, ``where``, ``params`` and ``columns``
        narrow a table match (``replica`` is ignored)."""
        return self.api.interrupts.interrupt(shape, **options)


def interrupt(shape: ShapeMatcher | None = None, **options: Any) -> int:
    """``Sync.interrupt`` on every running Sync of this process."""
    return sum(sync.interrupt(shape, **options) for sync in list(_running))
