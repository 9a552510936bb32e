"""Change conversion (protocol section 5.5) through a real engine and Postgres: operations,
move-in/out, PK changes, replica modes, projection, keys and headers."""

from __future__ import annotations

from typing import Any

import msgspec

from engine_runner import (
    Conn,
    Entry,
    changes,
    make,
    materialise,
    quiesce,
    read_all,
    table_state,
)
from pysync.engine import Engine
from pysync.shapes.consumer import ShapeConsumer


def live_changes(live: ShapeConsumer) -> list[Entry]:
    """The replicated (non-snapshot) changes of a shape."""
    return [e for e in changes(read_all(live.log)) if "lsn" in e["headers"]]


def summary(entries: list[Entry]) -> list[tuple[str, str, int, dict[str, Any]]]:
    return [
        (e["headers"]["operation"], e["key"], e["headers"]["op_position"], e["value"])
        for e in entries
    ]


K = '"public"."items"/'


async def test_operations_across_modes_where_and_projection(engine: Engine, conn: Conn) -> None:
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, title text, v int, grp int)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    conn.execute("INSERT INTO items VALUES (100, 'pre', 1, 1)")
    plain = await make(engine, "items")
    where = await make(engine, "items", where="v < 50")
    full = await make(engine, "items", replica="full")
    cols = await make(engine, "items", columns=["id", "title"])
    await make(engine, "other")  # so that "other" is published: its changes count as ops
    with conn.transaction():
        (xid,) = conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()  # type: ignore[misc]
        conn.execute("INSERT INTO other VALUES (1)")  # op 0
        conn.execute("INSERT INTO items VALUES (1, 'a', 10, 1)")  # op 2
        conn.execute("UPDATE items SET title = 'b' WHERE id = 1")  # op 4
        conn.execute("UPDATE items SET v = 60 WHERE id = 1")  # op 6: move-out
        conn.execute("UPDATE items SET grp = 2 WHERE id = 1")  # op 8: outside WHERE
        conn.execute("UPDATE items SET v = 5 WHERE id = 1")  # op 10: move-in
        conn.execute("UPDATE items SET id = 2 WHERE id = 1")  # op 12: PK change
        conn.execute("UPDATE items SET v = v WHERE id = 2")  # op 14: no change
        conn.execute("INSERT INTO other VALUES (2)")  # op 16
        conn.execute("DELETE FROM items WHERE id = 2")  # op 18
    await quiesce(engine, conn)

    got = live_changes(plain)
    assert summary(got) == [
        ("insert", K + '"1"', 2, {"id": "1", "title": "a", "v": "10", "grp": "1"}),
        ("update", K + '"1"', 4, {"id": "1", "title": "b"}),
        ("update", K + '"1"', 6, {"id": "1", "v": "60"}),
        ("update", K + '"1"', 8, {"id": "1", "grp": "2"}),
        ("update", K + '"1"', 10, {"id": "1", "v": "5"}),
        ("delete", K + '"1"', 12, {"id": "1"}),
        ("insert", K + '"2"', 13, {"id": "2", "title": "b", "v": "5", "grp": "2"}),
        ("delete", K + '"2"', 18, {"id": "2"}),
    ]
    lsn = got[0]["headers"]["lsn"]
    for entry in got:
        headers = entry["headers"]
        assert headers["lsn"] == lsn and headers["txids"] == [int(xid)]
        assert headers["relation"] == ["public", "items"]
        assert ("last" in headers) == (entry is got[-1])
    assert got[-1]["headers"]["last"] is True
    assert got[5]["headers"]["key_change_to"] == K + '"2"'
    assert got[6]["headers"]["key_change_from"] == K + '"1"'
    # Offsets of the log are the entries' (lsn, op_position).
    assert [tuple(o) for o in plain.log.offsets if o.tx > 0] == [
        (int(lsn), e["headers"]["op_position"]) for e in got
    ]

    assert summary(live_changes(where)) == [
        ("insert", K + '"1"', 2, {"id": "1", "title": "a", "v": "10", "grp": "1"}),
        ("update", K + '"1"', 4, {"id": "1", "title": "b"}),
        ("delete", K + '"1"', 6, {"id": "1"}),  # moved out
        ("insert", K + '"1"', 10, {"id": "1", "title": "b", "v": "5", "grp": "2"}),  # moved in
        ("delete", K + '"1"', 12, {"id": "1"}),
        ("insert", K + '"2"', 13, {"id": "2", "title": "b", "v": "5", "grp": "2"}),
        ("delete", K + '"2"', 18, {"id": "2"}),
    ]

    got_full = live_changes(full)
    assert summary(got_full) == [
        ("insert", K + '"1"', 2, {"id": "1", "title": "a", "v": "10", "grp": "1"}),
        ("update", K + '"1"', 4, {"id": "1", "title": "b", "v": "10", "grp": "1"}),
        ("update", K + '"1"', 6, {"id": "1", "title": "b", "v": "60", "grp": "1"}),
        ("update", K + '"1"', 8, {"id": "1", "title": "b", "v": "60", "grp": "2"}),
        ("update", K + '"1"', 10, {"id": "1", "title": "b", "v": "5", "grp": "2"}),
        ("delete", K + '"1"', 12, {"id": "1", "title": "b", "v": "5", "grp": "2"}),
        ("insert", K + '"2"', 13, {"id": "2", "title": "b", "v": "5", "grp": "2"}),
        ("delete", K + '"2"', 18, {"id": "2", "title": "b", "v": "5", "grp": "2"}),
    ]
    assert [e.get("old_value") for e in got_full] == [
        None,
        {"title": "a"},
        {"v": "10"},
        {"grp": "1"},
        {"v": "60"},
        None,
        None,
        None,
    ]

    assert summary(live_changes(cols)) == [
        ("insert", K + '"1"', 2, {"id": "1", "title": "a"}),
        ("update", K + '"1"', 4, {"id": "1", "title": "b"}),
        # updates of unselected columns are dropped
        ("delete", K + '"1"', 12, {"id": "1"}),
        ("insert", K + '"2"', 13, {"id": "2", "title": "b"}),
        ("delete", K + '"2"', 18, {"id": "2"}),
    ]

    # The snapshot row of 100 and what replication sends agree on keys.
    conn.execute("UPDATE items SET title = 'post' WHERE id = 100")
    await quiesce(engine, conn)
    for live, columns in ((plain, ["id", "title", "v", "grp"]), (cols, ["id", "title"])):
        assert materialise(read_all(live.log)) == table_state(
            conn, "public", "items", columns, ["id"]
        )
    assert materialise(read_all(where.log)) == table_state(
        conn, "public", "items", ["id", "title", "v", "grp"], ["id"], "v < 50"
    )


