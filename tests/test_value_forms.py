"""Every value has one text form, whichever path brings it: a snapshot sends what
replication (pgoutput) sends, which is the type's output function under the display
settings, for every type family in ``pysync.postgres.types`` and beyond (network,
geometric, ranges, enums, domains, composites, extension types, arrays of them), in
values, ``old_value`` (``replica=full``) and keys of tables without a primary key.

``col::text`` is not the output function for every type (bool gives ``true``, bpchar
drops its padding, inet adds ``/32``), so the expected form is ``format('%s', col)``,
which calls the output function.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from engine_runner import Conn, Entry, changes, make, materialise, quiesce, read_all
from pysync.engine import Engine
from pysync.postgres.catalog import load_table
from pysync.postgres.session import display_options
from pysync.shapes.changes import relation_prefix, row_key

SETUP = r"""
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE EXTENSION ltree;
CREATE EXTENSION cube;
CREATE TYPE mood AS ENUM ('ok', 'a b', 'quo"te', 'ünï', 'comma,', 'sl/ash');
CREATE TYPE pair AS (flag bool, addr inet, code char(3), note text, nums int[]);
CREATE TYPE inetrange AS RANGE (subtype = inet);
CREATE DOMAIN dbool AS bool;
CREATE DOMAIN dinet AS inet;
CREATE DOMAIN dchar AS char(4);
CREATE DOMAIN dint AS int CHECK (VALUE > 0);
CREATE DOMAIN ddbool AS dbool;
CREATE DOMAIN dtexts AS text[];
CREATE DOMAIN dpair AS pair;
CREATE DOMAIN djson AS json;
CREATE SCHEMA elsewhere;
CREATE TABLE elsewhere.target (id int);
"""

# (type, SQL literals of values); each column also gets NULLs (the rows after its values).
TYPES: list[tuple[str, list[str]]] = [
    # numbers
    ("int2", ["-32768", "32767", "0"]),
    ("int4", ["-2147483648", "2147483647"]),
    ("int8", ["-9223372036854775808", "9223372036854775807"]),
    (
        "float4",
        ["'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "0.1", "1e-45", "3.4028235e38", "16777217"],
    ),
    (
        "float8",
        [
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'-0'",
            "0.1",
            "5e-324",
            "1.7976931348623157e308",
            "1e22",
        ],
    ),
    (
        "numeric",
        [
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "0.000",
            "-1.50",
            "1e-20",
            "12345678901234567890.123",
        ],
    ),
    ("numeric(5,2)", ["3.1", "-999.99"]),
    ("money", ["0", "'-92233720368547758.08'", "'92233720368547758.07'", "1234.5"]),
    ("oid", ["0", "4294967295"]),
    # booleans
    ("bool", ["true", "false"]),
    ("dbool", ["true", "false"]),
    ("ddbool", ["false"]),
    # strings
    (
        "text",
        [
            "''",
            "'ünïcödé 😀'",
            r"""'quote " and \ backslash'""",
            "'slash / //'",
            "E'new\\nline\\ttab\\r'",
            "'NULL'",
            "E'\\x01\\x1f\\x7f'",
            "'{braces},(parens)'",
            "' padded  '",
        ],
    ),
    ("varchar(5)", ["'abc'", "''", "'ü '"]),
    ("char(4)", ["'ab'", "''", "'abcd'", "'ü'"]),
    ("dchar", ["'x'", "''"]),
    ('"char"', ["'a'", r"'\351'", "''", "' '"]),
    ("name", ["'nm'", "'ünï'", "''"]),
    ("citext", ["'MiXeD'", "''"]),
    ("uuid", ["'00000000-0000-0000-0000-000000000000'", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'"]),
    ("mood", ["'ok'", "'a b'", "'quo\"te'", "'ünï'", "'comma,'", "'sl/ash'"]),
    # binary
    ("bytea", [r"'\x'", r"'\x00ff'", "'abc'"]),
    ("bit(3)", ["'101'", "'000'"]),
    ("varbit", ["''", "'1'", "'1010101010101'"]),
    # datetimes
    ("date", ["'infinity'", "'-infinity'", "'4713-01-01 BC'", "'5874897-12-31'", "'2024-02-29'"]),
    ("time", ["'00:00'", "'23:59:59.999999'", "'24:00:00'"]),
    ("timetz", ["'12:00+05:30'", "'00:00:00-15:59'"]),
    (
        "timestamp",
        [
            "'infinity'",
            "'-infinity'",
            "'4713-01-01 00:00 BC'",
            "'294276-12-31 23:59:59.999999'",
            "'2024-01-01 12:34:56.5'",
        ],
    ),
    (
        "timestamptz",
        [
            "'infinity'",
            "'-infinity'",
            "'2024-01-01 12:34:56.789+05:45'",
            "'1900-01-01 00:00 Europe/Amsterdam'",
            "'0044-03-15 12:00+00 BC'",
        ],
    ),
    # intervals
    (
        "interval",
        [
            "'0'",
            "'1 year 2 mons -3 days 04:05:06.789'",
            "'-178000000 years'",
            "'-1 day +1 hour'",
            "'1 microsecond'",
        ],
    ),
    ("interval day to second", ["'1 day 02:03:04'"]),
    # json
    ("json", ["""'{"b": 1,  "a" : [1, 2]}'""", """'"\\u00e9/"'""", "'null'", "'[]'"]),
    (
        "jsonb",
        ["""'{"b": 1,  "a" : [1, 2]}'""", """'"\\u00e9/"'""", "'null'", """'{"a": "x/y\\"q"}'"""],
    ),
    ("jsonpath", ["'$.a[*] ? (@ > 1)'"]),
    # network
    (
        "inet",
        [
            "'::ffff:1.2.3.4'",
            "'255.255.255.255/32'",
            "'1.2.3.4/24'",
            "'::1'",
            "'2001:db8::1/64'",
            "'0.0.0.0/0'",
        ],
    ),
    ("cidr", ["'10.0.0.0/8'", "'255.255.255.255/32'", "'::/0'", "'2001:db8::'", "'1.2.3.4'"]),
    ("dinet", ["'1.2.3.4'", "'10.0.0.1/8'"]),
    ("macaddr", ["'08:00:2b:01:02:03'", "'08-00-2B-01-02-0A'"]),
    ("macaddr8", ["'08:00:2b:01:02:03:04:05'", "'08:00:2b:01:02:03'"]),
    # ranges and multiranges
    ("int4range", ["'empty'", "'[1,5)'", "'(,3]'", "'(,)'"]),
    ("int8range", ["'[-9223372036854775808,0]'"]),
    ("numrange", ["'[1.50,NaN)'", "'(-Infinity,2]'"]),
    ("daterange", ["'[2024-01-01,infinity)'", "'empty'"]),
    ("tsrange", ["'[2024-01-01 00:00,2024-01-02 00:00)'"]),
    ("tstzrange", ["'[2024-01-01 00:00+02,)'"]),
    ("inetrange", ["'[1.2.3.4,1.2.3.5/32]'"]),
    ("int4multirange", ["'{}'", "'{[1,3), [5,7)}'"]),
    ("datemultirange", ["'{[2024-01-01,2024-02-01)}'"]),
    # geometric
    ("point", ["'(1,2)'", "'(1.5e300,-0)'", "'(NaN,Infinity)'", "'(0.1,0.2)'"]),
    ("line", ["'{1,-1,0}'"]),
    ("lseg", ["'[(0,0),(1,1)]'"]),
    ("box", ["'(1,1),(0,0)'"]),
    ("path", ["'[(0,0),(1,1)]'", "'((0,0),(1,1),(2,0))'"]),
    ("polygon", ["'((0,0),(1,1),(2,0))'"]),
    ("circle", ["'<(0,0),1.5>'"]),
    # text search
    ("tsvector", ["'a fat:1A cat'", "''", "$$'quo''te' 'sl/ash'$$"]),
    ("tsquery", ["'fat & (rat | cat)'", "'!a <-> b'"]),
    # system
    ("pg_lsn", ["'0/0'", "'FFFFFFFF/FFFFFFFF'"]),
    ("pg_snapshot", ["'10:20:10,14,15'"]),
    ("xid8", ["'18446744073709551615'"]),
    ("regclass", ["'pg_class'", "'elsewhere.target'"]),
    ("regtype", ["'integer'", "'character varying'"]),
    # composite and other domains
    (
        "pair",
        [
            """'(t,::ffff:1.2.3.4,"a","q""u,o\\\\te","{1,NULL}")'""",
            "'(,,,,)'",
            "'(f,10.0.0.1/8,,\"\",{})'",
        ],
    ),
    ("dpair", ["'(t,1.2.3.4,ab,x,)'", "'(,,,,)'"]),
    ("djson", ["""'{"a":  1}'"""]),
    ("dint", ["1", "2147483647"]),
    ("dtexts", ["""'{"",NULL,"a b"}'"""]),
    # extension types
    ("hstore", [r"""'"a"=>"1", "b"=>NULL, "c/"=>"q\""'"""]),
    ("ltree", ["'a.b.c'", "''"]),
    ("cube", ["'(1,2),(3,4)'", "'(0.1)'"]),
    # arrays
    ("int4[]", ["'{1,NULL,3}'", "'{}'", "'{{1,2},{3,4}}'", "'[0:1]={5,6}'"]),
    (
        "text[]",
        [
            r"""'{"",NULL,"NULL","a\"b","c\\d","x,y","{}"," sp ","ünï","sl/ash"}'""",
            "'{}'",
            """'{{a,b},{"c d",NULL}}'""",
        ],
    ),
    ("bool[]", ["'{t,f,NULL}'"]),
    ("dbool[]", ["'{t,NULL}'"]),
    ("inet[]", ["'{::ffff:1.2.3.4,10.0.0.1/8,NULL,255.255.255.255/32}'"]),
    ("cidr[]", ["'{10.0.0.0/8}'"]),
    ("char(3)[]", ["""'{a,"",NULL,"abc"}'"""]),
    ('"char"[]', [r"""'{a,"\\351"}'"""]),
    ("float4[]", ["'{NaN,-Infinity,0.1,-0}'"]),
    ("float8[]", ["'{NaN,-Infinity,0.1,-0,5e-324}'"]),
    ("numeric[]", ["'{1.50,NaN,Infinity}'"]),
    ("money[]", ["'{1.5,-2}'"]),
    ("date[]", ["'{infinity,2024-01-01,4713-01-01 BC}'"]),
    ("timestamptz[]", ["""'{"2024-01-01 00:00+02",-infinity}'"""]),
    ("interval[]", ["""'{"1 day","-1 mon 00:00:01"}'"""]),
    ("json[]", ["""'{"{\\"a\\": 1}",null}'"""]),
    ("jsonb[]", ["""'{"{\\"a\\":  1}",NULL,"\\"s\\""}'"""]),
    ("bytea[]", [r"""'{"\\\\x00ff",NULL,""}'"""]),
    ("uuid[]", ["'{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}'"]),
    ("mood[]", ["""'{"a b","quo\\"te",NULL}'"""]),
    ("pair[]", ["""ARRAY['(t,1.2.3.4,a,"x,y",)'::pair, NULL]"""]),
    ("int4range[]", ["""'{"[1,2)",empty}'"""]),
    ("point[]", ["""'{"(1,2)","(0.1,NaN)"}'"""]),
    ("tsvector[]", ["""'{"a b",""}'"""]),
    ("macaddr[]", ["'{08:00:2b:01:02:03}'"]),
    ("bit(2)[]", ["'{01,10}'"]),
    ("hstore[]", ["""'{"\\"k\\"=>\\"v\\""}'"""]),
]

COLUMNS = [f"c{i}" for i in range(len(TYPES))]
ROWS = max(len(values) for _, values in TYPES) + 1  # the last row is all NULLs


def _create(conn: Conn, table: str, key: str) -> None:
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_))
        for name, (type_, _) in zip(COLUMNS, TYPES, strict=True)
    )
    conn.execute(
        sql.SQL("CREATE TABLE {} ({}, {})").format(sql.Identifier(table), sql.SQL(key), columns)
    )
    conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(table)))
    for row in range(ROWS):
        literals = [
            sql.SQL(f"({values[row]})::{type_}" if row < len(values) else "NULL")
            for type_, values in TYPES
        ]
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES ({}, {})").format(
                sql.Identifier(table), sql.Literal(row + 1), sql.SQL(", ").join(literals)
            )
        )


def output_forms(url: str, table: str, key: str) -> dict[int, dict[str, str | None]]:
    """Each row's values by the types' output functions, in a session with the display
    settings, by the row's ``key`` column."""
    select = sql.SQL(", ").join(
        sql.SQL("CASE WHEN num_nulls({0}) = 1 THEN NULL ELSE format('%s', {0}) END").format(
            sql.Identifier(name)
        )
        for name in COLUMNS
    )
    with psycopg.connect(url, options=display_options()) as session:
        rows = session.execute(
            sql.SQL("SELECT {}, {} FROM {}").format(
                sql.Identifier(key), select, sql.Identifier(table)
            )
        ).fetchall()
    return {row[0]: dict(zip(COLUMNS, row[1:], strict=True)) for row in rows}


