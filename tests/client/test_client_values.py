"""Values through ``pysync serve`` and ``pysync.Client`` equal what psycopg reads from the
same rows, for every type the client parses (and unknown types stay text)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from pysync.client import ChangeMessage, Client
from pysync.client.values import column_parsers, parse_row
from serve_support import Conn, Served, write

COLUMNS = """
    id int PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, o oid,
    f4 float4, f8 float8, num numeric, num_scaled numeric(8, 3),
    b bool,
    t text, vc varchar(10), bp char(5), mood_col mood,
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz(3),
    iv interval,
    u uuid, j json, jb jsonb, by bytea,
    a_int int4[], a_text text[], a_2d int8[][], a_uuid uuid[], a_num numeric[], a_bool bool[],
    a_ts timestamptz[], a_jb jsonb[],
    r int4range, inet_col inet
"""

ROWS = [
    """(1, 1, -2147483648, 9223372036854775807, 4000000000,
        0.1, 1.7976931348623157e308, 12345678901234567890.123456789, 3.14159,
        true,
        'hello "world" \\ ,{}', 'short', 'ab', 'sad',
        '2024-02-29', '13:45:06.123456', '13:45:00+05:30', '2024-01-31 13:45:00.5',
        '2024-01-31 13:45:00.123+02',
        '1 year 2 mons 3 days 04:05:06.5',
        'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{"a": [1, 2.5, null], "b": "x"}',
        '{"z": 1, "a": {"nested": true}}', '\\xdeadbeef00',
        '{1,NULL,3}', '{"a b",NULL,"c,d","e\\"f","NULL",""}', '{{1,2},{3,4}}',
        '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{1.50,NaN}', '{t,f,NULL}',
        '{"2024-01-01 00:00:00+00"}', ARRAY['{"k": "v"}'::jsonb, '[1]'::jsonb],
        '[1,10)', '192.168.0.1/24')""",
    """(2, -32768, 0, -1, 0,
        'NaN', '-Infinity', 'NaN', -0.001,
        false,
        '', '', 'abcde', 'happy',
        '0001-01-01', '00:00', '23:59:59-08', '1999-12-31 23:59:59.999999',
        '1970-01-01 00:00:00+00',
        '-1 days -00:00:01',
        '00000000-0000-0000-0000-000000000000', 'null', '[]', '\\x',
        '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
        'empty', '::1')""",
    """(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL)""",
]


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type; NaN equals NaN."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    return bool(a == b or (a != a and b != b))


def select_rows(conn: Conn, table: str) -> dict[int, dict[str, Any]]:
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY id")
    names = [c.name for c in cur.description or ()]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cur}


async def test_values_equal_what_psycopg_reads(served: Served, db: Conn) -> None:
    db.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    db.execute(f"CREATE TABLE v_all ({COLUMNS})")
    db.execute("INSERT INTO v_all VALUES " + ", ".join(ROWS[:2]))
    async with Client(served.url) as client, await client.shape("v_all", timeout=60) as shape:
        txid = write(
            db,
            "INSERT INTO v_all VALUES " + ROWS[2],
            "UPDATE v_all SET jb = '{\"u\": 2}' WHERE id = 2",
        )
        await shape.wait_for_txid(txid, timeout=30)
        expected = select_rows(db, "v_all")
        got = {row["id"]: row for row in shape.rows.values()}
    assert got.keys() == expected.keys()
    for id_, row in expected.items():
        for column, value in row.items():
            if column in ("r", "inet_col"):
                continue  # no Python type: checked below
            assert same(got[id_][column], value), (id_, column, got[id_][column], value)
    first = got[1]
    assert first["r"] == "[1,10)" and first["inet_col"] == "192.168.0.1/24"  # unknown types: text
    assert first["ts"] == dt.datetime(2024, 1, 31, 13, 45, 0, 500000)
    assert first["tstz"] == dt.datetime(2024, 1, 31, 11, 45, 0, 123000, tzinfo=dt.UTC)
    assert first["tstz"].tzinfo is not None and first["ts"].tzinfo is None
    assert first["u"] == UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert first["a_text"] == ["a b", None, "c,d", 'e"f', "NULL", ""]
    assert first["a_2d"] == [[1, 2], [3, 4]]
    assert first["num"] == Decimal("12345678901234567890.123456789")
    assert first["iv"] == dt.timedelta(days=365 + 60 + 3, hours=4, minutes=5, seconds=6.5)


async def test_values_python_cannot_hold_stay_text(served: Served, db: Conn) -> None:
    db.execute("CREATE TABLE v_edge (id int PRIMARY KEY, d date, ts timestamp, a int4[])")
    db.execute(
        "INSERT INTO v_edge VALUES (1, 'infinity', '-infinity', '[0:1]={5,6}'), "
        "(2, '0044-03-15 BC', '10000-01-01 00:00', '{7}')"
    )
    async with Client(served.url) as client:
        messages = [m async for m in client.stream("v_edge", live=False)]
    rows = {m.value["id"]: m.value for m in messages if isinstance(m, ChangeMessage)}
    assert rows[1] == {"id": 1, "d": "infinity", "ts": "-infinity", "a": "[0:1]={5,6}"}
    assert rows[2] == {"id": 2, "d": "0044-03-15 BC", "ts": "10000-01-01 00:00:00", "a": [7]}


async def test_json_nested_deeper_than_python_decodes_stays_text(served: Served, db: Conn) -> None:
    db.execute("CREATE TABLE v_deep (id int PRIMARY KEY, doc jsonb, docs jsonb[])")
    deep = "[" * 5000 + "]" * 5000  # Postgres takes it; Python's decoders stop near 1,000
    db.execute(
        "INSERT INTO v_deep VALUES (1, %s, ARRAY[%s::jsonb, '[1]']), (2, '[[1]]', NULL)",
        (deep, deep),
    )
    stored = db.execute("SELECT doc::text FROM v_deep WHERE id = 1").fetchone()
    assert stored is not None
    async with Client(served.url) as client:
        messages = [m async for m in client.stream("v_deep", live=False)]
    rows = {m.value["id"]: m.value for m in messages if isinstance(m, ChangeMessage)}
    assert rows[1] == {"id": 1, "doc": stored[0], "docs": [stored[0], [1]]}
    assert rows[2] == {"id": 2, "doc": [[1]], "docs": None}


def test_custom_parsers_and_malformed_values() -> None:
    parsers = column_parsers(
        {"r": {"type": "int4range"}, "n": {"type": "int4", "dims": 1}, "t": {"type": "text"}},
        {"int4range": lambda text: tuple(text[1:-1].split(","))},
    )
    assert set(parsers) == {"r", "n"}  # text needs no parser
    assert parse_row({"r": "[1,5)", "n": "{1,2}", "t": "x"}, parsers) == {
        "r": ("1", "5"),
        "n": [1, 2],
        "t": "x",
    }
    with pytest.raises(ValueError, match="column 'n'"):
        parse_row({"n": "{1,x}"}, parsers)
