"""Transactions that change primary keys under a DEFERRABLE key: a client applying a
shape's entries in order ends equal to Postgres (rows may share a key until the
commit, so the delete + insert of each key change in WAL order would delete each
other's new rows)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from engine_runner import Conn, check_offsets, make, poll, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.shapes.consumer import LIVE, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition
from subquery_support import TaggedClient

COLUMNS = ["id", "v", "n"]
SHAPES: list[dict[str, Any]] = [
    {},
    {"where": "n < 50"},
    {"where": "id <= 6"},  # key changes move rows in and out
    {"replica": "full"},
    {"where": "v >= 'm'", "replica": "full"},
]
SUBQUERY = "id IN (SELECT k FROM chosen)"


@pytest.fixture
def table(conn: Conn) -> Conn:
    conn.execute(
        "CREATE TABLE t (id int, v text, n int, "
        "CONSTRAINT t_pkey PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    conn.execute("CREATE TABLE chosen (k int PRIMARY KEY)")
    conn.execute("INSERT INTO chosen SELECT g FROM generate_series(1, 12, 2) g")
    return conn


def apply(rows: dict[str, dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    """As a client applies messages, in order (a delete or update of a row it does not
    hold is an error)."""
    for entry in entries:
        if "key" not in entry:
            continue
        op, key = entry["headers"]["operation"], entry["key"]
        if op == "insert":
            assert key not in rows, f"insert of a row the client holds: {entry}"
            rows[key] = dict(entry["value"])
        elif op == "update":
            assert key in rows, f"update of a row the client does not hold: {entry}"
            rows[key].update(entry["value"])
        else:
            assert key in rows, f"delete of a row the client does not hold: {entry}"
            del rows[key]


def check(conn: Conn, live: ShapeConsumer, start: dict[str, dict[str, Any]] | None = None) -> None:
    assert not live.gone, live.reason
    check_offsets(live.log)
    where = live.definition.where
    if live.subquery is not None:
        client = TaggedClient()
        client.apply_all(read_all(live.log))
        got = client.rows
        where = SUBQUERY
    else:
        got = dict(start or {})
        apply(got, read_all(live.log))
    assert got == table_state(conn, "public", "t", COLUMNS, ["id"], where), live.definition


async def shapes(engine: Engine) -> list[ShapeConsumer]:
    made = [await make(engine, "t", **spec) for spec in SHAPES]
    tagged = await engine.shape(ShapeDefinition.create("t", where=SUBQUERY))
    await poll(lambda: tagged.state is LIVE or tagged.gone, 30, "the subquery shape")
    return [*made, tagged]


async def test_rotating_keys_by_one(engine: Engine, table: Conn) -> None:
    table.execute("INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
    live = await make(engine, "t")
    table.execute("UPDATE t SET id = id + 1")
    await quiesce(engine, table)
    check(table, live)
    assert table_state(table, "public", "t", ["id", "v"], ["id"]) == {
        '"public"."t"/"2"': {"id": "2", "v": "a"},
        '"public"."t"/"3"': {"id": "3", "v": "b"},
        '"public"."t"/"4"': {"id": "4", "v": "c"},
    }
    # Without a second use of a key, a key change stays a delete + insert pair.
    table.execute("UPDATE t SET id = 10 WHERE id = 4")
    await quiesce(engine, table)
    check(table, live)
    last = [e for e in read_all(live.log) if "key" in e][-2:]
    assert [e["headers"]["operation"] for e in last] == ["delete", "insert"]
    assert last[0]["headers"]["key_change_to"] == last[1]["key"]


async def test_row_passing_through_an_occupied_key(engine: Engine, table: Conn) -> None:
    table.execute("INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)")
    served = [await make(engine, "t", **spec) for spec in SHAPES]
    with table.transaction():
        table.execute("UPDATE t SET id = 2 WHERE id = 1")  # two rows hold 2
        table.execute("UPDATE t SET id = 5 WHERE id = 2 AND v = 'a'")  # one moves on
        table.execute("UPDATE t SET v = 'z' WHERE id = 2")  # the one from before
    await quiesce(engine, table)
    for live in served:
        check(table, live)


def statement(rng: random.Random, ids: list[int]) -> str:
    """One random statement of a transaction (``ids``: the keys now, kept up to date)."""
    kind = rng.choice(["permute", "permute", "value", "insert", "delete", "swap"])
    if kind == "permute" and len(ids) > 1:
        chosen = rng.sample(ids, rng.randint(2, len(ids)))
        target = chosen[:]
        rng.shuffle(target)
        cases = " ".join(f"WHEN {a} THEN {b}" for a, b in zip(chosen, target, strict=True))
        return f"UPDATE t SET id = CASE id {cases} END WHERE id IN ({', '.join(map(str, chosen))})"
    if kind == "swap" and len(ids) > 1:
        # Both rows share a key between the statements.
        a, b = rng.sample(ids, 2)
        return (
            f"UPDATE t SET id = {b}, n = n + 1000 WHERE id = {a}; "
            f"UPDATE t SET id = {a} WHERE id = {b} AND n < 1000; "
            "UPDATE t SET n = n - 1000 WHERE n >= 1000"
        )
    if kind == "value" and ids:
        return f"UPDATE t SET v = '{rng.choice('abmnxz')}', n = {rng.randint(0, 99)} WHERE id = {rng.choice(ids)}"
    if kind == "insert":
        new = max(ids, default=0) + rng.randint(1, 3)
        ids.append(new)
        return f"INSERT INTO t VALUES ({new}, '{rng.choice('abmnxz')}', {rng.randint(0, 99)})"
    if kind == "delete" and ids:
        gone = rng.choice(ids)
        ids.remove(gone)
        return f"DELETE FROM t WHERE id = {gone}"
    return "SELECT 1"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_key_permutations_under_a_deferred_key(
    engine: Engine, table: Conn, seed: int
) -> None:
    rng = random.Random(seed)
    for i in range(1, 11):
        table.execute(
            "INSERT INTO t VALUES (%s, %s, %s)", (i, rng.choice("abmnxz"), rng.randint(0, 99))
        )
    served = await shapes(engine)
    changes_only = await make(engine, "t", log_mode="changes_only")
    start = table_state(table, "public", "t", COLUMNS, ["id"])
    for _ in range(12):
        ids = [row[0] for row in table.execute("SELECT id FROM t").fetchall()]
        with table.transaction():
            for _ in range(rng.randint(1, 4)):
                table.execute(statement(rng, ids))
        await quiesce(engine, table)
        await poll(
            lambda: all(s.subquery is None or s.subquery.move is None for s in served),
            30,
            "move-ins",
        )
        for live in served:
            check(table, live)
        check(table, changes_only, start)


async def test_rotation_held_while_a_move_in_query_runs(
    engine: Engine, table: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pysync.shapes.subqueries.manager as subqueries
    from pysync.shapes.snapshotter import query_move_in as real

    release = asyncio.Event()
    queried: list[int] = []

    async def paused(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        queried.append(1)
        await release.wait()
        return result

    monkeypatch.setattr(subqueries, "query_move_in", paused)
    table.execute("INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 10) g")
    tagged = await engine.shape(ShapeDefinition.create("t", where=SUBQUERY))
    await poll(lambda: tagged.state is LIVE or tagged.gone, 30, "the subquery shape")
    table.execute("INSERT INTO chosen VALUES (2)")  # a move-in: the shape holds changes
    await poll(lambda: bool(queried), 30, "the move-in query")
    table.execute(
        "UPDATE t SET id = CASE id WHEN 1 THEN 3 WHEN 3 THEN 5 WHEN 5 THEN 1 END "
        "WHERE id IN (1, 3, 5)"
    )
    await quiesce(engine, table)
    release.set()
    await poll(lambda: tagged.subquery is not None and tagged.subquery.move is None, 30, "splice")
    check(table, tagged)
