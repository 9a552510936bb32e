"""Fixtures of the HTTP API tests: a real Engine on a fresh database holding the
``items`` and ``other`` tables, and the ShapeAPI app behind ``httpx.ASGITransport``
(in-process, no mocks). ``conn`` and ``engine`` here replace the suite-wide ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from http_support import SETUP_SQL, Client, Conn, EngineFactory, make_api
from pysync.engine import Engine
from pysync.http.api import ShapeAPI


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
async def client(api: ShapeAPI) -> AsyncIterator[Client]:
    client = Client(api)
    yield client
    await client.aclose()
