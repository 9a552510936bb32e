"""Test fixtures: one private Postgres (wal_level=logical) for the session, a fresh
database per test. The cluster is the same code ``pysync serve`` uses."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from pysync.engine import Engine
from pysync.postgres.cluster import PostgresCluster, temporary_cluster
from serve_process import kill_leftovers, running

_db_counter = itertools.count()


@pytest.fixture(autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    before = running()
    yield
    kill_leftovers(before)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    with temporary_cluster() as cluster:
        yield cluster


Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    """An autocommit connection to the test's database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    """A started engine on the test's database (in-memory logs)."""
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
def database_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A new, empty database; dropped (with its replication slots) after the test."""
    name = f"test_{next(_db_counter)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    drop_database(pg_cluster, name)


def drop_database(cluster: PostgresCluster, name: str) -> None:
    """Drop a test database and its slots. A walsender of a consumer that just closed
    its connection may still hold a slot for a moment: end it, then drop."""
    deadline = time.monotonic() + 30
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