TYPE_OF = {"id": "int", **dict(zip(COLUMNS, (t for t, _ in TYPES), strict=True))}


def differences(
    got: dict[Any, dict[str, Any]], want: dict[Any, dict[str, Any]]
) -> list[tuple[str, Any, Any, Any]]:
    """(type, row, got, wanted) of every value that differs, including missing ones."""
    assert set(got) == set(want)
    found = []
    for row, values in want.items():
        for name in sorted(set(values) | set(got[row])):
            if got[row].get(name, "<missing>") != values.get(name, "<missing>"):
                found.append(
                    (TYPE_OF[name], row, got[row].get(name, "<missing>"), values.get(name))
                )
    return found


def _by_id(entries: list[Entry], op: str | None = None) -> dict[int, Entry]:
    return {
        int(e["key"].rsplit("/", 1)[1].strip('"')): e
        for e in entries
        if op is None or e["headers"]["operation"] == op
    }


async def test_snapshot_values_are_what_replication_sends(
    engine: Engine, conn: Conn, database_url: str
) -> None:
    conn.execute(SETUP)
    _create(conn, "vals", "id int PRIMARY KEY")
    expected = output_forms(database_url, "vals", "id")
    assert expected[1]["c" + str(TYPES.index(("bool", ["true", "false"])))] == "t"
    inet = COLUMNS[[t for t, _ in TYPES].index("inet")]
    assert [expected[r][inet] for r in (1, 2)] == ["::ffff:1.2.3.4", "255.255.255.255"]

    full = await make(engine, "vals", replica="full")
    snapshot = {k: e["value"] for k, e in _by_id(changes(read_all(full.log))).items()}
    assert (
        differences(snapshot, {row: {"id": str(row), **values} for row, values in expected.items()})
        == []
    )

    # Each row takes the values of the next: replication sends the new row whole
    # (replica=full) and the changed columns' old values; then every row is deleted,
    # which sends the old row whole.
    targets = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    conn.execute(
        sql.SQL(
            "UPDATE vals v SET ({0}) = (SELECT {0} FROM vals w WHERE w.id = v.id % {1} + 1)"
        ).format(targets, sql.Literal(ROWS))
    )
    conn.execute("DELETE FROM vals")
    await quiesce(engine, conn)
    live = [e for e in changes(read_all(full.log)) if "lsn" in e["headers"]]
    updates = _by_id(live, "update")
    deletes = _by_id(live, "delete")
    rotated = {row: {**snapshot[row % ROWS + 1], "id": str(row)} for row in snapshot}
    assert differences({r: e["value"] for r, e in updates.items()}, rotated) == []
    assert differences({r: e["value"] for r, e in deletes.items()}, rotated) == []
    old_values = {
        row: {c: snapshot[row][c] for c in COLUMNS if snapshot[row][c] != rotated[row][c]}
        for row in snapshot
    }
    assert differences({r: e["old_value"] for r, e in updates.items()}, old_values) == []
    # every column's values were compared as old values, not only the NULLs
    assert sum(len(v) for v in old_values.values()) >= sum(len(v) for _, v in TYPES)


