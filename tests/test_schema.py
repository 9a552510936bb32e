from __future__ import annotations

import psycopg
import pytest

from pysync.postgres.catalog import Table, load_table
from pysync.shapes.schema import schema_header

# (column type, expected schema) — Electric's test/electric/schema_test.exs plus quirks.
TYPES: list[tuple[str, dict[str, object]]] = [
    ("SMALLINT", {"type": "int2"}),
    ("INTEGER", {"type": "int4"}),
    ("SERIAL", {"type": "int4", "not_null": True}),
    ("BIGINT", {"type": "int8"}),
    ("MONEY", {"type": "money"}),
    ("VARCHAR", {"type": "varchar"}),
    ("VARCHAR(123)", {"type": "varchar", "max_length": 123}),
    ("VARCHAR(123)[]", {"type": "varchar", "max_length": 123, "dims": 1}),
    ("VARCHAR(123)[][]", {"type": "varchar", "max_length": 123, "dims": 2}),
    ("CHARACTER VARYING(123)", {"type": "varchar", "max_length": 123}),
    ("CHAR", {"type": "bpchar", "length": 1}),
    ("CHARACTER[]", {"type": "bpchar", "dims": 1, "length": 1}),
    ("BPCHAR", {"type": "bpchar"}),
    ("BPCHAR[]", {"type": "bpchar", "dims": 1}),
    ("BPCHAR(9)", {"type": "bpchar", "length": 9}),
    ("BPCHAR(9)[]", {"type": "bpchar", "dims": 1, "length": 9}),
    ("TEXT", {"type": "text"}),
    ("TEXT[]", {"type": "text", "dims": 1}),
    ("BYTEA", {"type": "bytea"}),
    ("DATE", {"type": "date"}),
    ("TIME", {"type": "time"}),
    ("TIME(3)", {"type": "time", "precision": 3}),
    ("TIME(0)", {"type": "time", "type_mod": 0}),  # Electric quirk
    ("TIME WITH TIME ZONE", {"type": "timetz"}),
    ("TIME(3) WITH TIME ZONE", {"type": "timetz", "precision": 3}),
    ("TIMESTAMP", {"type": "timestamp"}),
    ("TIMESTAMP(3)", {"type": "timestamp", "precision": 3}),
    ("TIMESTAMP WITH TIME ZONE", {"type": "timestamptz"}),
    ("TIMESTAMP(6) WITH TIME ZONE[]", {"type": "timestamptz", "precision": 6, "dims": 1}),
    ("INTERVAL", {"type": "interval"}),
    ("INTERVAL YEAR", {"type": "interval", "fields": "YEAR"}),
    ("INTERVAL MONTH", {"type": "interval", "fields": "MONTH"}),
    ("INTERVAL DAY", {"type": "interval", "fields": "DAY"}),
    ("INTERVAL HOUR", {"type": "interval", "fields": "HOUR"}),
    ("INTERVAL MINUTE", {"type": "interval", "fields": "MINUTE"}),
    ("INTERVAL SECOND", {"type": "interval", "fields": "SECOND"}),
    ("INTERVAL YEAR TO MONTH", {"type": "interval", "fields": "YEAR TO MONTH"}),
    ("INTERVAL DAY TO HOUR", {"type": "interval", "fields": "DAY TO HOUR"}),
    ("INTERVAL DAY TO MINUTE", {"type": "interval", "fields": "DAY TO MINUTE"}),
    ("INTERVAL DAY TO SECOND", {"type": "interval", "fields": "DAY TO SECOND"}),
    ("INTERVAL HOUR TO MINUTE", {"type": "interval", "fields": "HOUR TO MINUTE"}),
    ("INTERVAL HOUR TO SECOND", {"type": "interval", "fields": "HOUR TO SECOND"}),
    ("INTERVAL MINUTE TO SECOND", {"type": "interval", "fields": "MINUTE TO SECOND"}),
    ("INTERVAL(4)", {"type": "interval", "precision": 4}),
    ("INTERVAL(0)", {"type": "interval", "precision": 0}),
    ("INTERVAL SECOND(4)", {"type": "interval", "precision": 4, "fields": "SECOND"}),
    ("INTERVAL SECOND(4)[]", {"type": "interval", "dims": 1, "precision": 4, "fields": "SECOND"}),
    (
        "INTERVAL MINUTE TO SECOND[][]",
        {"type": "interval", "dims": 2, "fields": "MINUTE TO SECOND"},
    ),
    ("BOOLEAN", {"type": "bool"}),
    ("NUMERIC", {"type": "numeric"}),
    ("NUMERIC(5,3)", {"type": "numeric", "precision": 5, "scale": 3}),
    ("NUMERIC(5,3)[]", {"type": "numeric", "dims": 1, "precision": 5, "scale": 3}),
    ("NUMERIC(5)", {"type": "numeric", "precision": 5, "scale": 0}),
    ("NUMERIC(1000,999)", {"type": "numeric", "precision": 1000, "scale": 999}),
    ("NUMERIC(5,-2)", {"type": "numeric", "precision": 5, "scale": -2}),
    ("REAL", {"type": "float4"}),
    ("DOUBLE PRECISION", {"type": "float8"}),
    ("BIT", {"type": "bit", "length": 1}),
    ("BIT[]", {"type": "bit", "dims": 1, "length": 1}),
    ("BIT(5)", {"type": "bit", "length": 5}),
    ("BIT VARYING(5)", {"type": "varbit", "length": 5}),
    ("BIT VARYING(5)[]", {"type": "varbit", "dims": 1, "length": 5}),
    ("BIT VARYING", {"type": "varbit", "length": -1}),  # Electric quirk
    ("POINT", {"type": "point"}),
    ("CIDR", {"type": "cidr"}),
    ("TSVECTOR", {"type": "tsvector"}),
    ("UUID", {"type": "uuid"}),
    ("JSON", {"type": "json"}),
    ("JSONB", {"type": "jsonb"}),
    ("JSONB[]", {"type": "jsonb", "dims": 1}),
    ("INT4RANGE", {"type": "int4range"}),
    ("TSTZMULTIRANGE", {"type": "tstzmultirange"}),
    ("OID", {"type": "oid"}),
    ("REGCLASS", {"type": "regclass"}),
    ("PG_LSN", {"type": "pg_lsn"}),
    ("MOOD", {"type": "mood"}),
    ("MOOD[]", {"type": "mood", "dims": 1}),
    ("COMPLEX", {"type": "complex"}),
    ("COMPLEX[]", {"type": "complex", "dims": 1}),
    ("POSINT", {"type": "posint"}),
    ("POSINT[]", {"type": "posint", "dims": 1}),
    ("SHORTNAME", {"type": "shortname"}),
    ("TAGLIST", {"type": "taglist"}),  # a domain over an array is not an array (as Electric)
    ("TAGLIST[]", {"type": "taglist", "dims": 1}),
]


