"""The shape API as a plain ASGI app, to run under any ASGI server for comparison
(``benchmarks/fanout.py --asgi-server``): no live path below ASGI, every request goes
through the app. The engine starts in the lifespan, on ``PYSYNC_BENCH_DATABASE_URL``
with logs in ``PYSYNC_BENCH_STORAGE``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from pysync.engine import Engine
from pysync.http.api import ShapeAPI

engine = Engine(
    os.environ["PYSYNC_BENCH_DATABASE_URL"], storage_dir=os.environ["PYSYNC_BENCH_STORAGE"]
)
api = ShapeAPI(engine, long_poll_timeout=20.0)


@contextlib.asynccontextmanager
async def lifespan(_: Any) -> AsyncIterator[None]:
    await engine.start()
    yield
    api.close()
    await engine.stop()


app = api.app(lifespan=lifespan)