async def test_keys_without_primary_key_are_what_replication_sends(
    engine: Engine, conn: Conn, database_url: str
) -> None:
    conn.execute(SETUP)
    _create(conn, "bare", "n int")
    expected = output_forms(database_url, "bare", "n")
    shape = await make(engine, "bare")
    prefix = relation_prefix("public", "bare")
    keys = {row_key(prefix, [str(n), *values.values()]) for n, values in expected.items()}
    assert {e["key"] for e in changes(read_all(shape.log))} == keys

    # Every row is replaced: the deletes name the keys the snapshot sent.
    conn.execute("UPDATE bare SET n = n + 100")
    await quiesce(engine, conn)
    live = [e for e in changes(read_all(shape.log)) if "lsn" in e["headers"]]
    assert {e["key"] for e in live if e["headers"]["operation"] == "delete"} == keys
    assert {e["key"] for e in live if e["headers"]["operation"] == "insert"} == {
        row_key(prefix, [str(n + 100), *values.values()]) for n, values in expected.items()
    }
    assert len(materialise(read_all(shape.log))) == ROWS


def test_catalog_marks_the_types_whose_text_cast_is_their_own(conn: Conn) -> None:
    """xml's output rewrites its declaration while ``::text`` keeps the stored bytes (this
    cluster has no libxml to store one, so the catalog's choice is what can be checked)."""
    conn.execute(SETUP)
    conn.execute(
        "CREATE TABLE t (n int, s text, v varchar, x xml, b bool, i inet, c cidr, p char(2),"
        ' ch "char", nm name, db dbool, dt dtexts, ba bool[], ia inet[], h hstore, j json)'
    )
    table = load_table(conn, "public", "t")
    assert table is not None
    assert {c.name for c in table.columns if c.own_text_cast} == {
        "x",
        "b",
        "i",
        "c",
        "p",
        "ch",
        "nm",
        "db",
        "dt",  # a domain, though over an array: format() gives array_out's text too
    }
