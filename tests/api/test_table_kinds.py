"""Tables whose rows live in other tables: a partitioned table or an inheritance parent.

pgoutput reports a change of a partition (or of an inheriting child) under the child's
own name. A partitioned table is served with every partition's rows (shapes/partitions.py
maps a partition to its ancestors); an inheritance parent is a 400 naming the table (as a
shape's table and as a subquery's), left unpublished; shapes on each partition work."""

from __future__ import annotations

from http_support import Client, Conn, assert_invalid, data
from pysync.engine import Engine

SCHEMA = """
CREATE TABLE parted (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (100) TO (200);
INSERT INTO parted VALUES (1, 5), (2, 150);
CREATE TABLE parent (id int PRIMARY KEY, v int);
CREATE TABLE child () INHERITS (parent);
INSERT INTO child VALUES (1, 1);
CREATE TABLE todos (id int PRIMARY KEY, ref int);
"""


def refusal(name: str) -> dict[str, list[str]]:
    return {
        "table": [
            f'Table "public"."{name}" has inheritance children (INHERITS): pysync syncs '
            "partitioned tables (PARTITION BY) but not inheritance parents, whose children "
            "may add columns or have other parents. Sync each child table instead, or make "
            "the table partitioned"
        ]
    }


async def test_an_inheritance_parent_is_a_400_and_left_unpublished(
    engine: Engine, client: Client, conn: Conn
) -> None:
    conn.execute(SCHEMA)
    assert_invalid(await client.shape(table="parent", offset="-1"), refusal("parent"))
    assert_invalid(
        await client.shape(table="todos", offset="-1", where="ref IN (SELECT id FROM parent)"),
        refusal("parent"),
    )
    published = conn.execute("SELECT tablename FROM pg_publication_tables").fetchall()
    assert ("parent",) not in published
    assert conn.execute(
        "SELECT relreplident FROM pg_class WHERE relname = 'parent'"
    ).fetchone() == ("d",)


async def test_a_partitioned_table_is_served_with_every_partitions_rows(
    engine: Engine, client: Client, conn: Conn
) -> None:
    conn.execute(SCHEMA)
    _, _, messages = await client.sync(table="parted")
    assert sorted((m["key"], m["value"]["k"]) for m in data(messages)) == [
        ('"public"."parted"/"1"/"5"', "5"),
        ('"public"."parted"/"2"/"150"', "150"),
    ]


async def test_a_partition_is_synced_live(engine: Engine, client: Client, conn: Conn) -> None:
    conn.execute(SCHEMA)
    handle, offset, messages = await client.sync(table="parted_low")
    assert [m["value"] for m in data(messages)] == [{"id": "1", "k": "5"}]
    conn.execute("INSERT INTO parted VALUES (3, 7), (4, 170)")
    seen: list[dict[str, object]] = []
    for _ in range(10):
        response = await client.shape(table="parted_low", handle=handle, offset=offset, live="true")
        assert response.status_code == 200, response.text
        offset = response.headers["electric-offset"]
        seen += data(response.json())
        if seen:
            break
    assert [m["value"] for m in seen] == [{"id": "3", "k": "7"}]