def make_table(database_url: str, ddl: str, name: str = "items") -> Table:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute("CREATE TYPE complex AS (r double precision, i double precision)")
        conn.execute("CREATE DOMAIN posint AS integer CHECK (VALUE > 0)")
        conn.execute("CREATE DOMAIN shortname AS varchar(10)")
        conn.execute("CREATE DOMAIN taglist AS text[]")
        conn.execute(ddl)
        table = load_table(conn, "public", name)
    assert table is not None
    return table


def test_types(database_url: str) -> None:
    columns = ", ".join(f"c{i} {pg_type}" for i, (pg_type, _) in enumerate(TYPES))
    table = make_table(database_url, f"CREATE TABLE items (id int PRIMARY KEY, {columns})")
    schema = schema_header(table, [c.name for c in table.columns])
    assert schema.pop("id") == {"type": "int4", "pk_index": 0, "not_null": True}
    expected = {f"c{i}": column_schema for i, (_, column_schema) in enumerate(TYPES)}
    mismatches = {
        pg_type: (schema[f"c{i}"], expected[f"c{i}"])
        for i, (pg_type, _) in enumerate(TYPES)
        if schema[f"c{i}"] != expected[f"c{i}"]
    }
    assert mismatches == {}
    assert schema.keys() == expected.keys()


def test_protocol_example(database_url: str) -> None:
    table = make_table(
        database_url,
        "CREATE TABLE todos (id int8 PRIMARY KEY, title varchar(123), tags text[],"
        " price numeric(8,2), secret text)",
        name="todos",
    )
    assert schema_header(table, ["price", "tags", "id", "title"]) == {
        "id": {"type": "int8", "pk_index": 0, "not_null": True},
        "title": {"type": "varchar", "max_length": 123},
        "tags": {"type": "text", "dims": 1},
        "price": {"type": "numeric", "precision": 8, "scale": 2},
    }


def test_nullability_and_composite_primary_key(database_url: str) -> None:
    table = make_table(
        database_url,
        "CREATE TABLE items (i integer, name varchar, value boolean NOT NULL, flag boolean,"
        " PRIMARY KEY (value, i))",
    )
    assert schema_header(table, ["i", "name", "value", "flag"]) == {
        "i": {"type": "int4", "pk_index": 1, "not_null": True},
        "name": {"type": "varchar"},
        "value": {"type": "bool", "pk_index": 0, "not_null": True},
        "flag": {"type": "bool"},
    }


@pytest.mark.parametrize("columns", [[], ["nope"]])
def test_only_selected_existing_columns(database_url: str, columns: list[str]) -> None:
    table = make_table(database_url, "CREATE TABLE items (id int PRIMARY KEY)")
    assert schema_header(table, columns) == {}
