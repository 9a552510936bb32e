"""Shape definitions validated against a real catalog: errors name the field."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from pysync.postgres.cluster import PostgresCluster
from pysync.shapes.definition import ShapeDefinition, ShapeError, validate
from pysync.testing import drop_database

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="module")
def conn(pg_cluster: PostgresCluster) -> Iterator[Conn]:
    """One database for the module: these tests only read the catalog."""
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute('CREATE DATABASE "test_definition"')
    try:
        with psycopg.connect(pg_cluster.url("test_definition"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int, title text)")
            conn.execute("CREATE TABLE nopk (a int, b text)")
            yield conn
    finally:
        drop_database(pg_cluster, "test_definition")


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"table": "missing"}, "table", 'Table "public"."missing" does not exist'),
        ({"table": "t", "columns": ["id", "nope"]}, "columns", "not found on the table: nope"),
        (
            {"table": "t", "columns": ["v", "title"]},
            "columns",
            "must include all primary key columns, missing: id",
        ),
        (
            {"table": "nopk", "columns": ["a"]},
            "columns",
            "must include all primary key columns, missing: b",
        ),
        # Electric checks the key columns first, so an empty list reports them missing.
        (
            {"table": "t", "columns": []},
            "columns",
            "must include all primary key columns, missing: id",
        ),
        ({"table": "t", "columns": ["title"]}, "columns", "missing: id"),  # before "nope" below
        ({"table": "t", "columns": ["title", "nope"]}, "columns", "missing: id"),
        ({"table": "t", "where": "v >"}, "where", ""),
        ({"table": "t", "where": "nope = 1"}, "where", "nope"),
        ({"table": "t", "where": "v = $1"}, "where", ""),
        ({"table": "t", "where": "v = $1 AND title = $2", "params": ["1"]}, "where", ""),
    ],
)
def test_validation_errors(conn: Conn, kwargs: dict[str, object], field: str, message: str) -> None:
    table = str(kwargs.pop("table"))
    definition = ShapeDefinition.create(table, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ShapeError) as info:
        validate(conn, definition)
    assert info.value.field == field
    assert message in info.value.message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"1": "a", "3": "b"}, "Parameters must be numbered sequentially, starting from 1"),
        ({"0": "a"}, "Parameters must be numbered sequentially, starting from 1"),
        ({"x": "a"}, "Parameters can only use numbers as keys"),
        ("ab", "is invalid"),
        ([None], "a parameter cannot be None: write IS NULL in the clause"),
    ],
)
def test_params_errors(params: object, message: str) -> None:
    with pytest.raises(ShapeError) as info:
        ShapeDefinition.create("t", where="v = $1", params=params)  # type: ignore[arg-type]
    assert (info.value.field, info.value.message) == ("params", message)


def test_python_values_as_params_are_written_as_postgres_reads_them(conn: Conn) -> None:
    """An app passes Python values; the params are Postgres input text, and the shape
    selects what the same values bound by psycopg select."""
    values = [
        datetime.date(2024, 1, 5),
        datetime.datetime(2024, 1, 5, 10, 30),
        Decimal("1.50"),
        True,
        ["a", 'q"t'],
        b"\x00\xff",
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ]
    definition = ShapeDefinition.create("t", where="v = $1", params=values)
    assert definition.params == (
        "2024-01-05",
        "2024-01-05 10:30:00",
        "1.50",
        "true",
        '{"a","q\\"t"}',
        "\\x00ff",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    )
    # Postgres reads each text as the typed value psycopg binds.
    types = ["date", "timestamp", "numeric", "bool", "text[]", "bytea", "uuid"]
    for text, value, type_ in zip(definition.params, values, types, strict=True):
        row = conn.execute(f"SELECT %s::{type_} = %s::{type_}", (text, value)).fetchone()
        assert row == (True,), (text, value)


def test_mode_errors() -> None:
    with pytest.raises(ShapeError) as info:
        ShapeDefinition.create("t", replica="partial")
    assert info.value.field == "replica"
    with pytest.raises(ShapeError) as info:
        ShapeDefinition.create("t", log_mode="some")
    assert info.value.field == "log"


def test_equal_definitions_share_a_key(conn: Conn) -> None:
    key = validate(conn, ShapeDefinition.create("t", where="v = $1", params=["1"])).key
    assert (
        validate(conn, ShapeDefinition.create("public.t", where="v = $1", params={1: 1})).key == key
    )
    assert validate(conn, ShapeDefinition.create("t", where="v = $1", params=["2"])).key != key
    cols = validate(conn, ShapeDefinition.create("t", columns=["title", "id"]))
    assert cols.columns == ("id", "title")  # table order
    assert validate(conn, ShapeDefinition.create("t", columns=["id", "title"])).key == cols.key
    assert (
        validate(conn, ShapeDefinition.create("t", replica="full")).key
        != validate(conn, ShapeDefinition.create("t")).key
    )
    assert validate(conn, ShapeDefinition.create("nopk")).pk == ("a", "b")
