"""A snapshot's bytes: every message is what ``row_json_query``'s ``json_object`` gives for
the row (the encoding before block ranges and concatenated values, still that of subsets
and move-ins), in the chunks a row-at-a-time reader cuts; for every type family, NULLs,
unicode, odd column names, keys with and without a primary key, column subsets, replica
modes, subquery tags, read by ranges, row by row and by two sessions."""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from engine_runner import Conn, quiesce, ready
from pysync.engine import Engine
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.log.storage import StorageError
from pysync.postgres.connections import AsyncConn, Connections
from pysync.postgres.snapshot import (
    SnapshotInfo,
    export_snapshot,
    fetch_rows,
    imported_snapshot,
    snapshot_transaction,
    stream_bytes,
)
from pysync.shapes import snapshotter
from pysync.shapes.definition import Shape, ShapeDefinition, validate
from pysync.shapes.querying import Tagging, escape_json, row_json_query
from pysync.shapes.snapshotter import snapshot_end, write_snapshot
from test_engine_consistency import check_shape
from test_value_forms import COLUMNS, ROWS, SETUP, _create
from workload import WHERES, Writers, create_table

ODD = 'ünï "q" \\ /. \t\n\x01 sp'  # a column name json_object must escape


def reference_chunks(messages: list[bytes], end: bytes, limit: int) -> list[bytes]:
    """The chunks of the row-at-a-time reader: a chunk ends with the message that brings
    it to ``limit`` bytes, one separator counted per message."""
    chunks: list[bytes] = []
    buffer: list[bytes] = []
    size = 0
    for message in messages:
        buffer.append(message)
        size += len(message) + 1
        if size >= limit:
            chunks.append(b",".join(buffer))
            buffer, size = [], 0
    chunks.append(b",".join([*buffer, end]))
    return chunks


def log_chunks(log: ShapeLog) -> list[bytes]:
    return [log.storage.read(position, length) for _, position, length in log.entries()]


def messages_of(chunk: bytes) -> list[bytes]:
    """A chunk's messages: ``,{"key":`` only starts one (a quote inside a JSON string is
    escaped)."""
    parts = chunk.split(b',{"key":')
    return [parts[0], *(b'{"key":' + p for p in parts[1:])]


async def expected_messages(
    conn: AsyncConn, shape: Shape, tagging: Tagging | None = None
) -> list[bytes]:
    query, params = row_json_query(shape, tagging=tagging)
    async with snapshot_transaction(conn):
        return list(await fetch_rows(conn, query, params))


@asynccontextmanager
async def snapshot_sessions(url: str) -> AsyncIterator[Connections]:
    connections = Connections(url, snapshots=2)
    await connections.open()
    try:
        # Both sessions connected: a spare one is lent only if it comes within a second.
        async with connections.snapshot_session(), connections.snapshot_session():
            pass
        yield connections
    finally:
        await connections.close()


def tables(conn: Conn) -> None:
    conn.execute(SETUP)
    _create(conn, "vals", "id int PRIMARY KEY")  # every type family, NULLs in each column
    _create(conn, "bare", "n int")  # no primary key: the key is every column's text
    conn.execute(
        "CREATE TABLE texts (id text PRIMARY KEY, "
        + psycopg.sql.Identifier(ODD).as_string(conn)
        + ' text, "ключ" int, j jsonb, b bytea, a text[], m mood, n numeric)'
    )
    conn.execute(
        "INSERT INTO texts VALUES ('a/b', 'x\"y\\z', 1, '{\"k\": [1, \"é\"]}', '\\x00ff',"
        " '{\"a,b\", NULL, \"\\\\\"}', 'quo\"te', 'NaN'),"
        " ('ü \t\x01', E'line\\nbreak\\u0001\\u2028', NULL, 'null', '', '{}', NULL, NULL),"
        " ('3', NULL, NULL, NULL, NULL, NULL, NULL, -0.50)"
    )
    # Enough rows to span several chunks and ranges.
    conn.execute(
        "INSERT INTO texts SELECT 'r' || g, repeat('é', g % 7), g, jsonb_build_object('g', g),"
        " decode(md5(g::text), 'hex'), ARRAY[g::text, NULL], 'ok', g / 3.0"
        " FROM generate_series(1, 3000) g"
    )


