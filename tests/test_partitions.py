"""Partitioned tables (issue 21): a shape on the partitioned table gets every
partition's rows, present and future, keyed as the partitioned table's; a shape on one
partition its own. Rows moving between partitions, partitions attached, detached,
created and truncated, subqueries over partitioned tables, publication and replica
identity, and inheritance parents (refused), against the real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine_runner import Conn, check_offsets, materialise, poll, quiesce, read_all, table_state
from pysync.engine import Engine
from pysync.shapes.consumer import LIVE, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition, ShapeError

COLUMNS = ["id", "k", "v"]
PK = ["id", "k"]


@pytest.fixture
def items(conn: Conn) -> Conn:
    """``items`` partitioned by range of ``k`` into p0 (0-9), p1 (10-19) and p2 (20-29)."""
    conn.execute(
        "CREATE TABLE items (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)"
    )
    for i in range(3):
        conn.execute(
            f"CREATE TABLE p{i} PARTITION OF items FOR VALUES FROM ({i * 10}) TO ({i * 10 + 10})"
        )
    conn.execute("INSERT INTO items VALUES (1, 1, 'a'), (2, 12, 'b'), (3, 25, 'c')")
    return conn


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    """An engine whose schema check runs often (detached partitions are found by it)."""
    engine = Engine(database_url, flush_interval=0.02, schema_check_interval=0.2)
    await engine.start()
    yield engine
    await engine.stop()


async def live(engine: Engine, table: str, **kwargs: Any) -> ShapeConsumer:
    """A shape whose snapshot is complete (shapes on partitioned tables are not recorded:
    they are not waited for as recorded)."""
    consumer = await engine.shape(ShapeDefinition.create(table, **kwargs))
    assert await consumer.wait(None, 30, until_snapshot=True), "snapshot timed out"
    await poll(lambda: consumer.state is LIVE or consumer.gone, 30, "the snapshot")
    assert not consumer.gone, consumer.reason
    return consumer


def rows(consumer: ShapeConsumer) -> dict[str, dict[str, Any]]:
    check_offsets(consumer.log)
    return materialise(read_all(consumer.log))


def expected(conn: Conn, table: str, where: str | None = None) -> dict[str, dict[str, Any]]:
    return table_state(conn, "public", table, COLUMNS, PK, where)


def strict(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """As a client applies messages, in order: an insert of a key it holds, an update or
    delete of one it does not, is an error."""
    got: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if "key" not in entry:
            continue
        op, key = entry["headers"]["operation"], entry["key"]
        if op == "insert":
            assert key not in got, f"insert of a row the client holds: {entry}"
            got[key] = dict(entry["value"])
        elif op == "update":
            assert key in got, f"update of a row the client does not hold: {entry}"
            got[key].update(entry["value"])
        else:
            assert key in got, f"delete of a row the client does not hold: {entry}"
            del got[key]
    return got


def ops(consumer: ShapeConsumer, skip: int) -> list[tuple[str, str]]:
    """The operations of the shape's entries after its first ``skip``."""
    entries = read_all(consumer.log)[skip:]
    return [(e["headers"]["operation"], e["key"]) for e in entries if "key" in e]


