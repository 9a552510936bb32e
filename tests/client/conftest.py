"""Fixtures of the ``pysync.Client`` tests: a ``pysync serve`` subprocess on a database
of its own, shared by a test module, and connections to that database. Every test of
the served API runs against one process and against ``--workers 2`` (HTTP workers in
front of the replicating process), which must be one engine to a client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pysync.postgres.cluster import PostgresCluster, free_port
from pysync.testing import drop_database
from serve_process import ServeProcess
from serve_support import Conn, Served


@pytest.fixture(scope="module", params=["0", "2"], ids=["one-process", "workers"])
def served(
    request: pytest.FixtureRequest,
    pg_cluster: PostgresCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """A running ``pysync serve`` (2 s long-polls, shape deletion allowed, ``--workers``
    0 or 2) on a new database."""
    name = f"served_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = pg_cluster.url(name)
    storage: Path = tmp_path_factory.mktemp("storage")
    port = free_port()
    try:
        server = ServeProcess.on(
            database_url, port, storage, "--allow-delete", "--workers", request.param
        )
        try:
            yield Served(url=f"http://127.0.0.1:{port}", database_url=database_url)
        finally:
            server.stop()
    finally:
        drop_database(pg_cluster, name)


@pytest.fixture
def db(served: Served) -> Iterator[Conn]:
    """An autocommit connection to the served database."""
    with psycopg.connect(served.database_url, autocommit=True) as conn:
        yield conn