async def test_keys_identical_between_snapshot_and_changes(engine: Engine, conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE comp (org text, id int, note text, flag bool, PRIMARY KEY (org, id))"
    )
    conn.execute("CREATE TABLE logs (day date, level int, msg text, ok bool, code char(3))")
    conn.execute("""INSERT INTO comp VALUES ('a/b', 1, 'x', true), ('', 2, NULL, NULL),
                    ('q"uote', 3, 'y', false)""")
    conn.execute("""INSERT INTO logs VALUES ('2024-01-01', NULL, 'x', NULL, NULL),
                    ('2024-01-02', 2, 'p/q', true, 'ab'), (NULL, NULL, NULL, NULL, NULL)""")
    comp = await make(engine, "comp")
    logs = await make(engine, "logs")
    snap_comp = {e["key"]: e["value"] for e in changes(read_all(comp.log))}
    snap_logs = {e["key"]: e["value"] for e in changes(read_all(logs.log))}
    assert set(snap_comp) == {
        '"public"."comp"/"a//b"/"1"',
        '"public"."comp"/""/"2"',
        '"public"."comp"/"q"uote"/"3"',
    }
    assert snap_comp['"public"."comp"/""/"2"'] == {"org": "", "id": "2", "note": None, "flag": None}
    assert set(snap_logs) == {
        '"public"."logs"/"2024-01-01"/_/"x"/_/_',
        '"public"."logs"/"2024-01-02"/"2"/"p//q"/"t"/"ab "',
        '"public"."logs"/_/_/_/_/_',
    }
    assert snap_logs['"public"."logs"/_/_/_/_/_'] == {
        "day": None,
        "level": None,
        "msg": None,
        "ok": None,
        "code": None,
    }
    # Change every row: the deletes must name the keys the snapshot used.
    conn.execute("UPDATE comp SET note = 'z'")
    conn.execute("UPDATE comp SET id = id + 10 WHERE org = 'a/b'")
    conn.execute("DELETE FROM comp WHERE id = 2")
    conn.execute("DELETE FROM logs WHERE day IS NULL OR level IS NULL")
    conn.execute("INSERT INTO logs VALUES (NULL, 3, '/', false, NULL)")
    await quiesce(engine, conn)
    assert {e["key"] for e in live_changes(comp)} <= set(snap_comp) | {
        '"public"."comp"/"a//b"/"11"'
    }
    deleted = {e["key"] for e in live_changes(logs) if e["headers"]["operation"] == "delete"}
    assert deleted == {'"public"."logs"/"2024-01-01"/_/"x"/_/_', '"public"."logs"/_/_/_/_/_'}
    assert materialise(read_all(comp.log)) == table_state(
        conn, "public", "comp", ["org", "id", "note", "flag"], ["org", "id"]
    )
    state = materialise(read_all(logs.log))
    assert state == {
        '"public"."logs"/"2024-01-02"/"2"/"p//q"/"t"/"ab "': {
            "day": "2024-01-02",
            "level": "2",
            "msg": "p/q",
            "ok": "t",
            "code": "ab ",
        },
        '"public"."logs"/_/"3"/"//"/"f"/_': {
            "day": None,
            "level": "3",
            "msg": "/",
            "ok": "f",
            "code": None,
        },
    }


