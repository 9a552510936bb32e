"""Rendering an app-defined shape (``Sync.render``, ``Sync.route``), as Phoenix.Sync's
``sync_render``: the request's offset/handle/live/cursor with the app's shape.

    secret -> parse the request -> the shape (the app's function runs here, so its
    exceptions, e.g. HTTPException(401), are the app's) -> serve -> transform -> CORS

The shape is served by the engine in this process (embedded mode, ``EmbeddedShapes``) or
by a sync service the app forwards to (``http_mode``). Both offer the same
``ShapeBackend`` surface, so routes, ``render`` and ``interrupt`` are one code path.
A live request whose shape came from a function is interruptible: after
``Sync.interrupt`` the function runs again; the same shape goes on waiting, a changed one
answers 409 must-refetch with the new shape's handle.

Caching: a per-request shape is answered ``private`` (a browser may keep it, a shared
cache may not): one URL (``/shapes/todos?offset=-1``) answers each user with their own
shape, and a CDN keys its copies by URL and ``vary`` only, which cannot name every way an
app authenticates (a custom header, a client certificate, the source address). Electric's
``public`` caching is kept where the app says the shape is the same for everyone.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response

from pysync.app.cors import CORS
from pysync.app.shapes import ShapeFunction, call_shape_function, is_shape_function, shape
from pysync.app.transform import Transform, transform_response
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.http.auth import check_secret
from pysync.http.errors import MustRefetch, ShapeAPIError, invalid
from pysync.http.params import ShapeRequest
from pysync.http.responses import error_response
from pysync.http.waiters import Recheck, ShapeMatcher
from pysync.shapes.definition import ShapeDefinition, ShapeError

log = logging.getLogger(__name__)

APP_ROUTE_METHODS = "GET, HEAD, OPTIONS"
"""What an app's shape route answers (``routes.app_route``), as its preflight says."""

Cache = Literal["public", "private"]
"""``public``: Electric's cache headers (shared caches may keep responses, for a shape
that is the same for everyone); ``private``: only the client's own cache may."""


class ShapeBackend(Protocol):
    async def serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None,
    ) -> Response:
        """The response to a validated request for an app-defined shape (errors rendered)."""

    async def electric(self, request: Request) -> Response:
        """A request to Electric's ``/v1/shape`` with the client's own parameters."""

    async def health(self, request: Request) -> Response:
        """``/v1/health``."""

    def interrupt(self, shape: ShapeMatcher | None, **options: Any) -> int:
        """On the event loop: interrupt matching waiting function-defined requests."""

    def close(self) -> None:
        """Shutdown begins: waiting requests answer now."""

    @property
    def waiting(self) -> int:
        """Live requests waiting now."""


class EmbeddedShapes:
    """The engine's own ShapeAPI."""

    def __init__(self, engine: Engine, api: ShapeAPI) -> None:
        self.engine = engine
        self.api = api

    async def serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None,
    ) -> Response:
        return await self.api.serve(request, parsed, definition, recheck=recheck)

    async def electric(self, request: Request) -> Response:
        return await self.api.endpoint(request)

    async def health(self, request: Request) -> Response:
        return await self.api.health(request)

    async def metrics(self, request: Request) -> Response:
        return await self.api.metrics(request)

    def interrupt(self, shape: ShapeMatcher | None, **options: Any) -> int:
        return self.api.interrupts.interrupt(shape, **options)

    def close(self) -> None:
        self.api.close()

    @property
    def waiting(self) -> int:
        return len(self.api.interrupts)


async def render(
    backend: ShapeBackend,
    request: Request,
    source: object,
    *,
    secret: str | None,
    cors: CORS,
    transform: Transform | None = None,
    cache: Cache = "private",
) -> Response:
    """The response to ``request`` for the shape ``source`` (a definition input or a
    shape function); ``secret`` is required of the client unless None."""
    if request.method == "OPTIONS":
        return cors.preflight(request, APP_ROUTE_METHODS)
    try:
        check_secret(request, secret)
        parsed = ShapeAPI.parse_query(request.query_params, shape_from_params=False)
    except ShapeAPIError as exc:
        return _error(request, exc, cors)
    recheck = None
    try:
        if is_shape_function(source):
            definition = await call_shape_function(source, request)  # type: ignore[arg-type]
            if parsed.live:
                recheck = _recheck(source, request, parsed)  # type: ignore[arg-type]
        else:
            definition = shape(source)
    except ShapeError as exc:
        return _error(request, invalid({exc.field: [exc.message]}), cors)
    response = await backend.serve(request, parsed, definition, recheck)
    if transform is not None:
        response = transform_response(response, transform)
    if cache == "private":
        private_cache(response.headers)
    return cors.apply(request, response)


def check_cache(cache: object) -> Cache:
    if cache not in ("public", "private"):
        raise ValueError(f"cache must be 'public' or 'private', not {cache!r}")
    return cache


def private_cache(headers: MutableHeaders) -> None:
    """Electric's ``public`` cache-control made ``private``, without the shared caches'
    ``s-maxage``; ``no-store``, ``no-cache`` and ``private`` answers stay as they are."""
    value = headers.get("cache-control")
    if value is None:
        return
    directives = [d.strip() for d in value.split(",") if d.strip()]
    if "public" not in directives:
        return
    headers["cache-control"] = ", ".join(
        "private" if d == "public" else d for d in directives if not d.startswith("s-maxage")
    )


def _error(request: Request, error: ShapeAPIError, cors: CORS) -> Response:
    response = error_response(request, error)
    return response if error.bare else cors.apply(request, response)


def _recheck(fn: ShapeFunction, request: Request, parsed: ShapeRequest) -> Recheck:
    async def recheck() -> ShapeDefinition:
        try:
            return await call_shape_function(fn, request)
        except Exception:  # noqa: BLE001 - the client refetches, and then meets the error itself
            log.warning(
                "the shape function of %s failed after an interrupt; the client refetches",
                request.url.path,
                exc_info=True,
            )
            raise MustRefetch(None, parsed.offset, parsed.live, parsed.sse) from None

    return recheck
