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
from http_support import Client, make_api
from pysync.engine import Engine
from pysync.postgres.publication import NotPublished, Publisher
from pysync.shapes.consumer import LIVE, ShapeConsumer
from pysync.shapes.definition import ShapeDefinition, ShapeError
from pysync.uninstall import plan
from subquery_support import TaggedClient

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


async def test_new_partition_flows_to_the_root_shape(engine: Engine, items: Conn) -> None:
    root = await live(engine, "items")
    items.execute("CREATE TABLE p3 PARTITION OF items FOR VALUES FROM (30) TO (40)")
    items.execute("INSERT INTO items VALUES (7, 33, 'g')")
    items.execute("UPDATE items SET v = 'G' WHERE id = 7")
    await quiesce(engine, items)
    # the new partition is made FULL (restored as a table that lost it), then its
    # updates carry whole rows; the shape on items goes on meanwhile
    await poll(
        lambda: "p3" in " ".join(engine.warnings) and "restored FULL" in " ".join(engine.warnings),
        30,
        "FULL on the new partition",
    )
    items.execute("UPDATE items SET v = 'H' WHERE id = 7")
    # a schema check finds the partition created, not attached: the shape stays
    await engine.schema_check.check()
    await quiesce(engine, items)
    assert not root.gone, root.reason
    assert rows(root) == expected(items, "items")
    assert rows(root)['"public"."items"/"7"/"33"']["v"] == "H"


async def test_a_partition_seen_before_the_root_shape(engine: Engine, items: Conn) -> None:
    """The stream described p1 before any shape was on items: it is looked up when
    one is made."""
    leaf = await live(engine, "p1")
    items.execute("INSERT INTO p1 VALUES (8, 18, 'h')")
    await quiesce(engine, items)
    root = await live(engine, "items")
    items.execute("INSERT INTO p1 VALUES (9, 19, 'i')")
    await quiesce(engine, items)
    assert rows(root) == expected(items, "items")
    assert '"public"."items"/"9"/"19"' in rows(root)
    assert rows(leaf) == expected(items, "p1")


async def test_detach_invalidates_the_root_shape(database_url: str, items: Conn) -> None:
    """With a shape on the partition, the partition stays published after the detach:
    its next Relation message tells (no schema check here)."""
    engine = Engine(database_url, flush_interval=0.02, schema_check_interval=0)
    await engine.start()
    try:
        await _detach(engine, items)
    finally:
        await engine.stop()


async def _detach(engine: Engine, items: Conn) -> None:
    root = await live(engine, "items")
    leaf = await live(engine, "p2")
    items.execute("ALTER TABLE items DETACH PARTITION p2")
    # the partition's own shape goes on: its rows are where they were
    items.execute("INSERT INTO p2 VALUES (10, 22, 'j')")
    await quiesce(engine, items)
    await poll(lambda: root.gone, 30, "the shape on items to go")
    assert root.reason == "partition detached"
    assert not leaf.gone, leaf.reason
    assert rows(leaf) == expected(items, "p2")
    again = await live(engine, "items")
    assert rows(again) == expected(items, "items")
    assert all("/25" not in key for key in rows(again))
    items.execute("INSERT INTO p2 VALUES (11, 23, 'k')")  # not a partition of items now
    items.execute("INSERT INTO items VALUES (12, 2, 'l')")
    await quiesce(engine, items)
    assert rows(again) == expected(items, "items")
    assert not again.gone, again.reason


async def test_detach_seen_only_by_the_schema_check(engine: Engine, items: Conn) -> None:
    """No shape on the partition: nothing of it is replicated after the detach, the
    schema check finds it gone from the partitioned table."""
    root = await live(engine, "items")
    items.execute("ALTER TABLE items DETACH PARTITION p0")
    await poll(lambda: root.gone, 30, "the schema check to drop the shape")
    assert root.reason == "partition detached or dropped"
    again = await live(engine, "items")
    assert rows(again) == expected(items, "items")
    assert len(rows(again)) == 2


