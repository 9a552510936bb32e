"""Engine lifecycle against a real Postgres: invalidation, handles, eviction, chunked
snapshots, the snapshot connection limit and publication races."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engine_runner import (
    Conn,
    lose_slot,
    make,
    materialise,
    poll,
    quiesce,
    read_all,
    ready,
    table_state,
)
from pysync.engine import Engine
from pysync.shapes.definition import ShapeDefinition


async def test_writer_in_flight_when_table_is_first_published(
    engine: Engine, conn: Conn, database_url: str
) -> None:
    # Already REPLICA IDENTITY FULL: publishing takes no lock that waits for writers.
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
    conn.execute("INSERT INTO t VALUES (1, 1)")
    with psycopg.connect(database_url) as writer:
        writer.execute("INSERT INTO t VALUES (2, 2)")  # open transaction, not committed
        (writer_pid,) = writer.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
        live = await engine.shape(ShapeDefinition.create("t"))

        def blocked_or_snapshotted() -> bool:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 't'::regclass"
            ).fetchone()
            return bool(live.log.offsets) or bool(waiting and waiting[0])

        await poll(blocked_or_snapshotted, 30, "the shape to publish the table")
        assert writer_pid
        writer.commit()
    await ready(engine, live)
    conn.execute("UPDATE t SET v = 20 WHERE id = 2")
    await quiesce(engine, conn)
    assert materialise(read_all(live.log)) == table_state(conn, "public", "t", ["id", "v"], ["id"])


async def test_truncate_invalidates_and_a_new_handle_follows(engine: Engine, conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1, 1)")
    live = await make(engine, "t")
    bystander = await make(engine, "other")
    invalidated: list[str] = []
    engine.registry.watch(lambda s: invalidated.append(s.handle))
    waiter = live.log.waiter()
    conn.execute("TRUNCATE t")
    await quiesce(engine, conn)
    assert live.gone and waiter.done() and invalidated == [live.handle]
    assert engine.get(live.handle) is None
    assert not bystander.gone
    again = await make(engine, "t")
    assert again.handle != live.handle and not again.gone
    assert materialise(read_all(again.log)) == {}


async def test_truncate_the_snapshot_already_saw_keeps_the_shape(
    engine: Engine, conn: Conn
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO t VALUES (1, 1)")
    await make(engine, "t")  # the table is published
    await engine.pause_replication()
    conn.execute("TRUNCATE t")
    conn.execute("INSERT INTO t VALUES (2, 2)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    late = await engine.shape(ShapeDefinition.create("t", where="v > 0"))
    engine.resume_replication()
    await ready(engine, late)
    await quiesce(engine, conn)
    assert not late.gone, "a truncate committed before the snapshot invalidated the shape"
    assert materialise(read_all(late.log)) == table_state(conn, "public", "t", ["id", "v"], ["id"])


@pytest.mark.parametrize("ddl", ["ADD COLUMN extra int", "DROP COLUMN v"])
async def test_schema_change_invalidates_on_next_change(
    engine: Engine, conn: Conn, ddl: str
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int, w int)")
    conn.execute("INSERT INTO t VALUES (1, 1, 1)")
    live = await make(engine, "t")
    narrow = await make(engine, "t", columns=["id", "w"])
    conn.execute("INSERT INTO t (id) VALUES (2)")
    await quiesce(engine, conn)
    assert not live.gone
    conn.execute(f"ALTER TABLE t {ddl}")
    await quiesce(engine, conn)
    assert not live.gone  # nothing replicated since: pgoutput sends the relation later
    conn.execute("INSERT INTO t (id) VALUES (3)")
    await quiesce(engine, conn)
    assert live.gone and engine.get(live.handle) is None
    # Electric keeps shapes whose selected columns are untouched; pysync may drop them
    # too (clients just refetch), but a new shape must serve the new schema.
    assert narrow.gone or engine.get(narrow.handle) is narrow
    again = await make(engine, "t")
    assert again.handle != live.handle
    columns = ["id", "w", "extra"] if ddl.startswith("ADD") else ["id", "w"]
    if ddl.startswith("ADD"):
        columns = ["id", "v", "w", "extra"]
    assert materialise(read_all(again.log)) == table_state(conn, "public", "t", columns, ["id"])


async def test_delete_eviction_and_handles(engine: Engine, database_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    a = await make(engine, "t", where="v = $1", params=["1"])
    assert (await make(engine, "t", where="v = $1", params={"1": 1})).handle == a.handle
    assert (await make(engine, "t", where="v = $1", params=["2"])).handle != a.handle
    assert await engine.delete(a.handle) and a.gone and engine.get(a.handle) is None
    assert not await engine.delete(a.handle)
    b = await make(engine, "t", where="v = $1", params=["1"])
    assert b.handle != a.handle

    small = Engine(database_url, slot="evict", max_shapes=2, flush_interval=0.02)
    await small.start()
    try:
        first = await make(small, "t", where="v = 1")
        second = await make(small, "t", where="v = 2")
        assert small.get(first.handle) is first  # now used more recently than second
        third = await make(small, "t", where="v = 3")
        assert second.gone and small.get(second.handle) is None
        assert not first.gone and not third.gone
        assert sorted(c.handle for c in small.registry) == sorted([first.handle, third.handle])
    finally:
        await small.stop()


async def test_snapshot_is_written_in_chunks(database_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
    conn.execute("INSERT INTO big SELECT g, repeat('x', 20) FROM generate_series(1, 20000) g")
    engine = Engine(database_url, chunk_bytes=200_000, flush_interval=0.02)
    await engine.start()
    try:
        live = await make(engine, "big")
        offsets = [str(o) for o in live.log.offsets]
        assert len(offsets) > 5 and offsets == [f"0_{k}" for k in range(len(offsets))]
        from pysync.log.offset import BEFORE_ALL, LogOffset

        after: LogOffset = BEFORE_ALL
        rows = 0
        for k in range(len(offsets)):
            payloads, end, reached = live.log.read(after)
            assert str(end) == f"0_{k}" and not reached and len(payloads) == 1
            items = __import__("json").loads(b"[" + payloads[0] + b"]")
            ends = [i for i in items if i.get("headers", {}).get("control") == "snapshot-end"]
            assert len(ends) == (k == len(offsets) - 1)
            assert sum(len(p) for p in payloads) < 200_000 + 200
            rows += sum(1 for i in items if "key" in i)
            after = end
        assert rows == 20000
        payloads, end, reached = live.log.read(after)
        assert payloads == [] and reached and str(end) == "0_inf"
    finally:
        await engine.stop()


async def test_snapshot_connection_limit(database_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 20000) g")
    app = "pysync-snapshot-test"
    url = f"{database_url}{'&' if '?' in database_url else '?'}application_name={app}"
    engine = Engine(url, snapshot_connections=2, flush_interval=0.02)
    await engine.start()
    peak = 0
    try:
        # Publish first, so that 20 shapes start their snapshots at once.
        await make(engine, "t", where="v < 0")
        shapes = [
            await engine.shape(ShapeDefinition.create("t", where=f"v > {i}")) for i in range(20)
        ]

        def sample() -> bool:
            nonlocal peak
            # Snapshot transactions are the engine's only sessions holding an xmin; all
            # its other sessions (catalog, publishing) are at most two more.
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE backend_xmin IS NOT NULL), count(*) "
                "FROM pg_stat_activity WHERE application_name = %s "
                "AND backend_type = 'client backend'",
                (app,),
            ).fetchone()
            assert row is not None
            peak = max(peak, int(row[0]))
            assert int(row[1]) <= 2 + 2, f"{row[1]} connections"
            return all(s.recorded for s in shapes)

        await poll(sample, 60, "all snapshots")
        assert 1 <= peak <= 2, peak
        for i, live in enumerate(shapes):
            assert sum(1 for _ in materialise(read_all(live.log))) == 20000 - i
    finally:
        await engine.stop()


@pytest.fixture
def small_wal_url() -> Iterator[str]:
    """A cluster that invalidates a slot as soon as it lags 1 MB, with a table t(id, v)."""
    from pysync.postgres.cluster import temporary_cluster

    settings = {"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"}
    with temporary_cluster(settings=settings) as cluster:
        url = cluster.url()
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
            c.execute("INSERT INTO t VALUES (1, 1)")
        yield url


async def test_lost_slot_resyncs_every_shape(small_wal_url: str, tmp_path: Any) -> None:
    url = small_wal_url
    with psycopg.connect(url, autocommit=True) as c:
        engine = Engine(url, storage_dir=tmp_path, flush_interval=0.02)
        await engine.start()
        live = await make(engine, "t")
        c.execute("INSERT INTO t VALUES (2, 2)")
        await quiesce(engine, c)
        await engine.stop()
        lose_slot(c)  # while pysync is down, Postgres drops WAL the slot needs
        c.execute("INSERT INTO t VALUES (3, 3)")  # lost with the WAL
        engine = Engine(url, storage_dir=tmp_path, flush_interval=0.02)
        await engine.start()
        try:
            assert engine.get(live.handle) is None  # the stored shapes are stale
            again = await make(engine, "t")
            assert again.handle != live.handle
            c.execute("INSERT INTO t VALUES (4, 4)")
            await quiesce(engine, c)
            assert materialise(read_all(again.log)) == table_state(
                c, "public", "t", ["id", "v"], ["id"]
            )
        finally:
            await engine.stop()


async def test_slot_lost_while_running_resyncs_every_shape(
    small_wal_url: str, tmp_path: Any
) -> None:
    """The replication connection is away (here: cut) while Postgres drops WAL the slot
    needs; on reconnecting the running engine finds the slot lost, invalidates every
    shape, makes a new slot and goes on replicating."""
    url = small_wal_url
    with psycopg.connect(url, autocommit=True) as c:
        engine = Engine(url, storage_dir=tmp_path, flush_interval=0.02)
        await engine.start()
        try:
            live = await make(engine, "t")
            await engine.pause_replication()
            lose_slot(c)
            c.execute("INSERT INTO t VALUES (2, 2)")  # lost with the WAL
            engine.resume_replication()
            await poll(lambda: live.gone, 30, "the shape to be invalidated")
            assert engine.get(live.handle) is None
            again = await make(engine, "t")
            assert again.handle != live.handle
            c.execute("INSERT INTO t VALUES (3, 3)")
            await quiesce(engine, c)
            assert materialise(read_all(again.log)) == table_state(
                c, "public", "t", ["id", "v"], ["id"]
            )
        finally:
            await engine.stop()


async def test_schema_change_while_down_drops_recovered_shape(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A column retyped while pysync was stopped: the recovered shape must not serve the
    old schema's log; an untouched shape on another table is recovered."""
    from pysync.engine import Engine
    from pysync.shapes.definition import ShapeDefinition

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY)"
        )
        conn.execute("INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1)")
    engine = Engine(database_url, storage_dir=tmp_path)
    await engine.start()
    try:
        a = await engine.shape(ShapeDefinition.create("a"))
        b = await engine.shape(ShapeDefinition.create("b"))
        await a.wait(None, 30, until_snapshot=True)
        await b.wait(None, 30, until_snapshot=True)
        while not (a.recorded and b.recorded):
            await asyncio.sleep(0.01)
    finally:
        await engine.stop()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE a ALTER COLUMN v TYPE bigint")
    again = Engine(database_url, storage_dir=tmp_path)
    await again.start()
    try:
        assert again.get(a.handle) is None
        assert again.get(b.handle) is not None
        fresh = await again.shape(ShapeDefinition.create("a"))
        assert fresh.handle != a.handle
    finally:
        await again.stop()
