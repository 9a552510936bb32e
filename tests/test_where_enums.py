"""Enums ordered as Postgres orders them (``pg_enum.enumsortorder``, not the label's text),
arrays of enums, and coalesce/greatest/least of enums, arrays and booleans: every clause
evaluated by pysync and by Postgres on the same rows (NULLs, labels added BEFORE an
existing one, empty arrays, arrays with NULL elements), with the same answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engine_runner import make, materialise, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.postgres.catalog import Table, load_table
from pysync.shapes.drift import drift
from pysync.where import WhereError, WhereRuntimeError, compile_where
from where_support import assert_same_answers

Conn = psycopg.Connection[tuple[Any, ...]]
ODD_TYPE = 'other."50% ""off"""'
"""An enum type whose name needs quoting and holds psycopg's placeholder marker."""


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        # 'meh' and 'blah' added BEFORE existing labels: their order is not their OIDs'
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'")
        conn.execute("ALTER TYPE mood ADD VALUE 'blah' BEFORE 'sad'")
        conn.execute("CREATE DOMAIN dmood AS mood")
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TYPE other.\"Mood\" AS ENUM ('z', 'a')")
        # a name with % and a quote: the SQL pysync writes quotes and escapes it
        conn.execute(f"CREATE TYPE {ODD_TYPE} AS ENUM ('y', 'x')")
        conn.execute(
            'CREATE TABLE t (id int PRIMARY KEY, m mood, m2 mood, dm dmood, o other."Mood", '
            "ms mood[], ms2 mood[], b bool, b2 bool, ai int4[], ai2 int4[], s text, "
            f"p {ODD_TYPE})"
        )
        yield conn


def table(conn: Conn) -> Table:
    found = load_table(conn, "public", "t")
    assert found is not None
    return found


def test_catalog_loads_enum_order(conn: Conn) -> None:
    columns = {c.name: c for c in table(conn).columns}
    labels = ("blah", "sad", "meh", "ok", "happy")
    for name in ("m", "dm", "ms"):
        assert columns[name].enum_labels == labels
        assert columns[name].enum_type == "public.mood"
    assert columns["o"].enum_type == 'other."Mood"'
    assert columns["o"].enum_labels == ("z", "a")
    assert columns["p"].enum_type == ODD_TYPE
    assert columns["b"].enum_labels == ()
    assert columns["b"].enum_type == ""


MOODS = [None, "blah", "sad", "meh", "ok", "happy"]
MOOD_ARRAYS = [
    None,
    "{}",
    "{NULL}",
    "{ok,NULL}",
    "{meh,sad}",
    "{happy}",
    "{blah,ok}",
    "{{sad},{ok}}",
    "{sad,meh}",
]
BOOLS = [None, "t", "f"]
INT_ARRAYS = [None, "{}", "{1,NULL}", "{1,2}", "{{1},{2}}", "{2}", "{NULL}", "{1}"]


