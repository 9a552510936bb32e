"""What the tests against a `pysync serve` subprocess share: the served URLs, a writer."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]


class Served(msgspec.Struct, frozen=True):
    url: str
    """The server's base URL."""
    database_url: str


def write(conn: Conn, *statements: str) -> int:
    """Run ``statements`` in one transaction; its 32-bit xid (as a writer returns it)."""
    with conn.transaction():
        row = conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()
        assert row is not None
        for statement in statements:
            conn.execute(statement)  # test-owned SQL
    return int(row[0])
