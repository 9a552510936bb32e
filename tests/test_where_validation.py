"""WHERE clause rejections, normalisation, SQL rendering and equality routing."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pysync.postgres.catalog import Table, load_table
from pysync.where import WhereError, WhereRuntimeError, compile_where


@pytest.fixture
def table(database_url: str) -> Iterator[tuple[Table, psycopg.Connection[tuple[object, ...]]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        conn.execute(
            "CREATE TABLE items (id int4 PRIMARY KEY, user_id int8, title text, price numeric, "
            "score float8, done bool, tags text[], nums int4[], m mood, created timestamptz, "
            '"MixedCase" int4, doc jsonb, code bpchar)'
        )
        t = load_table(conn, "public", "items")
        assert t is not None
        yield t, conn


REJECTIONS = [
    ("id = 1; DROP TABLE items", 'unescaped ";" causing statement split'),
    ("1=1; DROP TABLE items", 'unescaped ";"'),
    ("id = '1", "unterminated quoted string"),
    ("id = 1) OR (1=1", "syntax error"),
    ("id = 1 ORDER BY id", "malformed query ending with SQL clauses"),
    ("", "syntax error"),
    ("foo = 1", "unknown reference foo"),
    ("mixedcase = 1", "unknown reference mixedcase"),
    ("items.id = 1", "qualified column references"),
    ("id = 'abc'", "invalid syntax for type int4: abc"),
    ("id = $1", "parameter $1 was not provided"),
    ("id + 1", "WHERE clause must return a boolean"),
    ("title", "WHERE clause must return a boolean"),
    ("m = 'glad'", 'invalid input value for enum mood: "glad"'),
    ("m < title", "Could not select an operator overload"),
    ("m = ANY('{sad,glad}')", 'invalid input value for enum mood: "glad"'),
    ("now() > created", "CurrentTimestamp is not supported"),
    ("CASE WHEN done THEN true END", "CaseExpr is not supported"),
    ("NULLIF(id, 1) = 1", "NullIfExpr is not supported"),
    ("title ~ 'a'", "unknown binary operator ~"),
    ("title ~* 'a'", "unknown binary operator ~*"),
    ("title SIMILAR TO 'a'", "SIMILAR TO"),
    ("count(*) > 1", "aggregation is not supported"),
    # Subqueries are served now (compiled with their tables, see test_subquery_where);
    # a subquery's SELECT list must name columns, as Electric's message says.
    ("id IN (SELECT 1)", "Expected a plain column reference"),
    ("EXISTS (SELECT 1)", "Expected a plain column reference"),
    ("EXISTS (SELECT id FROM items)", "only `value IN (SELECT ...)` sublinks are supported"),
    ("id IN (SELECT id FROM items)", "Subqueries are not allowed in subsets"),
    ("doc->>'a' = 'b'", "JSONExtractScalar is not supported"),
    ("doc IS NULL", "unsupported type jsonb"),
    ("id % 2 = 0", "unknown binary operator %"),
    ("lower(id) = 'a'", "Could not select a function overload for lower(int4)"),
    ("md5(title) = 'x'", "unknown or unsupported function md5/1"),
    ("like(title, 'a%')", "like()/ilike() function forms are not supported"),
    ("id::jsonb IS NULL", "unsupported type jsonb"),
    ("title::varchar(3) = 'a'", "type modifiers are not supported"),
    ("done IS TRUE AND id IS TRUE", "argument of IS TRUE must be bool, not int4"),
    ("id = ANY(id)", "argument of ANY must be an array"),
    ("nums @> ARRAY[1::int8]", "Could not select an operator overload"),
    ("nums[1:2] = '{1}'", "array slices are not supported"),
    ("(id, user_id) = (1, 2)", "row expressions are not supported"),
    ("id = B'101'", "BitString is not supported"),
    ("id = $1 AND user_id = $1::int4 AND title = $1", "type conflict for $1"),
    ("'1' + '2' = 3", "operator is not unique"),
]


@pytest.mark.parametrize(("clause", "fragment"), REJECTIONS)
def test_rejections(
    table: tuple[Table, psycopg.Connection[tuple[object, ...]]], clause: str, fragment: str
) -> None:
    t, conn = table
    params = {1: "5"} if "$1" in clause and "not provided" not in fragment else None
    with pytest.raises(WhereError) as info:
        compile_where(clause, t, params)
    assert fragment in info.value.message, info.value.message
    assert isinstance(info.value, ValueError)
    # nothing reached Postgres: the table is intact
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)


def test_error_locations(table: tuple[Table, psycopg.Connection[tuple[object, ...]]]) -> None:
    t, _ = table
    cases = {
        "id = 1 AND foo = 2": ("At location 11: unknown reference foo"),
        "id = 'abc'": "At location 5: invalid syntax for type int4: abc",
        "x = 1; DROP TABLE t": 'unescaped ";" causing statement split',
        "id + 1": "WHERE clause must return a boolean",
    }
    for clause, message in cases.items():
        with pytest.raises(WhereError) as info:
            compile_where(clause, t)
        assert info.value.message == message


def test_comments_are_read_as_postgres_does(
    table: tuple[Table, psycopg.Connection[tuple[object, ...]]],
) -> None:
    """As in Electric (libpg_query reads them): comments are whitespace."""
    t, _ = table
    plain = compile_where("id = 1 AND title = 'a -- b'", t).normalized
    assert (
        compile_where("id = 1 /* the id */ AND title = 'a -- b' -- and a note", t).normalized
        == plain
    )
    assert compile_where("id = 1\n-- next line\nAND title = 'a -- b'", t).normalized == plain
    with pytest.raises(WhereError) as info:
        compile_where("/* x */ id = 1 AND foo = 2", t)
    assert info.value.message == "At location 19: unknown reference foo"


def test_params_without_spaces(table: tuple[Table, psycopg.Connection[tuple[object, ...]]]) -> None:
    """``$1,$2`` (as a client writes an IN list) once failed in sqlglot's tokenizer; error
    locations still count in the clause as written."""
    t, _ = table
    where = compile_where("id IN ($1,$2,$3)", t, {1: "1", 2: "2", 3: "3"})
    assert (
        where.normalized
        == compile_where("id IN ($1, $2, $3)", t, {1: "1", 2: "2", 3: "3"}).normalized
    )
    with pytest.raises(WhereError) as info:
        compile_where("id IN ($1,$2) AND foo = 2", t, {1: "1", 2: "2"})
    assert info.value.message == "At location 18: unknown reference foo"


def test_identifiers_and_normalisation(
    table: tuple[Table, psycopg.Connection[tuple[object, ...]]],
) -> None:
    t, _ = table
    a = compile_where('ID = 5 and "MixedCase" = 1', t)
    b = compile_where('  id=5   AND   "MixedCase"=1 ', t)
    assert a.normalized == b.normalized
    assert a.columns == frozenset({"id", "MixedCase"})
    c = compile_where("user_id = $1", t, {1: "5"})
    assert c.normalized == compile_where("user_id = 5", t).normalized
    assert c.normalized == "(\"user_id\" = '5'::int8)"


def test_to_sql_quotes_and_escapes(
    table: tuple[Table, psycopg.Connection[tuple[object, ...]]],
) -> None:
    t, conn = table
    conn.execute(
        "INSERT INTO items (id, title, \"MixedCase\") VALUES (1, '100%', 1), (2, 'it''s', 2)"
    )
    for clause, expected in [
        ("title LIKE '%\\%'", [1]),
        ("title = 'it''s'", [2]),
        ('"MixedCase" = 2', [2]),
        ("title = $1", [2]),
    ]:
        where = compile_where(clause, t, {1: "it's"})
        sql, params = where.to_sql()
        assert "'" not in sql  # every literal is a parameter
        rows = conn.execute(f"SELECT id FROM items WHERE {sql} ORDER BY id", params).fetchall()
        assert [r[0] for r in rows] == expected, (clause, sql, params)


def test_evaluator_basics(table: tuple[Table, psycopg.Connection[tuple[object, ...]]]) -> None:
    t, _ = table
    names = [c.name for c in t.columns]

    def row(**values: str | None) -> list[str | None]:
        return [values.get(n) for n in names]

    ev = compile_where("user_id = 5 AND title ILIKE '%x%'", t).bind(names)
    assert ev(row(user_id="5", title="aXb")) is True
    assert ev(row(user_id="6", title="aXb")) is False
    assert ev(row(user_id=None, title="aXb")) is None
    assert ev(row(user_id=None, title="nope")) is False
    ev = compile_where("id / 0 = 1", t).bind(names)
    with pytest.raises(WhereRuntimeError):
        ev(row(id="1"))
    assert ev(row(id=None)) is None


def test_equality_index(table: tuple[Table, psycopg.Connection[tuple[object, ...]]]) -> None:
    t, _ = table
    names = [c.name for c in t.columns]

    def row(**values: str | None) -> list[str | None]:
        return [values.get(n) for n in names]

    idx = compile_where("user_id = 5", t).equality_index()
    assert idx is not None
    col, keys, key_fn = idx
    assert col == "user_id" and key_fn("5") in keys and key_fn("6") not in keys

    idx = compile_where("price IN (1.5, 2) AND title = 'x'", t).equality_index()
    assert idx is not None
    col, keys, key_fn = idx
    assert col == "price"
    assert key_fn("1.50") in keys and key_fn("2.000") in keys and key_fn("1.51") not in keys

    idx = compile_where("score = 'NaN'", t).equality_index()
    assert idx is not None and idx[2]("NaN") in idx[1]

    idx = compile_where("id = 5.0", t).equality_index()  # int4 column compared as numeric
    assert idx is not None and idx[0] == "id" and idx[2]("5") in idx[1]

    idx = compile_where("code = 'ab'", t).equality_index()
    assert idx is not None and idx[2]("ab   ") in idx[1]

    for clause in (
        "id = 1 OR id = 2",
        "id > 5",
        "id = NULL",
        "id = user_id",
        "NOT (id = 1)",
        "id::text = '1'",
    ):
        assert compile_where(clause, t).equality_index() is None, clause

    # the evaluator agrees: a row whose key is not in keys never evaluates to True
    where = compile_where("price IN (1.5, 2) AND done", t)
    col, keys, key_fn = where.equality_index() or ("", frozenset(), str)
    ev = where.bind(names)
    for price in ("1.5", "1.50", "2", "2.0", "3", "-1.5", "NaN", None):
        for done in ("t", "f", None):
            result = ev(row(price=price, done=done))
            if price is None or key_fn(price) not in keys:
                assert result is not True