SHAPES = [
    ShapeDefinition.create("vals"),
    ShapeDefinition.create("vals", replica="full"),
    ShapeDefinition.create("vals", columns=["id", COLUMNS[3], COLUMNS[-1]]),
    ShapeDefinition.create("vals", where="id > 2"),
    ShapeDefinition.create("bare"),
    ShapeDefinition.create("bare", where="n IS NOT NULL"),
    ShapeDefinition.create("texts"),
    ShapeDefinition.create("texts", columns=["id", ODD]),
    ShapeDefinition.create("texts", where='"ключ" > 10 OR "ключ" IS NULL', replica="full"),
]


@pytest.mark.parametrize("parallel", [False, True], ids=["one session", "two sessions"])
async def test_snapshot_messages_are_json_object_bytes(
    database_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    tables(conn)
    conn.execute("VACUUM ANALYZE")
    # Small ranges and chunks: many of each in a few thousand rows.
    monkeypatch.setattr(snapshotter.BlockRanges, "RANGE_BYTES", 20_000)
    monkeypatch.setattr(snapshotter, "PARALLEL_BLOCKS", 1 if parallel else 1 << 30)
    # A second session is lent only when the pool has one free at once (not always so
    # on a loaded machine): a shape that ran with one follows the one-session rule.
    used = 0
    real = imported_snapshot

    @asynccontextmanager
    async def counted(*args: Any) -> AsyncIterator[None]:
        nonlocal used
        used += 1
        async with real(*args):
            yield

    monkeypatch.setattr(snapshotter, "imported_snapshot", counted)
    async with snapshot_sessions(database_url) as connections:
        for definition in SHAPES:
            shape = validate(conn, definition)
            log = ShapeLog(MemoryStorage(), chunk_bytes=7_000)
            before = used
            async with connections.snapshot_session() as session:
                info = await write_snapshot(
                    session, shape, log, helper=connections.spare_snapshot_session
                )
                expected = await expected_messages(session, shape)
            assert len(expected) >= ROWS - 2, definition
            got = log_chunks(log)
            end = snapshot_end(info)
            if used == before:
                # One reader in table order: the very chunks of the row-at-a-time one.
                assert got == reference_chunks(expected, end, 7_000), definition
                continue
            # Two readers: each cuts its chunks by the same rule; the messages are the same.
            # The end joins the last rows' chunk, or stands alone when that chunk came
            # out full (as in the one-reader rule).
            if got[-1] == end:
                rows = got[:-1]
            else:
                assert got[-1].endswith(b"," + end)
                rows = [*got[:-1], got[-1][: -len(end) - 1]]
            flat = [m for chunk in rows for m in messages_of(chunk)]
            assert sorted(flat) == sorted(expected), definition
            for chunk in got[:-1]:
                sizes = [len(m) + 1 for m in messages_of(chunk)]
                assert sum(sizes) >= 7_000 > sum(sizes[:-1]), definition
            assert parallel and definition.where is None, definition
    assert used > 0 if parallel else used == 0


async def test_subquery_shape_messages_carry_the_same_tags(engine: Engine, conn: Conn) -> None:
    tables(conn)
    conn.execute("CREATE TABLE picks (id text PRIMARY KEY)")
    conn.execute("INSERT INTO picks VALUES ('a/b'), ('3'), ('r7'), ('r12')")
    live = await engine.shape(
        ShapeDefinition.create("texts", where='id IN (SELECT id FROM picks) OR "ключ" < 3')
    )
    assert await live.wait(None, 30, until_snapshot=True)
    assert live.subquery is not None
    async with engine.connections.snapshot_session() as session:
        expected = await expected_messages(session, live.shape, live.subquery.tagging)
    (chunk,) = log_chunks(live.log)
    got = messages_of(chunk[: chunk.rindex(b',{"headers":')])
    assert len(got) == 6 and b'"tags":' in got[0]
    assert got == expected


@pytest.mark.parametrize("toasted", [False, True], ids=["small rows", "toasted rows"])
async def test_a_table_of_mostly_toasted_values_streams_row_by_row(
    database_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch, toasted: bool
) -> None:
    """A range of blocks of large TOASTed rows could make one huge value: such a table
    streams (the same bytes), a table of small rows is read by ranges."""
    conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, body text)")
    size = 3000 if toasted else 1  # md5 texts: 96 KB stored out of line, or 32 bytes
    conn.execute(
        "INSERT INTO blobs SELECT g, (SELECT string_agg(md5(g::text || k::text), '')"
        " FROM generate_series(1, %s) k) FROM generate_series(1, 40) g",
        (size,),
    )
    streamed = 0
    real = stream_bytes

    def counted(*args: Any) -> AsyncIterator[bytes]:
        nonlocal streamed
        streamed += 1
        return real(*args)

    monkeypatch.setattr(snapshotter, "stream_bytes", counted)
    shape = validate(conn, ShapeDefinition.create("blobs"))
    async with (
        snapshot_sessions(database_url) as connections,
        connections.snapshot_session() as session,
    ):
        log = ShapeLog(MemoryStorage(), chunk_bytes=500_000)
        info = await write_snapshot(session, shape, log)
        expected = await expected_messages(session, shape)
    assert streamed == toasted
    assert log_chunks(log) == reference_chunks(expected, snapshot_end(info), 500_000)
    assert (len(log_chunks(log)) > 5) == toasted


