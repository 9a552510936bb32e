"""Test databases on the suite's Postgres cluster."""

from __future__ import annotations

import time

import psycopg

from pysync.postgres.cluster import PostgresCluster


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