async def test_root_and_leaf_shapes(engine: Engine, items: Conn) -> None:
    root = await live(engine, "items")
    leaf = await live(engine, "p1")
    assert rows(root) == expected(items, "items")
    assert set(rows(root)) == {
        '"public"."items"/"1"/"1"',
        '"public"."items"/"2"/"12"',
        '"public"."items"/"3"/"25"',
    }
    assert rows(leaf) == expected(items, "p1") and len(rows(leaf)) == 1
    items.execute("INSERT INTO items VALUES (4, 4, 'd'), (5, 15, 'e'), (6, 29, 'f')")
    items.execute("UPDATE items SET v = 'B' WHERE id = 2")
    items.execute("DELETE FROM p2 WHERE id = 3")
    await quiesce(engine, items)
    assert rows(root) == expected(items, "items")
    assert '"public"."items"/"6"/"29"' in rows(root)
    assert rows(leaf) == expected(items, "p1")
    assert set(rows(leaf)) == {'"public"."p1"/"2"/"12"', '"public"."p1"/"5"/"15"'}
    # every partition is REPLICA IDENTITY FULL: setting it on items does not reach them
    identities = items.execute(
        "SELECT relname, relreplident FROM pg_class WHERE relname IN ('items', 'p0', 'p1', 'p2')"
    ).fetchall()
    assert dict(identities) == {"items": "f", "p0": "f", "p1": "f", "p2": "f"}
    # the partitioned table and the partition with a shape are in the publication
    published = items.execute(
        "SELECT prrelid::regclass::text FROM pg_publication_rel ORDER BY 1"
    ).fetchall()
    assert published == [("items",), ("p1",)]


async def test_a_row_moving_between_partitions(engine: Engine, items: Conn) -> None:
    """A move is a delete from one partition and an insert into another in the WAL.
    Postgres makes every unique key of a partitioned table hold the partition key, so
    the row's key changes: the shape on ``items`` sees a key change (delete + insert,
    as for an update of a plain table's key), the partitions' shapes a delete and an
    insert."""
    root, full = await live(engine, "items"), await live(engine, "items", replica="full")
    p0, p1 = await live(engine, "p0"), await live(engine, "p1")
    before = [len(read_all(c.log)) for c in (root, full, p0, p1)]
    items.execute("UPDATE items SET k = 11 WHERE id = 1")
    await quiesce(engine, items)
    got = [ops(c, n) for c, n in zip((root, full, p0, p1), before, strict=True)]
    change = [("delete", '"public"."items"/"1"/"1"'), ("insert", '"public"."items"/"1"/"11"')]
    assert got[:2] == [change, change]
    assert got[2:] == [
        [("delete", '"public"."p0"/"1"/"1"')],
        [("insert", '"public"."p1"/"1"/"11"')],
    ]
    for consumer, table in ((root, "items"), (full, "items"), (p0, "p0"), (p1, "p1")):
        assert strict(read_all(consumer.log)) == expected(items, table)


async def test_moves_sharing_a_deferred_key_are_folded(engine: Engine, conn: Conn) -> None:
    """Under a DEFERRABLE key, rows moving between partitions may share a key until the
    commit: the shape on the partitioned table gets each key's net change (else a
    client applying the WAL's order deletes a row another move just put there)."""
    conn.execute(
        "CREATE TABLE d (id int, k int, v text, CONSTRAINT d_pk PRIMARY KEY (id, k) "
        "DEFERRABLE INITIALLY DEFERRED) PARTITION BY RANGE (k)"
    )
    for i in range(4):
        conn.execute(
            f"CREATE TABLE d{i} PARTITION OF d FOR VALUES FROM ({i * 10}) TO ({i * 10 + 10})"
        )
    conn.execute("INSERT INTO d VALUES (1, 1, 'a'), (1, 11, 'b'), (1, 21, 'c'), (2, 2, 'x')")
    root = await live(engine, "d")
    conn.execute("UPDATE d SET k = k + 10 WHERE id = 1")
    await quiesce(engine, conn)
    assert not root.gone, root.reason
    got = strict(read_all(root.log))
    assert got == table_state(conn, "public", "d", COLUMNS, PK)
    assert got['"public"."d"/"1"/"11"']["v"] == "a"


async def test_inheritance_parent_is_refused(engine: Engine, conn: Conn) -> None:
    conn.execute("CREATE TABLE parent (id int PRIMARY KEY, v text)")
    conn.execute("CREATE TABLE child (extra int) INHERITS (parent)")
    with pytest.raises(ShapeError) as raised:
        await engine.shape(ShapeDefinition.create("parent"))
    assert "inheritance children (INHERITS)" in str(raised.value)
    child = await live(engine, "child")
    assert rows(child) == {}
