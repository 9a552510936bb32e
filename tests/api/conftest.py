"""Fixtures of the HTTP API tests: a real Engine on a fresh database holding the
``items`` and ``other`` tables, and the ShapeAPI app behind ``httpx.ASGITransport``
(in-process, no mocks). ``conn`` and ``engine`` here replace the suite-wide ones.

A test parametrised with ``BOTH_SERVERS`` (http_support) gets its ``client`` twice: on
the in-process app, and on ``pysync serve --workers 2`` over TCP on the same database
(HTTP workers must be one engine to a client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from http_support import IN_PROCESS, LONG_POLL, SETUP_SQL, Client, Conn, EngineFactory, make_api
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SETUP_SQL)
        yield conn


@pytest.fixture
async def make_engine(database_url: str, conn: Conn) -> AsyncIterator[EngineFactory]:
    """Starts engines on the test database (stopped at teardown)."""
    engines: list[Engine] = []

    async def make(**kwargs: Any) -> Engine:
        engine = Engine(database_url, flush_interval=0.02, **kwargs)
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.stop()


@pytest.fixture
async def engine(make_engine: EngineFactory) -> Engine:
    return await make_engine()


@pytest.fixture
async def api(engine: Engine) -> ShapeAPI:
    return make_api(engine)


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Client:
    mode = getattr(request, "param", IN_PROCESS)
    fixture = "in_process_client" if mode == IN_PROCESS else "workers_client"
    served: Client = request.getfixturevalue(fixture)
    return served


@pytest.fixture
async def in_process_client(api: ShapeAPI) -> AsyncIterator[Client]:
    client = Client(api)
    yield client
    await client.aclose()


@pytest.fixture
async def workers_client(database_url: str, conn: Conn, tmp_path: Path) -> AsyncIterator[Client]:
    """``pysync serve --workers 2 --allow-delete`` on the test database."""
    port = free_port()
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "served",
        "--workers",
        "2",
        "--allow-delete",
        long_poll_timeout=LONG_POLL,
    )
    client = Client.at(f"http://127.0.0.1:{port}")
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()
