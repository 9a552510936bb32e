"""An ASGI app on a real port, in this event loop (httpx's ASGITransport buffers whole
bodies, so streaming responses such as SSE need a server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from pysync.postgres.cluster import free_port


@contextlib.asynccontextmanager
async def serving(app: Any, http: Any = "auto") -> AsyncIterator[str]:
    """``app`` served at the yielded base URL until the block ends (``http``: uvicorn's
    protocol, such as ``pysync.http.server.bounded_protocol(...)``)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=http
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
