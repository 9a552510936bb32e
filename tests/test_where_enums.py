"""Enums ordered as Postgres orders them (``pg_enum.enumsortorder``, not the label's text),
arrays of enums, and coalesce/greatest/least of enums, arrays and booleans: every clause
evaluated by pysync and by Postgres on the same rows (NULLs, labels added BEFORE an
existing one, empty arrays, arrays with NULL elements), with the same answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pysync.postgres.catalog import Table, load_table

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        # 'meh' and 'blah' added BEFORE existing labels: their order is not their OIDs'
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'")
        conn.execute("ALTER TYPE mood ADD VALUE 'blah' BEFORE 'sad'")
        conn.execute("CREATE DOMAIN dmood AS mood")
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TYPE other.\"Mood\" AS ENUM ('z', 'a')")
        conn.execute(
            'CREATE TABLE t (id int PRIMARY KEY, m mood, m2 mood, dm dmood, o other."Mood", '
            "ms mood[], ms2 mood[], b bool, b2 bool, ai int4[], ai2 int4[], s text)"
        )
        yield conn


def table(conn: Conn) -> Table:
    found = load_table(conn, "public", "t")
    assert found is not None
    return found


def test_catalog_loads_enum_order(conn: Conn) -> None:
    columns = {c.name: c for c in table(conn).columns}
    labels = ("blah", "sad", "meh", "ok", "happy")
    for name in ("m", "dm", "ms"):
        assert columns[name].enum_labels == labels
        assert columns[name].enum_type == "public.mood"
    assert columns["o"].enum_type == 'other."Mood"'
    assert columns["o"].enum_labels == ("z", "a")
    assert columns["b"].enum_labels == ()
    assert columns["b"].enum_type == ""
