"""Other SQL dialects' spellings that sqlglot reads as one of the language's operators or
functions: Postgres has none of them, so neither does pysync.

Postgres is the oracle: each clause is PREPAREd on the test database (the server never
does this) and must fail there, and compile_where must refuse it with a WhereError
(a 400), in Postgres' words for operators.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pysync.postgres.catalog import Table, load_table
from pysync.where import WhereError, compile_where

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def db(database_url: str) -> Iterator[tuple[Table, Conn]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t (id int4 PRIMARY KEY, done bool, s text, d date, tm time, "
            "ai int4[], at text[])"
        )
        t = load_table(conn, "public", "t")
        assert t is not None
        yield t, conn


def postgres_error(conn: Conn, clause: str) -> str | None:
    try:
        conn.execute(f"PREPARE p AS SELECT 1 FROM t WHERE {clause}")
    except psycopg.Error as e:
        return e.diag.message_primary
    conn.execute("DEALLOCATE p")
    return None


def refused(db: tuple[Table, Conn], clause: str, postgres_says: str) -> tuple[WhereError, str]:
    """pysync's error for a clause Postgres refuses (with a message starting with
    ``postgres_says``), and Postgres' message."""
    table, conn = db
    expected = postgres_error(conn, clause)
    assert expected is not None and expected.startswith(postgres_says), expected
    with pytest.raises(WhereError) as info:
        compile_where(clause, table)
    return info.value, expected


# Prefix operators: Postgres' message, at the operator's position (binary ones such as
# == and <=> are in test_where_errors.py).
OPERATORS = [
    ("!done", 0),
    ("! done", 0),
    ("!!done", 0),
    ("id = 1 AND NOT !done", 15),
    ("id = 1 AND ! (id = 2)", 11),
]


@pytest.mark.parametrize(("clause", "location"), OPERATORS)
def test_operators_postgres_lacks(db: tuple[Table, Conn], clause: str, location: int) -> None:
    error, expected = refused(db, clause, "operator does not exist")
    assert error.reason == expected
    assert error.location == location


# Functions sqlglot maps to one of the language's (or crashed on): Electric's message for
# a function it does not know, under the name the clause spells.
FUNCTIONS = [
    ("ifnull(id, 1) = 1", "ifnull/2"),
    ("nvl(id, 1) = 1", "nvl/2"),
    ("lcase(s) = 'a'", "lcase/1"),
    ("ucase(s) = 'a'", "ucase/1"),
    ("\"LOWER\"(s) = 'a'", "LOWER/1"),
    ("\"coalesce\"(s, 'a') = 'a'", "coalesce/2"),
    ("array_concat(ai, ai) = ai", "array_concat/2"),
    ("array_contains_all(ai, ai)", "array_contains_all/2"),
    ("array_has_all(ai, ai)", "array_has_all/2"),
    ("array_contained_by(ai, ai)", "array_contained_by/2"),
    ("array_overlaps(ai, ai)", "array_overlaps/2"),
    ("date_to_date_str(d) = 'a'", "date_to_date_str/1"),
    ("time_to_time_str(tm) = 'a'", "time_to_time_str/1"),
    ("flatten(ai) = ai", "flatten/1"),
    ("id = 1 AND ifnull(id, (1 + 2)) = 1", "ifnull/2"),
]


@pytest.mark.parametrize(("clause", "call"), FUNCTIONS)
def test_functions_postgres_lacks(db: tuple[Table, Conn], clause: str, call: str) -> None:
    error, _ = refused(db, clause, "function")
    assert error.reason == f"unknown or unsupported function {call}"
    name = call.split("/")[0]
    quoted = f'"{name}"'
    assert error.location == clause.index(quoted if quoted in clause else name)


def test_variadic_is_refused_not_a_crash(db: tuple[Table, Conn]) -> None:
    """``VARIADIC`` used to reach a helper of the checker by its name (a TypeError, a 500)."""
    table, _ = db
    with pytest.raises(WhereError, match="Variadic is not supported"):
        compile_where("concat(VARIADIC at) = 'a'", table)


# The same functions and operators under the names Postgres has are served as before.
ACCEPTED = [
    "LOWER(s) = 'a'",
    "\"lower\"(s) = 'a'",
    "Upper(s) = 'A'",
    "COALESCE(id, 1) = 1",
    "array_cat(ai, ai) = ai",
    "ai @> ai",
    "pow(id, 2) = 4 AND power(id, 2) = 4",
    "abs(id) = 1 AND @ id = 1",
    "NOT done",
    "id != 1",
    "uuid('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11') IS NOT NULL",
]


@pytest.mark.parametrize("clause", ACCEPTED)
def test_postgres_spellings_still_served(db: tuple[Table, Conn], clause: str) -> None:
    table, conn = db
    assert postgres_error(conn, clause) is None
    compile_where(clause, table)
