"""``/metrics`` on a port of its own (``--prometheus-port``, Electric's
``ELECTRIC_PROMETHEUS_PORT``): scrapers reach it without reaching the shape API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pysync.metrics import CONTENT_TYPE, EngineMetrics


class _QuietServer(uvicorn.Server):
    """Leaves the signals to the shape API's server: a second handler would take
    SIGTERM from it, and it would never shut down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def metrics_app(metrics: EngineMetrics) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return Response(await metrics.scrape(), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])


def start(metrics: EngineMetrics, sock: socket.socket) -> Callable[[], Awaitable[None]]:
    """Serve ``metrics`` on the listening ``sock``; the result stops it."""
    # log_config=None: logging stays as the shape API's server configured it.
    config = uvicorn.Config(metrics_app(metrics), access_log=False, lifespan="off", log_config=None)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="prometheus port")

    async def stop() -> None:
        server.should_exit = True
        await task

    return stop
