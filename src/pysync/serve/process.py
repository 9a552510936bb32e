"""What a serving process runs, single (``pysync serve``) or an HTTP worker of
``pysync serve --workers`` (``worker.py``): the event loop, the garbage collector's tuning and
uvicorn with pysync's connection handling and live path."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable
from typing import Any

import uvicorn

from pysync.config import Settings
from pysync.http.api import ShapeAPI
from pysync.http.parking import LivePolls
from pysync.http.server import bounded_protocol


def run_loop(main: Awaitable[None]) -> None:
    """Run on uvloop when it is installed (uvicorn's own loop setup is bypassed here)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
        return
    uvloop.run(main)  # type: ignore[arg-type]


class _Server(uvicorn.Server):
    """Releases waiting long-polls on SIGINT/SIGTERM: uvicorn waits for open requests."""

    def __init__(self, config: uvicorn.Config, api: ShapeAPI) -> None:
        super().__init__(config)
        self.api = api

    def handle_exit(self, sig: int, frame: object) -> None:
        self.api.close()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


def http_server(
    api: ShapeAPI, settings: Settings, max_connections: int, lifespan: Any
) -> uvicorn.Server:
    """uvicorn with pysync's connection handling and live path (``http/server.py``);
    when tracing, without the live path: every request then has its span."""
    fast = None if api.tracer.enabled else LivePolls(api)
    config = uvicorn.Config(
        api.app(lifespan=lifespan),
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        http=bounded_protocol(max_connections, settings.header_timeout, fast),
    )
    return _Server(config, api)


def tune_gc() -> None:
    # Long-lived start-up objects out of the collector's way, and fewer young-
    # generation passes: replication allocates many short-lived tuples (about 5%
    # of ingest CPU).
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
