"""WHERE errors in Electric's exact words and positions.

Electric parses ``SELECT 1 WHERE <clause>`` with libpg_query and answers
``At location <cursorpos - 1>: <Postgres' message>`` (its NIF makes the cursor zero-based;
the position is in the wrapped statement). Here Postgres itself is the oracle: the same
wrapped statement is PREPAREd on the test database (the server never does this), and its
error's message and position must be what compile_where reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pysync.postgres.catalog import Table, load_table
from pysync.where import WhereError, compile_where

Conn = psycopg.Connection[tuple[Any, ...]]

SYNTAX_ERRORS = [
    "1 x 1",
    "x x",
    "id = '1",
    'id = "abc',
    "id = $$abc",
    "id =",
    "",
    "   ",
    "id = 1) OR (1=1",
    "(id = 1",
    "id IN ()",
    "id = = 1",
    "id = 1e",
    "id = 0x",
    "id = 1 AND",
    "NOT",
    "title LIKE",
    "id BETWEEN 1",
    "CASE WHEN true",
    "'abc' 'def'",
    "id = $99999999999",
    "title = 'ü' AND x x",
    "id = 1\nAND x x",
    "id = 1 -- a comment\nAND",
    "title = E'a\\000b'",
    ";",
    "id = 1; SELECT (",
]


@pytest.fixture
def db(database_url: str) -> Iterator[tuple[Table, Conn]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, title text, price numeric)")
        t = load_table(conn, "public", "items")
        assert t is not None
        yield t, conn


def postgres_says(conn: Conn, clause: str) -> str:
    """Electric's message for a clause Postgres' parser rejects, from Postgres itself."""
    prepare = "PREPARE p AS "
    with pytest.raises(psycopg.Error) as info:
        conn.execute(prepare + "SELECT 1 WHERE " + clause)
    diag = info.value.diag
    assert info.value.sqlstate in ("42601", "22021", "54001"), (clause, info.value.sqlstate)
    position = diag.statement_position
    # cursorpos - 1 in the wrapped statement; Postgres reports no position as 0
    location = int(position) - 1 - len(prepare) if position is not None else -1
    return f"At location {location}: {diag.message_primary}"


@pytest.mark.parametrize("clause", SYNTAX_ERRORS, ids=lambda c: repr(c[:40]))
def test_syntax_errors_are_postgres_own(db: tuple[Table, Conn], clause: str) -> None:
    t, conn = db
    expected = postgres_says(conn, clause)
    with pytest.raises(WhereError) as info:
        compile_where(clause, t)
    assert info.value.message == expected


def test_electric_documented_example(db: tuple[Table, Conn]) -> None:
    # Electric's own integration test (typescript-client: integration.test.ts)
    t, _ = db
    with pytest.raises(WhereError) as info:
        compile_where("1 x 1", t)
    assert info.value.message == 'At location 17: syntax error at or near "x"'


STRUCTURE = [
    # parser.ex get_where_internal_ast / extract_clause: no location for these two
    ("id = 1; DROP TABLE items", 'unescaped ";" causing statement split'),
    ("id = 1; SELECT 1", 'unescaped ";" causing statement split'),
    ("id = 1; SELECT", 'unescaped ";" causing statement split'),
    ("id = 1 ORDER BY id", "malformed query ending with SQL clauses"),
    ("id = 1 GROUP BY id", "malformed query ending with SQL clauses"),
    ("id = 1 LIMIT 1", "malformed query ending with SQL clauses"),
    ("id = 1 OFFSET 1", "malformed query ending with SQL clauses"),
    ("id = 1 HAVING true", "malformed query ending with SQL clauses"),
    ("id = 1 FOR UPDATE", "malformed query ending with SQL clauses"),
    ("id = 1 UNION SELECT 1", "malformed query ending with SQL clauses"),
    ("id = 1 WINDOW w AS ()", "malformed query ending with SQL clauses"),
    ("id = 1 FETCH FIRST 1 ROWS ONLY", "malformed query ending with SQL clauses"),
    # node_to_ast: FuncCall with aggregate syntax, at the call's location
    ("count(*) > 1", "At location 0: aggregation is not supported in this context"),
    (
        "id = 1 AND count(DISTINCT id) > 1",
        "At location 11: aggregation is not supported in this context",
    ),
    ("sum(id) OVER () > 1", "At location 0: aggregation is not supported in this context"),
    # a function without aggregate syntax is just unknown
    ("sum(id) > 1", "At location 0: unknown or unsupported function sum/1"),
    # ParamRef location is the "$"
    ("id = $1", "At location 5: parameter $1 was not provided"),
    # Postgres accepts it, sqlglot cannot read it
    ("id::bit varying(5) IS NULL", 'At location 15: unsupported syntax at or near "("'),
]


@pytest.mark.parametrize(("clause", "message"), STRUCTURE)
def test_structure_errors(db: tuple[Table, Conn], clause: str, message: str) -> None:
    t, _ = db
    with pytest.raises(WhereError) as info:
        compile_where(clause, t)
    assert info.value.message == message


def test_trailing_semicolon_is_one_statement(db: tuple[Table, Conn]) -> None:
    # libpg_query drops the empty statement after a final ";": Electric accepts the clause
    t, _ = db
    assert compile_where("id = 1;", t).normalized == compile_where("id = 1", t).normalized
    assert compile_where("id = 1 ;; ", t).normalized == compile_where("id = 1", t).normalized


def test_keywords_inside_expressions_are_not_clauses(db: tuple[Table, Conn]) -> None:
    t, _ = db
    assert compile_where("title IS DISTINCT FROM 'a'", t).columns == frozenset({"title"})
    for clause, message in [
        (
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY price) > 1",
            "At location 0: aggregation is not supported in this context",
        ),
    ]:
        with pytest.raises(WhereError) as info:
            compile_where(clause, t)
        assert info.value.message == message
    with pytest.raises(WhereError) as info:
        compile_where("(CASE WHEN true THEN true END) IS NOT NULL", t)
    assert info.value.reason == "CaseExpr is not supported in this context"


def test_parser_stack_exhaustion_is_postgres_error(db: tuple[Table, Conn]) -> None:
    # Postgres' parser gives up past 10,000 levels (its message; the position differs with
    # the PREPARE prefix, which takes parser stack too): a 400, long before any work
    t, _ = db
    with pytest.raises(WhereError) as info:
        compile_where("(" * 10_001 + "true" + ")" * 10_001, t)
    assert info.value.reason == 'memory exhausted at or near "("'


UNKNOWN_OPERATORS = [
    "id == 1",
    "title == 'x'",
    "(id = 1) == true",
    "id <=> 1 OR id > 2",
    "id ** 2 > 1",
    "title || 'a' == 'b'",
    "id = 1 AND price === 1.5",
]


@pytest.mark.parametrize("clause", UNKNOWN_OPERATORS)
def test_unknown_operators_are_postgres_errors(db: tuple[Table, Conn], clause: str) -> None:
    # sqlglot reads == as = and <=> as IS NOT DISTINCT FROM; Postgres has neither operator
    # and resolves operators after typing their arguments: its message, at its position
    t, conn = db
    with pytest.raises(psycopg.errors.UndefinedFunction) as pg_info:
        conn.execute("SELECT 1 FROM items WHERE " + clause)
    position = pg_info.value.diag.statement_position
    assert position is not None
    expected = f"At location {int(position) - 1 - len('SELECT 1 FROM items WHERE ')}: "
    expected += str(pg_info.value.diag.message_primary)
    with pytest.raises(WhereError) as info:
        compile_where(clause, t)
    assert info.value.message == expected
