"""Test fixtures: one private Postgres (wal_level=logical) for the session, a fresh
database per test. The cluster is the same code ``pysync serve`` uses."""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pysync.engine import Engine
from pysync.postgres.cluster import PostgresCluster, temporary_cluster
from pysync.testing import drop_database
from serve_process import kill_leftovers, running

_db_counter = itertools.count()


_POSTGRES_FIXTURES = {"pg_cluster", "small_wal_url"}
"""Fixtures that start a Postgres (the session's cluster, or one of their own)."""
_POSTGRES_DIRECTORIES = {"api", "client"}
"""Whose tests all get a server on Postgres from their conftest (chosen by name there)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The postgres marker, so that ``pytest -m "not postgres"`` runs the rest quickly: on
    # every test whose fixtures start a Postgres, and every test of tests/api and
    # tests/client; a test that starts one in its body says so (@pytest.mark.postgres).
    for item in items:
        uses = _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses or item.path.parent.name in _POSTGRES_DIRECTORIES:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    before = running()
    yield
    kill_leftovers(before)


_PYSYNC_LOGGER = logging.getLogger("pysync")
_PYSYNC_LOGGER_LEVEL = _PYSYNC_LOGGER.level


@pytest.fixture(autouse=True)
def _pysync_logger_as_it_was() -> None:
    """An app started in a test, or in a module's fixture, sets the ``pysync`` logger's
    level for the process (``app/logs.configure``: an app's logging is the app's). Each
    test starts with the level as it was, or a later test's
    ``caplog.set_level(logging.DEBUG)`` (the root's) saw no DEBUG record of pysync's, and
    its checks that a secret is not logged checked nothing."""
    _PYSYNC_LOGGER.setLevel(_PYSYNC_LOGGER_LEVEL)


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


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A TMPDIR for a ``pysync bench`` child process; short, as the private Postgres puts
    its Unix socket there (the bench must leave it empty)."""
    path = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
