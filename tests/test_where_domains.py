"""Columns of domain types in WHERE clauses: Postgres (and Electric) compare them as their
base type (issue 18); the evaluator must give Postgres' answer on every row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pysync.postgres.catalog import Table, load_table
from pysync.where import WhereError, WhereRuntimeError, compile_where

Conn = psycopg.Connection[tuple[Any, ...]]

ROWS = [
    (1, 5, "x", "a", "2024-01-01", "happy", "ab"),
    (2, 6, "X", "b", "infinity", "sad", "ab  "),
    (3, 2147483647, "", "é", "1999-12-31", "ok", ""),
    (4, None, None, None, None, None, None),
    (5, 1, "İ", "x", "2000-01-01", "sad", "x"),
]
CLAUSES = [
    "dom > 5",
    "dom = 5",
    "dom + 1 > 6",
    "dom * 2 > 0",
    "dom2 BETWEEN 2 AND 6",
    "domt = 'x'",
    "domt <> 'x' AND domt IS NOT NULL",
    "domt ILIKE 'x'",
    "lower(domt) = 'i'",
    "domt || 'y' = 'xy'",
    "domt < 'b'",
    "domv = 'a'",
    "domv = domt",
    "domd > '2000-01-01'",
    "domd = 'infinity'",
    "domd < now_ts",
    "mood_dom::text = 'ok'",
    "greatest(mood_dom, 'ok') = 'ok'::mood",
    "coalesce(mood_dom, 'ok') > 'sad'",
    "domc = 'ab'",
    "domc || 'z' = 'abz'",
    "dom IN (5, 6)",
    "dom IS NULL",
]


# Postgres has no operator for a domain over an enum (anyenum does not take it): pysync
# refuses what it refuses, with its message.
REFUSED = [
    ("mood_dom = 'sad'::mood", "operator does not exist: mdom = mood"),
    ("mood_dom < 'ok'", "operator does not exist: mdom < unknown"),
    ("mood_dom IN ('sad', 'ok')", "operator does not exist: mdom = mood"),
    ("mood_dom = ANY('{sad}')", "operator does not exist: mdom = unknown"),
]


@pytest.mark.parametrize(("clause", "message"), REFUSED)
def test_enum_domains_are_not_compared(db: tuple[Conn, Table], clause: str, message: str) -> None:
    conn, table = db
    with pytest.raises(psycopg.errors.UndefinedFunction, match=message):
        conn.execute(f"SELECT {clause} FROM x")
    with pytest.raises(WhereError, match=message):
        compile_where(clause, table)


@pytest.fixture
def db(database_url: str) -> Iterator[tuple[Conn, Table]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);"
            "CREATE DOMAIN posint2 AS posint;"
            "CREATE DOMAIN tdom AS text;"
            "CREATE DOMAIN vdom AS varchar(10);"
            "CREATE DOMAIN ddom AS date;"
            "CREATE DOMAIN cdom AS char(4);"
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
            "CREATE DOMAIN mdom AS mood;"
            "CREATE TABLE x (id int4 PRIMARY KEY, dom posint, domt tdom, domv vdom, "
            "domd ddom, mood_dom mdom, domc cdom, dom2 posint2 GENERATED ALWAYS AS (dom) STORED, "
            "now_ts timestamp DEFAULT '2024-06-01')"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO x (id, dom, domt, domv, domd, mood_dom, domc) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                ROWS,
            )
        table = load_table(conn, "public", "x")
        assert table is not None
        yield conn, table


@pytest.mark.parametrize("clause", CLAUSES)
def test_domain_columns_compare_as_their_base_type(db: tuple[Conn, Table], clause: str) -> None:
    conn, table = db
    names = [c.name for c in table.columns]
    ev = compile_where(clause, table).bind(names)
    # every value in its text output, as pgoutput sends it
    columns = ", ".join(f"{n}::text" for n in names)
    for row in conn.execute(f"SELECT {columns} FROM x ORDER BY id").fetchall():
        texts = list(row)
        try:
            ours: object = ev(texts)
        except WhereRuntimeError:
            ours = "error"
        sql = f"SELECT ({clause.replace('%', '%%')})::bool FROM x WHERE id = %s"
        try:
            one = conn.execute(sql, (int(row[0]),)).fetchone()
            assert one is not None
            theirs = one[0]
        except psycopg.errors.NumericValueOutOfRange:
            theirs = "error"
        assert ours == theirs, (clause, row)
