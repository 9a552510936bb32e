"""Starlette routes of a ``Sync``: Electric's API under a prefix, and app shape routes.

They are plain Starlette routes, so the app's middleware (auth, sessions, GZip) runs
before them, and FastAPI apps take them with ``app.router.routes.append(...)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from pysync.app.cors import CORS
from pysync.app.render import ShapeBackend
from pysync.app.served_tables import ServedTables
from pysync.http.responses import READ_METHODS, error_response
from pysync.http.responses import SHAPE_METHODS as ALL_METHODS

SHAPE_METHODS = ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]
APP_SHAPE_METHODS = ["GET", "HEAD", "OPTIONS"]
Endpoint = Callable[[Request], Awaitable[Response]]


def electric_routes(
    backend: Callable[[], ShapeBackend],
    cors: CORS,
    *,
    metrics: bool = False,
    tables: ServedTables | None = None,
    allow_delete: bool = True,
) -> list[BaseRoute]:
    """``/v1/shape`` (client-defined shapes, every method of Electric's API; only of
    ``tables`` when given) and ``/v1/health``; ``/metrics`` (Prometheus) when asked and
    the engine is in-process. ``allow_delete``: whether a preflight offers DELETE."""
    methods = ALL_METHODS if allow_delete else READ_METHODS

    async def shape(request: Request) -> Response:
        if request.method == "OPTIONS":
            return cors.preflight(request, methods)
        refusal = await tables.refusal(request) if tables is not None else None
        if refusal is not None:
            return cors.apply(request, error_response(request, refusal))
        response = await backend().electric(request)
        # Electric's 401 carries no CORS headers; everything else gets the app's.
        return response if response.status_code == 401 else cors.apply(request, response)

    async def health(request: Request) -> Response:
        return cors.apply(request, await backend().health(request))

    routes: list[BaseRoute] = [
        Route("/v1/shape", shape, methods=SHAPE_METHODS),
        Route("/v1/shape/", shape, methods=SHAPE_METHODS),
        Route("/v1/health", health, methods=["GET", "HEAD"]),
    ]
    if metrics:

        async def metrics_endpoint(request: Request) -> Response:
            metrics_of = getattr(backend(), "metrics", None)
            if metrics_of is None:
                return Response("metrics are served by the sync service itself\n", status_code=404)
            response: Response = await metrics_of(request)
            return response

        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return routes


def mount(path: str, routes: list[BaseRoute]) -> Mount:
    if not path.startswith("/") or path == "/":
        raise ValueError(
            f"mount path {path!r}: give a prefix such as '/electric' (routes() mounts at the root)"
        )
    return Mount(path.rstrip("/"), routes=routes)


def app_route(path: str, endpoint: Endpoint, *, name: str | None = None) -> Route:
    return Route(path, endpoint, methods=APP_SHAPE_METHODS, name=name)