async def test_attaching_a_table_with_rows_invalidates(engine: Engine, items: Conn) -> None:
    root = await live(engine, "items")
    items.execute("CREATE TABLE p3 (id int, k int, v text, PRIMARY KEY (id, k))")
    items.execute("INSERT INTO p3 VALUES (20, 35, 'old')")
    items.execute("ALTER TABLE items ATTACH PARTITION p3 FOR VALUES FROM (30) TO (40)")
    await poll(lambda: root.gone, 30, "the schema check to drop the shape")
    assert root.reason == "partition attached"
    again = await live(engine, "items")
    assert '"public"."items"/"20"/"35"' in rows(again)
    items.execute("INSERT INTO items VALUES (21, 36, 'new')")
    await quiesce(engine, items)
    assert rows(again) == expected(items, "items")


async def test_truncating_a_partition(engine: Engine, items: Conn) -> None:
    root, p0, p1 = await live(engine, "items"), await live(engine, "p0"), await live(engine, "p1")
    items.execute("TRUNCATE p1")
    await quiesce(engine, items)
    assert root.gone and root.reason == "table truncated"
    assert p1.gone and not p0.gone
    again = await live(engine, "items")
    assert rows(again) == expected(items, "items")


async def test_where_on_the_partition_key(engine: Engine, items: Conn) -> None:
    shape = await live(engine, "items", where="k >= 10 AND k < 25")
    items.execute("INSERT INTO items VALUES (13, 13, 'm'), (14, 3, 'n')")
    items.execute("UPDATE items SET k = 24 WHERE id = 2")  # moves p1 -> p2, stays in
    items.execute("UPDATE items SET k = 5 WHERE id = 13")  # moves out
    await quiesce(engine, items)
    assert strict(read_all(shape.log)) == expected(items, "items", "k >= 10 AND k < 25")
    assert set(strict(read_all(shape.log))) == {'"public"."items"/"2"/"24"'}


async def test_subquery_over_a_partitioned_table(engine: Engine, items: Conn) -> None:
    items.execute("CREATE TABLE tags (id int PRIMARY KEY, tag text)")
    items.execute("INSERT INTO tags VALUES (1, 'x'), (2, 'y'), (3, 'z'), (4, 'w')")
    where = "id IN (SELECT id FROM items WHERE v >= 'b')"
    shape = await live(engine, "tags", where=where)
    client = TaggedClient()
    client.apply_all(read_all(shape.log))
    want = table_state(items, "public", "tags", ["id", "tag"], ["id"], where)
    assert client.rows == want and len(want) == 2
    items.execute("INSERT INTO items VALUES (4, 27, 'd')")  # into p2: tag 4 moves in
    items.execute("UPDATE items SET k = 21 WHERE id = 2")  # p1 -> p2: stays
    items.execute("DELETE FROM items WHERE id = 3")  # tag 3 moves out
    await quiesce(engine, items)
    await poll(lambda: shape.subquery is not None and shape.subquery.phase.name == "STEADY", 30)
    client = TaggedClient()
    client.apply_all(read_all(shape.log))
    want = table_state(items, "public", "tags", ["id", "tag"], ["id"], where)
    assert client.rows == want
    assert set(want) == {'"public"."tags"/"2"', '"public"."tags"/"4"'}


async def test_root_shape_schema_change(engine: Engine, items: Conn) -> None:
    root = await live(engine, "items")
    items.execute("ALTER TABLE items ADD COLUMN w int")
    items.execute("INSERT INTO items VALUES (15, 15, 'o', 1)")
    await quiesce(engine, items)
    assert root.gone and root.reason == "schema changed"


async def test_manual_publishing_names_each_partition(engine: Engine, items: Conn) -> None:
    items.execute("CREATE PUBLICATION manualpub")
    publisher = Publisher(engine.connections, "manualpub", manual=True)
    with pytest.raises(NotPublished) as raised:
        await publisher.publish("public", "items")
    assert str(raised.value).endswith(
        'ALTER TABLE "public"."items" REPLICA IDENTITY FULL; '
        'ALTER TABLE "public"."p0" REPLICA IDENTITY FULL; '
        'ALTER TABLE "public"."p1" REPLICA IDENTITY FULL; '
        'ALTER TABLE "public"."p2" REPLICA IDENTITY FULL; '
        'ALTER PUBLICATION "manualpub" ADD TABLE "public"."items";'
    )
    items.execute("ALTER PUBLICATION manualpub ADD TABLE items")
    items.execute("ALTER TABLE items REPLICA IDENTITY FULL")
    items.execute("ALTER TABLE p0 REPLICA IDENTITY FULL")
    with pytest.raises(NotPublished) as raised:
        await publisher.publish("public", "items")
    assert raised.value.message == (
        'Database table "public.items" is partitioned and its partitions "public.p1", '
        '"public.p2" do not have their replica identity set to FULL'
    )
    items.execute("ALTER TABLE p1 REPLICA IDENTITY FULL")
    items.execute("ALTER TABLE p2 REPLICA IDENTITY FULL")
    await publisher.publish("public", "items")


