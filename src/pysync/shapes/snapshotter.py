"""A shape's initial snapshot into its log, and subset snapshots.

Rows come from Postgres already encoded as Electric's JSON (``querying``) and go into the
log in chunks of about ``log.chunk_bytes``, so memory stays bounded for any table size
(a whole table is read a few MiB of blocks at a time). The last chunk ends with the
``snapshot-end`` control message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from pysync.log.log import ShapeLog
from pysync.postgres.catalog import Table
from pysync.postgres.snapshot import (
    SnapshotInfo,
    export_snapshot,
    fetch_rows,
    fetch_texts,
    fetch_value,
    imported_snapshot,
    snapshot_transaction,
    stream_bytes,
    table_blocks,
)
from pysync.shapes.definition import Shape, Subquery
from pysync.shapes.querying import (
    OrderBy,
    RowSql,
    Tagging,
    move_in_where,
    row_json_query,
    snapshot_rows,
    snapshot_where,
    subquery_rows_query,
)


class StaleSnapshot(Exception):
    """The snapshot does not see a transaction the stream already delivered (it has
    committed, but Postgres has not yet made it visible): take another one."""


def _check_seen(info: SnapshotInfo, seen: Sequence[int]) -> None:
    if any(not info.visible(xid) for xid in seen):
        raise StaleSnapshot


def snapshot_end(info: SnapshotInfo) -> bytes:
    return msgspec.json.encode(
        {
            "headers": {
                "control": "snapshot-end",
                "xmin": str(info.xmin),
                "xmax": str(info.xmax),
                "xip_list": [str(x) for x in info.xip],
            }
        }
    )


Helper = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any] | None]]
"""Lends a second session for a snapshot if one is free at once, else gives None."""

PARALLEL_BLOCKS = 1024
"""A table of at least this many blocks (8 MiB) is read by two sessions when a second
one is free (benchmarks/README.md, ``snapshot.py``: 0.77 -> 0.97 of ``COPY`` at 1M rows on
2 cores); one session reads a smaller table in a fraction of a second, not worth taking
a session other shapes may want."""


async def write_snapshot(
    conn: psycopg.AsyncConnection[Any],
    shape: Shape,
    log: ShapeLog,
    *,
    rows: bool = True,
    tagging: Tagging | None = None,
    seen: Sequence[int] = (),
    helper: Helper | None = None,
) -> SnapshotInfo:
    """Write the shape's rows into ``log`` as snapshot chunks ending with ``snapshot-end``.

    ``rows=False`` (``log=changes_only``) records the snapshot but writes no rows. A shape
    with ``IN (SELECT ...)`` reads them with ``tagging``'s views, at a snapshot that sees
    every transaction in ``seen`` (else StaleSnapshot, before anything is written).

    A whole table (no WHERE) is read in ranges of its blocks, each range's messages
    joined into one value by Postgres; with ``helper``'s second session, two sessions
    read the ranges at the one snapshot (exported by this one). A shape with a WHERE
    (which may use an index) streams row by row. Either way each message is the bytes
    ``row_json_query`` gives (``snapshot_rows``), in chunks cut where a row-at-a-time
    reader cuts them (``Chunks``).
    """
    chunks = Chunks(log)
    rest = b""
    async with snapshot_transaction(conn) as info:
        _check_seen(info, seen)
        if rows:
            row = snapshot_rows(shape, tagging)
            where = snapshot_where(shape, tagging)
            table = shape.table
            blocks = None
            if where is None and ranged(conn, table):
                heap, toast = await table_blocks(conn, table.schema, table.name)
                # Where most bytes are TOASTed values, a row is large and costs little
                # per row to stream; a range of blocks could hold too many of them.
                blocks = heap if toast <= heap else None
            if blocks is not None:
                rest = await _read_ranges(conn, table, blocks, row, chunks, helper)
            else:
                rest = await _stream(conn, table, row, where, chunks)
    chunks.last(rest + snapshot_end(info))
    return info


class Chunks:
    """Snapshot messages into a log's chunks, cut where a row-at-a-time reader cuts them:
    a chunk ends with the first message that brings it to ``log.chunk_bytes``, counting
    one separator per message."""

    def __init__(self, log: ShapeLog) -> None:
        self.log = log
        self.limit = log.chunk_bytes
        self.number = 0

    def append(self, payload: bytes) -> None:
        self.log.append_snapshot_chunk(self.number, payload, last=False)
        self.number += 1

    def last(self, payload: bytes) -> None:
        self.log.append_snapshot_chunk(self.number, payload, last=True)


class Lines:
    """Messages, each followed by a comma, cut into chunks by whole-buffer operations (no
    Python per message). ``,{"key":`` is where a message starts: a quote inside a JSON
    string is escaped, so nothing else holds it."""

    START = b',{"key":'

    def __init__(self, chunks: Chunks) -> None:
        self.chunks = chunks
        self.buffer = bytearray()

    def add(self, *pieces: bytes) -> None:
        buffer = self.buffer
        for piece in pieces:
            buffer += piece
        limit = self.chunks.limit
        while len(buffer) >= limit:
            # The first comma after a message at limit - 1 or later ends the chunk; if it
            # is the buffer's last, the next message (or ``take``) tells.
            end = buffer.find(self.START, limit - 1)
            if end < 0:
                return
            self._cut(end)

    def take(self) -> bytes:
        """The messages left, each followed by a comma."""
        if len(self.buffer) >= self.chunks.limit:
            self._cut(len(self.buffer) - 1)
        rest = bytes(self.buffer)
        self.buffer = bytearray()
        return rest

    def _cut(self, end: int) -> None:
        with memoryview(self.buffer) as view:
            chunk = bytes(view[:end])
        self.chunks.append(chunk)
        del self.buffer[: end + 1]


def ranged(conn: psycopg.AsyncConnection[Any], table: Table) -> bool:
    """Can the table be read by ranges of blocks? A TID range scan (Postgres 14) reads
    just the range; a partitioned table's own size says nothing of its partitions'."""
    return conn.info.server_version >= 140000 and not table.partitioned


class BlockRanges:
    """The table's blocks, handed out in ranges that give about ``RANGE_BYTES`` of
    messages each (sized by what the ranges so far gave); the last one is open (a block
    added since the size was read holds no row the snapshot sees, but costs nothing to
    read). Every row is in one range: the ranges split the tuple ids."""

    RANGE_BYTES = 4 << 20
    FIRST = 1  # the first range tells the size of a block's messages
    MOST = 1 << 16

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self.next: int | None = 0
        self.size = self.FIRST
        self.read = 0
        self.bytes = 0

    def take(self) -> tuple[int, int | None] | None:
        start = self.next
        if start is None:
            return None
        stop = start + self.size
        if stop >= self.blocks:
            self.next = None
            return start, None
        self.next = stop
        return start, stop

    def done(self, blocks: int, size: int) -> None:
        self.read += blocks
        self.bytes += size
        per_block = max(self.bytes // max(self.read, 1), 1)
        self.size = max(1, min(self.MOST, self.RANGE_BYTES // per_block))


async def _read_ranges(
    conn: psycopg.AsyncConnection[Any],
    table: Table,
    blocks: int,
    row: RowSql,
    chunks: Chunks,
    helper: Helper | None,
) -> bytes:
    ranges = BlockRanges(blocks)
    encoding = conn.info.encoding
    reader = _RangeReader(table, row, ranges, encoding)
    lines = Lines(chunks)
    if helper is None or blocks < PARALLEL_BLOCKS:
        await reader.read(conn, lines)
        return lines.take()
    snapshot = await export_snapshot(conn)
    async with helper() as other:
        if other is None:
            await reader.read(conn, lines)
            return lines.take()
        async with imported_snapshot(other, snapshot):
            others = Lines(chunks)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(reader.read(conn, lines))
                    group.create_task(reader.read(other, others))
            except ExceptionGroup as failed:
                # As one session would fail: callers tell a dropped table, a full disk, ...
                # by the exception's class.
                raise failed.exceptions[0] from None
    lines.add(others.take())
    return lines.take()


class _RangeReader:
    """Reads ranges of blocks in a session until none is left: one value per range, the
    messages' middles joined by Postgres with the constant end and start between them."""

    def __init__(self, table: Table, row: RowSql, ranges: BlockRanges, encoding: str) -> None:
        self.ranges = ranges
        self.prefix = row.prefix.encode(encoding)
        self.suffix = row.suffix.encode(encoding) + b","
        select = sql.SQL("SELECT string_agg({}, %s) FROM {} WHERE ctid >= %s::tid").format(
            row.middle, sql.Identifier(table.schema, table.name)
        )
        self.open = select
        self.closed = select + sql.SQL(" AND ctid < %s::tid")
        self.params = [*row.params, row.suffix + "," + row.prefix]

    async def read(self, conn: psycopg.AsyncConnection[Any], lines: Lines) -> None:
        ranges = self.ranges
        while (taken := ranges.take()) is not None:
            start, stop = taken
            if stop is None:
                value = await fetch_value(conn, self.open, [*self.params, f"({start},0)"])
            else:
                value = await fetch_value(
                    conn, self.closed, [*self.params, f"({start},0)", f"({stop},0)"]
                )
            if value is not None:
                lines.add(self.prefix, value, self.suffix)
            ranges.done((stop or ranges.blocks) - start, len(value or b""))


async def _stream(
    conn: psycopg.AsyncConnection[Any],
    table: Table,
    row: RowSql,
    where: tuple[str, list[object]] | None,
    chunks: Chunks,
) -> bytes:
    """Row by row, each message's middle from Postgres; the messages left over."""
    query = sql.SQL("SELECT {} FROM {}").format(
        row.middle, sql.Identifier(table.schema, table.name)
    )
    params = list(row.params)
    if where is not None:
        query = query + sql.SQL(" WHERE (") + sql.SQL(where[0]) + sql.SQL(")")
        params += where[1]
    encoding = conn.info.encoding
    prefix = row.prefix.encode(encoding)
    suffix = row.suffix.encode(encoding)
    between = suffix + b"," + prefix
    extra = len(prefix) + len(suffix) + 1
    limit = chunks.limit
    buffer: list[bytes] = []
    size = 0
    async for middle in stream_bytes(conn, query, params):
        buffer.append(middle)
        size += len(middle) + extra
        if size >= limit:
            chunks.append(prefix + between.join(buffer) + suffix)
            buffer = []
            size = 0
    return prefix + between.join(buffer) + suffix + b"," if buffer else b""


async def query_subset(
    conn: psycopg.AsyncConnection[Any],
    shape: Shape,
    *,
    mark: int,
    where: object | None,
    order_by: tuple[OrderBy, ...],
    limit: int | None,
    offset: int | None,
    tagging: Tagging | None = None,
) -> tuple[SnapshotInfo, list[bytes]]:
    """A subset snapshot: rows of the shape narrowed by ``where``, at a recorded snapshot."""
    query, params = row_json_query(
        shape,
        extra_headers={"snapshot_mark": mark},
        subset_where=where,
        order_by=order_by,
        limit=limit,
        offset=offset,
        tagging=tagging,
    )
    async with snapshot_transaction(conn) as info:
        rows = await fetch_rows(conn, query, params)
    return info, rows


async def query_move_in(
    conn: psycopg.AsyncConnection[Any],
    shape: Shape,
    tagging: Tagging,
    before: Sequence[Any],
    seen: Sequence[int],
) -> tuple[SnapshotInfo, list[bytes]]:
    """The rows a move-in brings into the shape (in it with the views after the move,
    not before it), tagged with the views after it, at a snapshot that sees ``seen``."""
    query, params = row_json_query(
        shape,
        extra_headers={"is_move_in": True},
        tagging=tagging,
        where_sql=move_in_where(shape, tagging.views, before),
    )
    async with snapshot_transaction(conn) as info:
        _check_seen(info, seen)
        rows = await fetch_rows(conn, query, params)
    return info, rows


async def query_subquery(
    conn: psycopg.AsyncConnection[Any],
    subquery: Subquery,
    views: Sequence[Any],
    needed: Sequence[str],
    seen: Sequence[int],
    limit: int | None = None,
) -> tuple[SnapshotInfo, list[tuple[Any, ...]]]:
    """A dependency's rows (identity texts, then ``needed`` texts), read with ``views``;
    at most ``limit`` of them."""
    query, params = subquery_rows_query(subquery, views, needed)
    if limit is not None:
        query = query + sql.SQL(" LIMIT {}").format(sql.Literal(limit))
    async with snapshot_transaction(conn) as info:
        _check_seen(info, seen)
        rows = await fetch_texts(conn, query, params)
    return info, rows