def _rows() -> list[tuple[object, ...]]:
    """Every value of each column meets several of the others' (co-prime cycles)."""
    rows: list[tuple[object, ...]] = []
    for i in range(72):
        rows.append(
            (
                i,
                MOODS[i % 6],
                MOODS[(i * 5 + i // 6) % 6],
                MOODS[(i + 2) % 6],
                ("z", "a", None)[i % 3],
                MOOD_ARRAYS[i % 9],
                MOOD_ARRAYS[(i * 4 + 3) % 9],
                BOOLS[i % 3],
                BOOLS[(i // 3) % 3],
                INT_ARRAYS[i % 8],
                INT_ARRAYS[(i * 3 + 5) % 8],
                ("a", None, "zz")[i % 3],
                ("x", "y", None, "y")[i % 4],
            )
        )
    return rows


@pytest.fixture
def rows(conn: Conn) -> tuple[Table, list[list[str | None]]]:
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO t VALUES ({', '.join(['%s'] * 13)})", _rows())
    t = table(conn)
    # every value in its text output, as pgoutput sends it (bool as t/f)
    cols = ", ".join(
        f"CASE WHEN {c.name} THEN 't' WHEN NOT {c.name} THEN 'f' END"
        if c.type_name == "bool"
        else f"{c.name}::text"
        for c in t.columns
    )
    texts = [list(r) for r in conn.execute(f"SELECT {cols} FROM t ORDER BY t.id").fetchall()]
    return t, texts


CLAUSES = [
    # enums: by the labels' order ('blah' < 'sad' < 'meh' < 'ok' < 'happy'), not text
    "m < 'ok'",
    "m <= 'meh'",
    "m > m2",
    "m >= m2",
    "m <> m2",
    "m BETWEEN 'sad' AND 'ok'",
    "m BETWEEN SYMMETRIC 'ok' AND 'blah'",
    "m < 'ok'::mood",
    "m > $1",
    "m IN ('meh', 'happy')",
    "m NOT IN ('meh', NULL)",
    "m IN (m2, 'ok')",
    "m IS DISTINCT FROM m2",
    "m IS NOT DISTINCT FROM 'blah'",
    "m = ANY(ms)",
    "m < ANY(ms)",
    "m >= ALL(ms)",
    "m = ANY('{meh,blah}')",
    "'meh' = ANY(ms)",
    "o < 'z'",
    "o >= 'a'",
    "p < 'x'",
    "p IN ('x', NULL)",
    "greatest(p, 'y') = p",
    "dm::text = 'ok'",
    "m::text < 'm'",
    "m::text || 'x' = 'okx'",
    "concat(m, '!', o) = 'meh!z'",
    # text to an enum: the label's input function, an error on a row without a label
    "coalesce(s, 'ok')::mood = 'ok'",
    "m::text::mood = m",
    "(m::text)::mood < 'ok'",
    "concat(m, '')::mood >= 'meh'",
    "CAST(coalesce(s, 'ok') AS public.mood) IS NOT NULL",
    "'{ok,sad}'::text[]::mood[] @> ms",
    "ARRAY[m::text, 'ok']::mood[] = ms",
    # coalesce, greatest, least of enums
    "coalesce(m, m2) < 'ok'",
    "coalesce(m, 'meh') = 'meh'",
    "coalesce(m, m2, 'blah') > 'sad'",
    "coalesce(dm, m) = 'meh'",
    "greatest(m, m2) = 'ok'",
    "greatest(m, m2) IS NULL",
    "least(m, m2, 'meh') = 'blah'",
    "least(m, 'happy') > 'sad'",
    "greatest(m, NULL) IS NULL",
    "greatest(dm, m) > 'sad'",
    "greatest(m, m2) = ANY(ms)",
    # arrays of enums
    "ms = ms2",
    "ms <> '{}'",
    "ms = '{ok,NULL}'",
    "ms @> ms2",
    "ms <@ '{sad,meh,ok}'",
    "ms && ms2",
    "ms && ARRAY['meh'::mood]",
    "ms @> ARRAY[m]",
    "ms = ARRAY[m, m2]",
    "ARRAY[m, m2] <@ ms",
    "ms < ms2",
    "ms >= '{meh}'",
    "ms[1] < 'ok'",
    "ms[1] = m",
    "ms || m = ms2",
    "coalesce(ms, '{}') = '{}'",
    "least(ms, ms2) = ms",
    "greatest(ms, ms2) = '{happy}'",
    "greatest(ms, '{sad}', ms2) > '{ok}'",
    # booleans: false < true
    "b < b2",
    "b >= true",
    "greatest(b, b2)",
    "least(b, b2) IS NULL",
    "least(b, b2, true)",
    # arrays: element by element, NULL above any value, then the shorter first
    "ai < ai2",
    "ai >= '{1}'",
    "ai <= '{1,NULL}'",
    "greatest(ai, ai2) = ai",
    "least(ai, ai2, '{1}') = '{1}'",
    "greatest(ai, '{1,NULL}') = '{1,NULL}'",
    "greatest(ai, ai2) > '{1}'",
    "least(ai, '{{1},{2}}') = ai",
]
PARAMS = {1: "meh"}


@pytest.mark.parametrize("clause", CLAUSES)
def test_same_answers_as_postgres(
    conn: Conn, rows: tuple[Table, list[list[str | None]]], clause: str
) -> None:
    assert_same_answers(conn, *rows, clause, PARAMS)


REFUSED = [
    ("m < o", 'operator does not exist: mood < other."Mood"', "Could not select an operator"),
    ("m = 'glad'", 'invalid input value for enum mood: "glad"', None),
    ("ms @> '{sad,glad}'", 'invalid input value for enum mood: "glad"', None),
    ("ms @> ARRAY['ok']", "operator does not exist: mood[] @> text[]", "cannot use text as mood"),
    (
        "greatest(m, o) IS NULL",
        'GREATEST could not convert type other."Mood" to mood',
        "GREATEST types mood and Mood cannot be matched",
    ),
    ("m < s", "operator does not exist: mood < text", "Could not select an operator"),
    ("m::int4 = 1", "cannot cast type mood to integer", "unknown cast"),
    ("1::mood = m", "cannot cast type integer to mood", "unknown cast"),
    ("b::mood = m", "cannot cast type boolean to mood", "unknown cast"),
]


@pytest.mark.parametrize(("clause", "theirs", "ours"), REFUSED)
def test_refused_as_postgres_refuses(
    conn: Conn, rows: tuple[Table, list[list[str | None]]], clause: str, theirs: str, ours: str
) -> None:
    """A clear 400 (Postgres' words where they fit), never rows on a guess."""
    with pytest.raises(psycopg.Error, match=re.escape(theirs)):
        conn.execute(f"SELECT {clause} FROM t")
    with pytest.raises(WhereError) as info:
        compile_where(clause, rows[0])
    assert (ours or theirs) in info.value.reason


def test_a_label_added_later_is_never_guessed(conn: Conn) -> None:
    """A clause compiled before ``ADD VALUE ... BEFORE`` raises on a row holding the new
    label where it must order it (the shape resyncs:
    test_enum_label_added_after_the_shape_resyncs_it), and answers as before for every
    other label: adding one never reorders the others. Equality needs no order: the new
    label equals none the clause knows. Compiled again, it knows the new order."""
    before = table(conn)
    where = compile_where("m < 'ok' OR ms @> '{sad}' OR m::text = 'x'", before)
    evaluate = where.bind([c.name for c in before.columns])
    conn.execute("ALTER TYPE mood ADD VALUE 'fine' BEFORE 'meh'")
    row: list[str | None] = [None] * len(before.columns)
    names = [c.name for c in before.columns]
    row[names.index("id")] = "1"
    new = list(row)
    new[names.index("m")] = "fine"
    with pytest.raises(WhereRuntimeError, match='order of mood label "fine" is not known'):
        evaluate(new)
    contains = list(row)
    contains[names.index("ms")] = "{ok,fine}"
    assert evaluate(contains) is None  # NULL < 'ok' OR false OR NULL = 'x'
    equal = compile_where("m = 'ok' OR m IN ('sad', 'meh') OR ms @> '{ok}'", before)
    new[names.index("ms")] = "{}"
    assert equal.bind(names)(new) is False
    assert equal.bind(names)(contains) is True
    old = list(row)
    old[names.index("m")] = "meh"
    assert evaluate(old) is True
    # as text, a label needs no order: the new one is no reason to fail
    new[names.index("m")] = "fine"
    as_text = compile_where("m::text = 'fine' AND concat(m, '') = 'fine'", before)
    assert as_text.bind(names)(new) is True
    after = table(conn)
    assert after != before
    again = compile_where("m < 'ok' OR ms @> '{sad}' OR m::text = 'x'", after)
    new[names.index("m")] = "fine"
    assert again.bind(names)(new) is True
    assert conn.execute("SELECT 'fine'::mood < 'ok'").fetchone() == (True,)


async def test_enum_label_added_after_the_shape_resyncs_it(engine: Engine, conn: Conn) -> None:
    """A shape ordering an enum, built before ``ADD VALUE ... BEFORE``: rows with the old
    labels are followed as before (their order is unchanged); the first row with the new
    label invalidates it (its clients refetch) instead of being kept or dropped on a
    guess, and the shape made again knows the new order."""
    conn.execute("CREATE TABLE e (id int PRIMARY KEY, m mood, ms mood[])")
    conn.execute("INSERT INTO e VALUES (1, 'sad', '{}'), (2, 'ok', '{ok}'), (3, 'happy', NULL)")
    where = "m < 'ok' OR ms @> '{meh}'"
    columns = ["id", "m", "ms"]
    shape = await make(engine, "e", where=where)
    whole = await make(engine, "e")
    equality = "m = 'ok' OR m <> 'sad' OR ms @> '{meh}'"
    equal = await make(engine, "e", where=equality)
    conn.execute("ALTER TYPE mood ADD VALUE 'fine' BEFORE 'meh'")
    conn.execute("INSERT INTO e VALUES (4, 'meh', '{}'), (5, 'happy', '{meh,ok}')")
    await quiesce(engine, conn)
    assert not shape.gone, shape.reason
    assert materialise(read_all(shape.log)) == table_state(
        conn, "public", "e", columns, ["id"], where
    )
    conn.execute("INSERT INTO e VALUES (6, 'fine', NULL)")
    await quiesce(engine, conn)
    assert shape.gone and "WhereRuntimeError" in shape.reason
    again = await make(engine, "e", where=where)
    conn.execute("INSERT INTO e VALUES (7, 'fine', '{fine}'), (8, 'happy', '{fine,meh}')")
    conn.execute("UPDATE e SET m = 'fine' WHERE id = 3")
    await quiesce(engine, conn)
    # Equality needs no order: a shape of it lives on through the new label.
    assert not equal.gone, equal.reason
    for live, clause in ((again, where), (whole, None), (equal, equality)):
        assert not live.gone, live.reason
        expected = table_state(conn, "public", "e", columns, ["id"], clause)
        assert materialise(read_all(live.log)) == expected
    assert set(materialise(read_all(again.log))) == {
        f'"public"."e"/"{i}"' for i in (1, 3, 4, 5, 6, 7, 8)
    }


def test_the_schema_check_sees_labels_and_types_renamed(conn: Conn) -> None:
    """What ``drift`` makes of enum changes: a label added changes nothing a shape
    holds; a label or type renamed ends the shapes reading the column."""
    before = table(conn)
    conn.execute("ALTER TYPE mood ADD VALUE 'new' AFTER 'happy'")
    added = table(conn)
    assert added != before
    assert drift(before, added, {"id", "m", "ms", "dm"}, every_column=False) is None
    conn.execute("ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'")
    renamed = table(conn)
    for column in ("m", "ms", "dm"):
        reason = drift(before, renamed, {"id", column}, every_column=False)
        assert reason == "an enum label of a column it reads was renamed"
    assert drift(before, renamed, {"id", "s", "o"}, every_column=False) is None
    conn.execute('ALTER TYPE other."Mood" RENAME TO calm')
    reason = drift(renamed, table(conn), {"id", "o"}, every_column=False)
    assert reason == "the enum type of a column it reads was renamed"
