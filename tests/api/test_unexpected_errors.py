"""A bug in pysync (an exception no step expects) is answered the same way by the
standalone app and by routes mounted in an embedding app: Electric's redacted JSON 500
with its headers, the traceback in the log, and the engine keeps serving."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import pysync
from http_support import Conn
from pysync.engine import Engine
from pysync.http.api import ShapeAPI


def broken(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Engine.shape

    async def shape(self: Engine, definition: Any, **kwargs: Any) -> Any:
        if definition.table == "other":
            raise RuntimeError("a detail only the log may show")
        return await real(self, definition, **kwargs)

    monkeypatch.setattr(Engine, "shape", shape)


async def check(http: httpx.AsyncClient, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    response = await http.get(f"{prefix}/v1/shape", params={"table": "other", "offset": "-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error"}
    assert "detail" not in response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "electric-handle" not in response.headers
    assert response.headers["access-control-expose-headers"]  # Electric's headers on errors too
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert logged, "the traceback is logged"
    exc_info = logged[0].exc_info
    assert exc_info is not None and "a detail only the log may show" in str(exc_info[1])
    # The engine goes on serving.
    served = await http.get(f"{prefix}/v1/shape", params={"table": "items", "offset": "-1"})
    assert served.status_code == 200, served.text


async def test_a_bug_is_a_redacted_500_standalone(
    engine: Engine, conn: Conn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken(monkeypatch)
    app = ShapeAPI(engine).app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        await check(http, "", caplog)


async def test_a_bug_is_the_same_500_in_an_embedding_app(
    database_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken(monkeypatch)
    sync = pysync.Sync(database_url, in_memory=True, env=False)
    await sync.start()
    try:
        app = Starlette(routes=[sync.mount("/electric")])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://t"
        ) as http:
            await check(http, "/electric", caplog)
    finally:
        await sync.stop()