async def test_identical_rows_without_primary_key_are_one_row_for_clients(
    engine: Engine, conn: Conn
) -> None:
    """As Electric: a table without a primary key keys rows by every column, so identical
    rows share a key and a client holds one of them (README, compatibility notes)."""
    conn.execute("CREATE TABLE tags (name text, n int)")
    conn.execute(
        "INSERT INTO tags VALUES ('a', 1), ('a', 1), ('a', 1), ('b/c', NULL), ('b/c', NULL)"
    )
    shape = await make(engine, "tags")
    snapshot = changes(read_all(shape.log))
    assert sorted(e["key"] for e in snapshot) == (
        ['"public"."tags"/"a"/"1"'] * 3 + ['"public"."tags"/"b//c"/_'] * 2
    )
    assert materialise(snapshot) == {
        '"public"."tags"/"a"/"1"': {"name": "a", "n": "1"},
        '"public"."tags"/"b//c"/_': {"name": "b/c", "n": None},
    }
    # Deleting one of the copies deletes the client's row, though Postgres keeps two.
    conn.execute("DELETE FROM tags WHERE ctid = (SELECT min(ctid) FROM tags WHERE n = 1)")
    await quiesce(engine, conn)
    assert [(e["headers"]["operation"], e["key"]) for e in live_changes(shape)] == [
        ("delete", '"public"."tags"/"a"/"1"')
    ]
    assert materialise(read_all(shape.log)) == {
        '"public"."tags"/"b//c"/_': {"name": "b/c", "n": None}
    }
    assert conn.execute("SELECT count(*) FROM tags").fetchone() == (4,)