def test_lines_cut_chunks_where_the_row_at_a_time_reader_cuts() -> None:
    """Every limit, messages arriving in groups of any size (a range's value), the
    boundary at the last message of a group or of the snapshot included."""
    rnd = random.Random(7)
    messages = [
        b'{"key":"' + b"k" * rnd.randint(0, 30) + b'","v":",{\\"key\\":"}' for _ in range(60)
    ]
    end = b'{"headers":{"control":"snapshot-end"}}'
    for limit in range(1, sum(map(len, messages)) + 100, 7):
        log = ShapeLog(MemoryStorage(), chunk_bytes=limit)
        chunks = snapshotter.Chunks(log)
        lines = snapshotter.Lines(chunks)
        left = list(messages)
        while left:
            take = rnd.randint(1, 9)
            group, left = left[:take], left[take:]
            lines.add(b",".join(group), b",")
        chunks.last(lines.take() + end)
        assert log_chunks(log) == reference_chunks(messages, end, limit), limit


class FullDisk(MemoryStorage):
    def append(self, data: bytes | bytearray) -> int:
        raise StorageError("memory", OSError(errno.ENOSPC, "No space left on device"))


async def test_a_two_session_snapshot_fails_as_one_session_does(
    database_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry tells a full disk (and a dropped table) by the exception's class: not
    hidden in an ExceptionGroup of the two sessions' tasks."""
    tables(conn)
    monkeypatch.setattr(snapshotter, "PARALLEL_BLOCKS", 1)
    monkeypatch.setattr(snapshotter.BlockRanges, "RANGE_BYTES", 20_000)
    shape = validate(conn, ShapeDefinition.create("texts"))
    async with snapshot_sessions(database_url) as connections:
        async with connections.snapshot_session() as session:
            with pytest.raises(StorageError, match="No space left"):
                await write_snapshot(
                    session,
                    shape,
                    ShapeLog(FullDisk(), chunk_bytes=7_000),
                    helper=connections.spare_snapshot_session,
                )
        # Both sessions are usable again.
        async with connections.snapshot_session() as session:
            log = ShapeLog(MemoryStorage(), chunk_bytes=7_000)
            await write_snapshot(session, shape, log, helper=connections.spare_snapshot_session)
            assert len(log_chunks(log)) > 3


def test_escape_json_is_postgres_escape_json(conn: Conn) -> None:
    names = [ODD, "plain", "", "\x7f\u2028\x1f\b\f\r", 'a"b\\c', "ünï"]
    for name in names:
        row = conn.execute("SELECT json_object(ARRAY[%s], ARRAY['v'])::text", (name,)).fetchone()
        assert row is not None
        assert row[0] == "{" + escape_json(name) + ' : "v"}'


async def test_an_imported_snapshot_sees_what_the_exporting_one_sees(
    database_url: str, conn: Conn
) -> None:
    conn.execute("CREATE TABLE seen (id int PRIMARY KEY)")
    conn.execute("INSERT INTO seen VALUES (1)")
    async with (
        snapshot_sessions(database_url) as connections,
        connections.snapshot_session() as first,
        snapshot_transaction(first) as info,
    ):
        exported = await export_snapshot(first)
        conn.execute("INSERT INTO seen VALUES (2)")  # committed after the snapshot
        async with connections.spare_snapshot_session() as second:
            assert second is not None
            async with imported_snapshot(second, exported):
                cursor = await second.execute(
                    "SELECT pg_current_snapshot()::text, count(*) FROM seen"
                )
                row = await cursor.fetchone()
    assert row is not None
    text = row[0].decode() if isinstance(row[0], bytes) else row[0]
    xmin, xmax, xip = text.split(":")
    assert SnapshotInfo(int(xmin), int(xmax), tuple(int(x) for x in xip.split(",") if x), 0) == (
        SnapshotInfo(info.xmin, info.xmax, info.xip, 0)
    )
    assert row[1] == 1


async def test_no_spare_session_when_a_shape_waits_for_one(database_url: str) -> None:
    connections = Connections(database_url, snapshots=1)
    await connections.open()
    try:
        async with (
            connections.snapshot_session(),
            connections.spare_snapshot_session() as spare,
        ):
            assert spare is None
    finally:
        await connections.close()


@pytest.mark.slow
async def test_two_session_snapshots_under_load_match_the_table(
    database_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole-table shapes read by two sessions in small ranges while writers commit:
    each, replayed as a client does, equals the table (the rows of one snapshot, handed
    over to the stream at that snapshot)."""
    monkeypatch.setattr(snapshotter.BlockRanges, "RANGE_BYTES", 4_000)
    monkeypatch.setattr(snapshotter, "PARALLEL_BLOCKS", 2)
    create_table(conn, 20_000)
    # Sessions for every shape's two at once (a spare one is lent only when free).
    engine = Engine(database_url, flush_interval=0.02, snapshot_connections=8)
    await engine.start()
    writers = Writers(database_url, 2, 20_000)
    parallel = 0
    real = imported_snapshot

    @asynccontextmanager
    async def counted(*args: Any) -> AsyncIterator[None]:
        nonlocal parallel
        parallel += 1
        async with real(*args):
            yield

    monkeypatch.setattr(snapshotter, "imported_snapshot", counted)
    try:
        writers.start()
        shapes = []
        for definition in [
            ShapeDefinition.create("t"),
            ShapeDefinition.create("t", replica="full"),
            ShapeDefinition.create("t", columns=["id", "v"]),
            ShapeDefinition.create("t", where=WHERES[0]),
        ]:
            await asyncio.sleep(0.2)
            shapes.append(await engine.shape(definition))
        for live in shapes:
            await ready(engine, live)
        await asyncio.to_thread(writers.join)
        assert writers.transactions > 50
        await quiesce(engine, conn)
        assert parallel >= 1
        for live in shapes:
            check_shape(conn, live)
    finally:
        writers.stop.set()
        await asyncio.to_thread(writers.join)
        await engine.stop()
