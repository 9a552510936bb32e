"""Arrays whose lower bounds are not 1 (``'[0:2]={1,2,3}'``): Postgres keeps the bounds,
prints them, counts subscripts from them and compares them (array_eq, array_cmp). Every
clause is evaluated by pysync and by Postgres on the same rows, and by the snapshot SQL
pysync writes; a shape reading such a column follows its changes instead of failing on
them (it was invalidated and refetched on each before)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engine_runner import make, materialise, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.postgres.catalog import Table, load_table
from pysync.postgres.types.arrays import Bounded, parse_array
from pysync.where import WhereError, compile_where
from where_support import assert_same_answers

Conn = psycopg.Connection[tuple[Any, ...]]

ARRAYS = [
    None,
    "{}",
    "{1,2,3}",
    "[0:2]={1,2,3}",
    "[-3:-1]={1,2,3}",
    "[2:3]={1,NULL}",
    "{1,NULL}",
    "[5:5]={7}",
    "{{1,2},{3,4}}",
    "[0:1][1:2]={{1,2},{3,4}}",
    "[1:2][0:1]={{1,2},{3,4}}",
    "[0:1][0:1]={{1,2},{3,4}}",
    "[0:0]={9}",
]
TEXTS = [None, '[0:1]={a,"b c"}', '{a,"b c"}', "[2:2]={NULL}", '[3:4]={"{x}",""}']


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, a int4[], b int4[], s text[])")
        yield conn


def table(conn: Conn) -> Table:
    found = load_table(conn, "public", "t")
    assert found is not None
    return found


@pytest.fixture
def rows(conn: Conn) -> tuple[Table, list[list[str | None]]]:
    n = len(ARRAYS)
    values = [
        (i, ARRAYS[i % n], ARRAYS[(i * 5 + i // n) % n], TEXTS[i % len(TEXTS)])
        for i in range(n * n)
    ]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s)", values)
    # every value in its text output, as pgoutput sends it
    sql = "SELECT id::text, a::text, b::text, s::text FROM t ORDER BY t.id"
    texts = [list(r) for r in conn.execute(sql).fetchall()]
    return table(conn), texts


CLAUSES = [
    # equality and order read the bounds: '[0:2]={1,2,3}' <> '{1,2,3}'
    "a = b",
    "a <> b",
    "a < b",
    "a >= b",
    "a IS DISTINCT FROM b",
    "a = '[0:2]={1,2,3}'",
    "a = '{1,2,3}'",
    "a = '[0:1][1:2]={{1,2},{3,4}}'",
    "a > '[0:2]={1,2,3}'",
    "a IN ('[5:5]={7}', '[0:0]={9}')",
    "a = $1",
    "greatest(a, b) = a",
    "least(a, b, '[0:2]={1,2,3}') = '[0:2]={1,2,3}'",
    # subscripts count from the lower bound
    "a[0] = 1",
    "a[1] = 1",
    "a[2] = 3",
    "a[-3] = 1",
    "a[5] = 7",
    "a[3] IS NULL",
    "a[0][1] = 1",
    "a[1][0] = 3",
    "a[1][2] = 4",
    "s[0] = 'a'",
    "s[1] = 'b c'",
    "s[3] = '{x}'",
    "s[4] = ''",
    "s[2] IS NULL",
    # containment, overlap and ANY do not read the bounds
    "a @> b",
    "a <@ '{1,2,3,7}'",
    "a && b",
    "3 = ANY(a)",
    "2 > ALL(a)",
    "array_ndims(a) = 2",
    # casts keep the bounds
    "a::int8[] = '[0:2]={1,2,3}'",
    "a::int8[] = '{1,2,3}'",
    # building arrays keeps (or checks) the bounds as Postgres does
    "(a || 5) = '[0:3]={1,2,3,5}'",
    "(5 || a) = '[-3:0]={5,1,2,3}'",
    "(5 || a)[-3] = 5",
    "(array_append(a, 0))[3] = 0",
    "(array_prepend(0, a))[0] = 0",
    "(array_prepend(0, a))[-1] = 0",
    "(a || b) = '[0:5]={1,2,3,1,2,3}'",
    "(a || b)[1] = 2",
    "(a || b)[0][1] = 1",
    "(a || '{5,6}') = '[0:2][1:2]={{1,2},{3,4},{5,6}}'",
    "('{5,6}' || a)[0][1] = 5",
    "(b || ARRAY[0, 0])[0][0] = 0",
    "(ARRAY[0, 0] || b)[1][0] = 0",
    "(coalesce(a, '[7:7]={1}'))[7] = 1",
]
PARAMS = {1: "[0:2]={1,2,3}"}


@pytest.mark.parametrize("clause", CLAUSES)
def test_same_answers_as_postgres(
    conn: Conn, rows: tuple[Table, list[list[str | None]]], clause: str
) -> None:
    assert_same_answers(conn, *rows, clause, PARAMS)


@pytest.mark.parametrize(
    "literal",
    [
        "[0:2]={1,2}",  # the bounds say three elements
        "[2:1]={1}",  # upper below lower
        "[0:1]={{1},{2}}",  # one dimension given, two in the contents
        "[0:1]{1,2}",  # no '='
        "[a:1]={1}",
        "[0:1]=",
    ],
)
def test_bounds_that_do_not_fit_are_refused(conn: Conn, literal: str) -> None:
    """A literal whose bounds do not match its contents is Postgres' error and a 400."""
    with pytest.raises(psycopg.Error):
        conn.execute("SELECT %s::int4[]", [literal])
    conn.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, a int4[])")
    with pytest.raises(WhereError):
        compile_where(f"a = '{literal}'", table(conn))