async def test_op_positions_count_changes_of_all_tables(engine: Engine, conn: Conn) -> None:
    conn.execute("CREATE TABLE a (id int PRIMARY KEY)")
    conn.execute("CREATE TABLE b (id int PRIMARY KEY)")
    shape_a = await make(engine, "a")
    shape_b = await make(engine, "b", where="id > 1")
    with conn.transaction():
        conn.execute("INSERT INTO a VALUES (1)")  # 0
        conn.execute("INSERT INTO b VALUES (1)")  # 2 (not in the shape of b)
        conn.execute("INSERT INTO b VALUES (2)")  # 4
        conn.execute("INSERT INTO a VALUES (2)")  # 6
        conn.execute("INSERT INTO b VALUES (3)")  # 8
    conn.execute("INSERT INTO b VALUES (4)")  # next transaction: 0
    await quiesce(engine, conn)
    got_a = live_changes(shape_a)
    got_b = live_changes(shape_b)
    assert [e["headers"]["op_position"] for e in got_a] == [0, 6]
    assert [e["headers"]["op_position"] for e in got_b] == [4, 8, 0]
    assert [e["headers"].get("last") for e in got_a] == [None, True]
    assert [e["headers"].get("last") for e in got_b] == [None, True, True]
    assert got_a[0]["headers"]["lsn"] == got_b[0]["headers"]["lsn"]
    assert int(got_b[2]["headers"]["lsn"]) > int(got_b[1]["headers"]["lsn"])


async def test_an_entry_shared_by_shapes_is_last_only_where_it_ends_the_transaction(
    engine: Engine, conn: Conn
) -> None:
    """Shapes with the same projection share a change's entries (encoded once): the one
    that ends a shape's part of the transaction is marked last for that shape only,
    whichever of the shapes is appended first."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, v int)")
    low = await make(engine, "items", where="v < 50")
    high = await make(engine, "items", where="v > 5")
    with conn.transaction():
        conn.execute("INSERT INTO items VALUES (1, 10)")  # both: one shared entry
        conn.execute("INSERT INTO items VALUES (2, 60)")  # high only
    with conn.transaction():
        conn.execute("INSERT INTO items VALUES (3, 20)")  # both
        conn.execute("INSERT INTO items VALUES (4, 1)")  # low only
    await quiesce(engine, conn)
    assert [(e["key"], e["headers"].get("last")) for e in live_changes(low)] == [
        (K + '"1"', True),
        (K + '"3"', None),
        (K + '"4"', True),
    ]
    assert [(e["key"], e["headers"].get("last")) for e in live_changes(high)] == [
        (K + '"1"', None),
        (K + '"2"', True),
        (K + '"3"', True),
    ]
    assert live_changes(low)[0]["value"] == live_changes(high)[0]["value"] == {"id": "1", "v": "10"}


async def test_shapes_with_the_same_columns_append_the_same_bytes(
    engine: Engine, conn: Conn
) -> None:
    """A change is encoded once per column set in a transaction: every shape with the
    same columns (and the same match) appends the very same bytes, its last entry's
    ``"last": true`` included; a shape with other columns gets bytes of its own."""
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, v int, note text)")
    wide = [await make(engine, "items", where=f"v > {n}") for n in range(3)]
    narrow = await make(engine, "items", where="v > 0", columns=["id", "v"])
    shapes = [*wide, narrow]
    before = [shape.last_offset for shape in shapes]
    with conn.transaction():
        conn.execute("INSERT INTO items VALUES (1, 10, 'a')")
        conn.execute("INSERT INTO items VALUES (2, 20, 'b')")
    await quiesce(engine, conn)
    # Read while the transaction is the logs' last append: these are the payloads
    # appended, not copies read back from storage.
    payloads = [shape.read(after)[0] for shape, after in zip(shapes, before, strict=True)]
    assert [len(p) for p in payloads] == [2, 2, 2, 2]
    for other in payloads[1:3]:
        assert other[0] is payloads[0][0] and other[1] is payloads[0][1]
    assert [msgspec.json.decode(p)["value"] for p in payloads[0]] == [
        {"id": "1", "v": "10", "note": "a"},
        {"id": "2", "v": "20", "note": "b"},
    ]
    assert msgspec.json.decode(payloads[0][1])["headers"]["last"] is True
    assert [msgspec.json.decode(p)["value"] for p in payloads[3]] == [
        {"id": "1", "v": "10"},
        {"id": "2", "v": "20"},
    ]
    assert msgspec.json.decode(payloads[3][1])["headers"]["last"] is True
