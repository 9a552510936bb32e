"""Every operator and function of the registry, evaluated by pysync and by Postgres on edge
values (NULL, NaN, infinities, the integers' limits, overflowing results, empty arrays,
-0, trailing spaces of bpchar, dates beyond the timestamp range).

The cases are generated from ``registry.OVERLOADS``: a new entry is tested by being
declared. For each combination of argument values the evaluator's answer (a value or
an error) must be Postgres' answer for the SQL the renderer writes (``SELECT <sql>``
with the arguments bound as parameters): the same error-or-not, and the same value as
Postgres prints it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pysync.postgres.catalog import load_table
from pysync.postgres.cluster import PostgresCluster
from pysync.postgres.types.arrays import parse_array
from pysync.where import WhereRuntimeError, compile_where, registry
from pysync.where._check import case_mapping
from pysync.where._compile import Compiler
from pysync.where._ir import Call, Cast, Const, Node, Operator, is_array
from pysync.where._render import Renderer, literal_text
from pysync.where.runtime.casts import input_function
from pysync.where.runtime.enums import EnumType

EDGES: dict[str, list[str | None]] = {
    "int2": [None, "0", "1", "-1", "7", "32767", "-32768"],
    "int4": [None, "0", "1", "-1", "7", "2147483647", "-2147483648"],
    "int8": [None, "0", "1", "-1", "7", "9223372036854775807", "-9223372036854775808"],
    "float4": [None, "0", "-0", "1.5", "-2", "NaN", "Infinity", "-Infinity", "3.4e38", "1e-40"],
    "float8": [None, "0", "-0", "1.5", "-2", "NaN", "Infinity", "-Infinity", "1e308", "1e-300"],
    "numeric": [None, "0", "1.5", "-2.25", "3", "NaN", "Infinity", "-Infinity", "1e100"],
    "interval": [
        None,
        "0",
        "1 day",
        "1 mon",
        "-1 mon 2 hours",
        "25 hours",
        "infinity",
        "-infinity",
        "177999999 years",
    ],
    "date": [None, "2024-02-29", "2000-01-01", "infinity", "-infinity", "4713-01-01 BC"],
    "time": [None, "00:00", "12:30:15.5", "23:59:59.999999", "24:00:00"],
    "timestamp": [
        None,
        "2024-02-29 12:00",
        "2000-01-01 00:00:00.000001",
        "infinity",
        "-infinity",
        "294276-12-31 23:59:59",
        "4713-01-01 00:00 BC",
        "2024-03-31 02:30",
        "2024-10-27 02:30",
    ],
    "timestamptz": [
        None,
        "2024-02-29 12:00+00",
        "2000-01-01 00:00:00.000001+00",
        "infinity",
        "-infinity",
        "294276-12-31 23:59:59+00",
        "4713-01-01 00:00+00 BC",
        "2024-10-27 00:30+00",
    ],
    "bool": [None, "t", "f"],
    "text": [None, "", "a", "ab", "b", "a ", "é", "Z"],
    "bpchar": [None, "", "a", "a  ", "ab", " a"],
    "uuid": [
        None,
        "00000000-0000-0000-0000-000000000000",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ],
    "int4[]": [None, "{}", "{1,2}", "{{1},{2}}", "{NULL}"],
    "text[]": [None, "{}", "{a}", "{{a,b},{c,d}}"],
}
POLYMORPHIC = {
    registry.ANYARRAY: ("int4[]", "text[]"),
    # coalesce's arguments, converted by the checker to their common type
    registry.ANYCOMPATIBLE: ("int4", "numeric", "text", "bpchar", "interval", "int4[]"),
    # concat's: each argument's own type, by its output function
    registry.ANY: ("text", "bpchar", "bool", "float8", "timestamptz"),
    registry.ANYENUM: ("enum:registry_mood",),
    registry.ANYENUMARRAY: ("enum:registry_mood[]",),
}
ENUM_LABELS = ("sad", "ok", "happy")
# 'meh' is added BEFORE 'ok': its order is not the order the labels were added in
ENUM = EnumType("enum:registry_mood", "public.registry_mood", ("sad", "meh", "ok", "happy"))
ENUMS = {ENUM.name: ENUM}


def _array_edges(t: str) -> list[str | None]:
    """Arrays of ``t``'s edge values: empty, one, two, three elements, NULL elements, two
    dimensions."""
    values = [v for v in EDGES[t] if v is not None] * 2  # bool has two
    a, b, c = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values[:3])
    return [
        None,
        "{}",
        f"{{{a}}}",
        f"{{{a},{b}}}",
        f"{{{b},{a},{c}}}",
        "{NULL}",
        f"{{{a},NULL}}",
        f"{{{{{a}}},{{{b}}}}}",
    ]


for _t in [t for t in EDGES if not t.endswith("[]")]:
    EDGES.setdefault(_t + "[]", _array_edges(_t))
EDGES["enum:registry_mood"] = [None, "meh", "sad", "happy", "ok"]
EDGES["enum:registry_mood[]"] = _array_edges("enum:registry_mood")
# Arguments whose edges are not their type's: the zones the checker lets through
# (a constant known to time_zone), DST gaps and folds, and one Postgres does not know.
ARGUMENT_EDGES: dict[tuple[str, int], list[str | None]] = {
    ("timezone", 0): [None, "UTC", "europe/paris", "America/St_Johns", "Asia/Kathmandu", "Mars/X"],
}

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def conn(pg_cluster: PostgresCluster) -> Iterator[Conn]:
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        labels = ", ".join(f"'{label}'" for label in ENUM_LABELS)
        conn.execute(
            f"DO $$ BEGIN CREATE TYPE registry_mood AS ENUM ({labels}); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        conn.execute("ALTER TYPE registry_mood ADD VALUE IF NOT EXISTS 'meh' BEFORE 'ok'")
        row = conn.execute("SELECT enum_range(NULL::registry_mood)::text[]").fetchone()
        assert row is not None and tuple(row[0]) == ENUM.labels
        yield conn


def _const(t: str, text: str | None) -> Node:
    if text is None:
        return Const(type=t, value=None)
    if t == ENUM.name:
        return Const(type=t, value=ENUM.value(text))
    if t == ENUM.name + "[]":
        return Const(type=t, value=parse_array(ENUM.value)(text))
    return Const(type=t, value=input_function(t)(text))


def _cases(overload: registry.Overload) -> Iterator[tuple[Node, ...]]:
    """The argument lists to evaluate: a variadic overload with its declared arguments,
    one more and two more (those with each argument's first three edges: NULL and two
    values); a polymorphic argument as each of its POLYMORPHIC types (anycompatible: all
    of one of them, as the checker unifies them); each argument as each of its edges."""
    params = list(overload.args)
    arities: list[tuple[list[str], int | None]] = [(params, None)]
    if overload.variadic:
        arities += [(params + params[-1:], None), (params + params[-1:] * 2, 3)]
    for declared, cut in arities:
        for types in _bindings(declared):
            edges = [
                ARGUMENT_EDGES.get((overload.name, i), EDGES[t])[:cut] for i, t in enumerate(types)
            ]
            operands = list(overload.operands)
            operands += operands[-1:] * (len(declared) - len(operands))
            for texts in itertools.product(*edges):
                args = [_const(t, x) for t, x in zip(types, texts, strict=True)]
                # as the checker builds them: converted to what the overload evaluates
                yield tuple(
                    _converted(a, p, o) for a, p, o in zip(args, declared, operands, strict=True)
                )


def _bindings(declared: list[str]) -> Iterator[list[str]]:
    """The argument types for the declared ones: each polymorphic family bound to one
    type per case (anyelement the element type of anyarray, as the checker converts
    them); ``"any"`` arguments independently."""
    compatible = POLYMORPHIC[registry.ANYCOMPATIBLE]
    arrays = POLYMORPHIC[registry.ANYARRAY]
    for common in compatible if registry.ANYCOMPATIBLE in declared else compatible[:1]:
        for array in arrays if registry.ANYARRAY in declared else arrays[:1]:
            bound = {
                registry.ANYCOMPATIBLE: (common,),
                registry.ANYARRAY: (array,),
                registry.ANYELEMENT: (array.removesuffix("[]"),),
                registry.ANYENUM: POLYMORPHIC[registry.ANYENUM][:1],
                registry.ANYENUMARRAY: POLYMORPHIC[registry.ANYENUMARRAY][:1],
            }
            choices = [bound.get(p, POLYMORPHIC.get(p, (p,))) for p in declared]
            yield from map(list, itertools.product(*choices))


def _converted(arg: Node, param: str, operand: str) -> Node:
    if param == registry.ANY and arg.type != "text":
        return Cast(type="text", args=(arg,), output=True)  # concat's output text
    if operand == arg.type or operand in POLYMORPHIC or operand == registry.ANYELEMENT:
        return arg
    return Cast(type=operand, args=(arg,))


def _ours(node: Node) -> str | None | WhereRuntimeError:
    try:
        value = Compiler({}).compile(node)(())
    except WhereRuntimeError as e:
        return e
    return None if value is None else literal_text(node.type, value)


def _postgres(conn: Conn, sql: str, params: list[object]) -> str | None | psycopg.Error:
    try:
        row = conn.execute(f"SELECT ({sql})::text", params).fetchone()
    except psycopg.Error as e:
        return e
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _case_mapping(conn: Conn) -> str:
    row = conn.execute(
        "SELECT datlocprovider, datctype FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    provider = {"c": "libc", "b": "builtin", "i": "icu"}[row[0]]
    mapping = case_mapping(f"{provider}::{row[1]}")
    assert mapping is not None, f"the test database's ctype {row} has no case mapping here"
    return mapping


@pytest.mark.parametrize("overload", registry.OVERLOADS, ids=repr)
def test_overload_matches_postgres(conn: Conn, overload: registry.Overload) -> None:
    mismatches = []
    count = 0
    for args in _cases(overload):
        count += 1
        result = overload.result
        if result in (registry.ANYCOMPATIBLE, registry.ANYENUM, registry.ANYENUMARRAY):
            result = args[0].type  # the arguments' type
        elif result == registry.ANYARRAY:
            result = next(a.type for a in args if is_array(a.type))
        # a collated one under the database's case mapping, as the checker derives it
        case = _case_mapping(conn) if overload.collated else None
        node: Node = (
            Call(type=result, args=args, name=overload.name, overload=overload, case=case)
            if overload.form == "call"
            else Operator(type=overload.result, args=args, overload=overload, case=case)
        )
        renderer = Renderer(inline=False, enums=ENUMS)
        sql = renderer.render(node)
        expected = _postgres(conn, sql, renderer.params)
        ours = _ours(node)
        if isinstance(expected, psycopg.Error) or isinstance(ours, WhereRuntimeError):
            same = isinstance(expected, psycopg.Error) == isinstance(ours, WhereRuntimeError)
        elif ours is None or expected is None:
            same = ours is expected
        else:
            # our value as Postgres reads and prints it
            printed = _postgres(conn, f"%s::{renderer.type_sql(result)}", [ours])
            same = printed == expected
            ours = f"{ours} (Postgres prints {printed})"
        if not same:
            mismatches.append(f"{sql} {renderer.params}: postgres {expected!r}, pysync {ours!r}")
    assert count > 0
    assert not mismatches, f"{len(mismatches)} of {count} differ:\n" + "\n".join(mismatches[:20])


# Found by the test above: infinite intervals (Postgres 17) added to or subtracted from
# timestamps and intervals, and a timestamp difference beyond 64 bits of microseconds.
ROWS = [
    ("2024-02-29 12:00", "infinity", "294276-12-31 23:59:59", "4713-01-01 00:00 BC"),
    ("2024-02-29 12:00", "-infinity", "2000-01-01", "2000-01-02"),
    ("infinity", "infinity", "infinity", "2000-01-01"),
    ("-infinity", "infinity", "2000-01-01", "-infinity"),
]
CLAUSES = [
    "ts + iv > ts",
    "ts - iv < ts",
    "iv + ts > ts",
    "d + iv > ts",
    "d - iv < ts",
    "iv + iv > iv",
    "iv - iv > iv",
    "iv + '1 day' > iv",
    "'1 day' - iv > iv",
    "-iv < iv",
    "a - b > '1 day'",
]


@pytest.mark.parametrize("clause", CLAUSES)
def test_infinite_interval_arithmetic(database_url: str, clause: str) -> None:
    """Each row evaluated by pysync and by Postgres: the same answer, or both an error."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t (id int PRIMARY KEY, ts timestamp, iv interval, a timestamp, "
            "b timestamp, d date)"
        )
        for i, (ts, iv, a, b) in enumerate(ROWS):
            conn.execute(
                "INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s::timestamp::date)",
                (i, ts, iv, a, b, ts),
            )
        table = load_table(conn, "public", "t")
        assert table is not None
        names = [c.name for c in table.columns]
        evaluate = compile_where(clause, table, {}).bind(names)
        as_text = ", ".join(f"{n}::text" for n in names)
        for i in range(len(ROWS)):
            row = conn.execute(f"SELECT {as_text} FROM t WHERE id = %s", (i,)).fetchone()
            assert row is not None
            try:
                answer = conn.execute(f"SELECT ({clause}) FROM t WHERE id = %s", (i,)).fetchone()
                assert answer is not None
                expected: object = answer[0]
            except psycopg.Error:
                expected = "error"
            try:
                ours: object = evaluate(list(row))
            except WhereRuntimeError:
                ours = "error"
            assert ours == expected, (clause, ROWS[i])