async def test_http_inheritance_400_and_a_subset_of_a_partitioned_table(
    engine: Engine, items: Conn
) -> None:
    items.execute("CREATE TABLE parent (id int PRIMARY KEY)")
    items.execute("CREATE TABLE child () INHERITS (parent)")
    client = Client(make_api(engine))
    try:
        refused = await client.shape(table="parent", offset="-1")
        assert refused.status_code == 400, refused.text
        assert refused.json()["errors"] == {
            "table": [
                'Table "public"."parent" has inheritance children (INHERITS): pysync syncs '
                "partitioned tables (PARTITION BY) but not inheritance parents, whose children "
                "may add columns or have other parents. Sync each child table instead, or make "
                "the table partitioned"
            ]
        }
        handle, offset, _ = await client.sync(table="items", log="changes_only")
        subset = await client.shape(
            table="items", log="changes_only", handle=handle, offset=offset, subset__where="k >= 10"
        )
        assert subset.status_code == 200, subset.text
        body = subset.json()
        messages = body["data"] if isinstance(body, dict) else body
        assert sorted(m["key"] for m in messages if "key" in m) == [
            '"public"."items"/"2"/"12"',
            '"public"."items"/"3"/"25"',
        ]
    finally:
        await client.aclose()


async def test_uninstall_restores_each_partitions_identity(engine: Engine, items: Conn) -> None:
    await live(engine, "items")
    todo = plan(items, "pysync", engine.slot)
    restores = sorted(
        s.as_string(items) for s in todo.changes if "REPLICA IDENTITY" in s.as_string(items)
    )
    assert restores == [
        f'ALTER TABLE "public"."{t}" REPLICA IDENTITY DEFAULT' for t in ("items", "p0", "p1", "p2")
    ]


async def test_nested_partitions(engine: Engine, conn: Conn) -> None:
    """A partition that is itself partitioned: its partitions' changes reach the shapes
    on both partitioned tables above them."""
    conn.execute(
        "CREATE TABLE n (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)"
    )
    conn.execute(
        "CREATE TABLE n_low PARTITION OF n FOR VALUES FROM (0) TO (10) PARTITION BY RANGE (k)"
    )
    conn.execute("CREATE TABLE n_low_a PARTITION OF n_low FOR VALUES FROM (0) TO (5)")
    conn.execute("CREATE TABLE n_low_b PARTITION OF n_low FOR VALUES FROM (5) TO (10)")
    conn.execute("CREATE TABLE n_high PARTITION OF n FOR VALUES FROM (10) TO (20)")
    conn.execute("INSERT INTO n VALUES (1, 1, 'a'), (2, 7, 'b'), (3, 15, 'c')")
    top, low = await live(engine, "n"), await live(engine, "n_low")
    conn.execute("INSERT INTO n VALUES (4, 3, 'd'), (5, 12, 'e')")
    conn.execute("UPDATE n SET k = 8 WHERE id = 1")  # n_low_a -> n_low_b
    conn.execute("UPDATE n SET k = 9 WHERE id = 3")  # n_high -> n_low_b
    await quiesce(engine, conn)
    assert strict(read_all(top.log)) == table_state(conn, "public", "n", COLUMNS, PK)
    assert strict(read_all(low.log)) == table_state(conn, "public", "n_low", COLUMNS, PK)
    assert set(strict(read_all(low.log))) == {
        '"public"."n_low"/"1"/"8"',
        '"public"."n_low"/"2"/"7"',
        '"public"."n_low"/"3"/"9"',
        '"public"."n_low"/"4"/"3"',
    }