def test_parsed_bounds() -> None:
    parse = parse_array(int)
    value = parse("[0:2]={1,2,3}")
    assert isinstance(value, Bounded) and value == [1, 2, 3] and value.lower == (0,)
    assert parse("[1:3]={1,2,3}") == [1, 2, 3] and type(parse("[1:3]={1,2,3}")) is list
    assert parse("[3]={1,2,3}") == [1, 2, 3]
    nested = parse("[1:2][-1:0]={{1,2},{3,4}}")
    assert isinstance(nested, Bounded) and nested.lower == (1, -1)


async def test_a_shape_follows_rows_with_bounds(engine: Engine, conn: Conn) -> None:
    """Shapes reading a column whose arrays have other lower bounds follow its inserts,
    updates and deletes, as ``SELECT`` answers them; none is invalidated."""
    conn.execute(
        "INSERT INTO t VALUES (1, '[0:2]={1,2,3}', NULL, '{a}'), (2, '{1,2,3}', NULL, NULL)"
    )
    columns = ["id", "a", "b", "s"]
    clauses = ["a[0] = 1", "a = '[0:2]={1,2,3}'", "a < '{1,2,3}'", "s[0] = 'x'"]
    shapes = [await make(engine, "t", where=clause) for clause in clauses]
    conn.execute("INSERT INTO t VALUES (3, '[0:1]={1,5}', '[2:2]={1}', '[0:0]={x}')")
    conn.execute("INSERT INTO t VALUES (4, '[-1:1]={1,2,3}', '{4}', '{x}')")
    conn.execute("UPDATE t SET a = '[0:2]={1,2,3}' WHERE id = 2")
    conn.execute("UPDATE t SET a = '{1,2,3}' WHERE id = 1")
    conn.execute("UPDATE t SET s = '[0:0]={x}' WHERE id = 4")
    conn.execute("DELETE FROM t WHERE id = 3")
    await quiesce(engine, conn)
    for shape, clause in zip(shapes, clauses, strict=True):
        assert not shape.gone, shape.reason
        expected = table_state(conn, "public", "t", columns, ["id"], clause)
        assert materialise(read_all(shape.log)) == expected, clause
        assert expected, clause
