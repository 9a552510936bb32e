"""Test fixtures: one private Postgres (wal_level=logical) for the session, a fresh
database per test. The cluster is the same code ``pysync serve`` uses."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest

from pysync.postgres.cluster import PostgresCluster, temporary_cluster

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    with temporary_cluster() as cluster:
        yield cluster


@pytest.fixture
def database_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A new, empty database; dropped (with its replication slots) after the test."""
    name = f"test_{next(_db_counter)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    drop_database(pg_cluster, name)


def drop_database(cluster: PostgresCluster, name: str) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE database = %s AND active_pid IS NOT NULL",
            (name,),
        )
        for _ in range(50):
            slots = admin.execute(
                "SELECT slot_name, active FROM pg_replication_slots WHERE database = %s", (name,)
            ).fetchall()
            if not any(active for _, active in slots):
                break
            import time

            time.sleep(0.1)
        for (slot,) in admin.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall():
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
