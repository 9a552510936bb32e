"""An HTTP worker of ``pysync serve --workers N`` (started by the supervisor)::

    python -m pysync.serve.worker --hub <socket> --fd <listening socket>

Serves the shape API on a ``MirrorEngine``: the same ``ShapeAPI``, live path and
connection handling as a single process, on the listening socket it inherited. It stops
on SIGTERM (answering its waiting long-polls) or when the replicating process is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from starlette.applications import Starlette

from pysync import tracing
from pysync.config import Settings, make_settings
from pysync.http.api import ShapeAPI
from pysync.http.server import connection_budget, quiet_server_logs
from pysync.serve.mirror import MirrorEngine
from pysync.serve.process import http_server, run_loop, tune_gc
from pysync.serve.supervisor import SETTINGS_ENV


async def work(settings: Settings, hub: Path, fd: int) -> None:
    assert settings.database_url is not None
    max_connections = connection_budget(settings.max_connections)
    quiet_server_logs()
    sock = socket.socket(fileno=fd)
    engine = MirrorEngine(
        hub,
        settings.shape_storage,
        settings.database_url,
        pooled_database_url=settings.pooled_conninfo(),
        chunk_bytes=settings.chunk_bytes,
        snapshot_connections=settings.snapshot_connections,
    )
    await engine.start()
    tracer = tracing.from_settings(settings)
    api = ShapeAPI.from_settings(engine, settings, tracer)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        tune_gc()
        engine.ready(os.getpid())
        yield
        await engine.stop()

    server = http_server(api, settings, max_connections, lifespan)

    def hub_gone(_: object) -> None:
        api.close()
        server.should_exit = True

    engine.closed.add_done_callback(hub_gone)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await engine.stop()
        await asyncio.to_thread(tracer.shutdown)


def main() -> None:
    parser = argparse.ArgumentParser(prog="pysync.serve.worker")
    parser.add_argument("--hub", type=Path, required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    settings = make_settings(msgspec.json.decode(os.environ[SETTINGS_ENV]))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_loop(work(settings, args.hub, args.fd))


if __name__ == "__main__":
    main()
