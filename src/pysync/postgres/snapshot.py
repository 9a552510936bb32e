"""Initial snapshots: a shape's rows at a REPEATABLE READ snapshot, as log entries.

Rows are turned into Electric's JSON in SQL (as Electric does) and streamed into the
shape log in chunks, so memory stays bounded for any table size. The snapshot's
``pg_current_snapshot()`` tells which replicated transactions it already contains.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.adapt import Loader

from pysync.postgres.catalog import Table
from pysync.postgres.session import display_options
from pysync.shapes.changes import relation_prefix
from pysync.shapes.definition import Shape
from pysync.shapes.log import ShapeLog


class SnapshotInfo(msgspec.Struct, frozen=True):
    xmin: int
    xmax: int
    xip: tuple[int, ...]
    lsn: int

    def visible(self, xid: int) -> bool:
        """Was the transaction ``xid`` (32-bit, from pgoutput) committed in the snapshot?"""
        full = _widen(xid, self.xmax)
        if full < self.xmin:
            return True
        return full < self.xmax and full not in self.xip


def _widen(xid: int, reference: int) -> int:
    """A 32-bit xid as the 64-bit xid8 nearest to ``reference`` (wraparound-aware)."""
    full = (reference & ~0xFFFFFFFF) | xid
    if full > reference + 0x80000000:
        full -= 1 << 32
    elif full < reference - 0x80000000:
        full += 1 << 32
    return full


def parse_snapshot(text: str) -> tuple[int, int, tuple[int, ...]]:
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), tuple(int(x) for x in xip.split(",") if x)


class _RawText(Loader):
    """Rows arrive as JSON text: keep the bytes, skip decoding to str and back."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


class SnapshotPool:
    """At most ``size`` snapshot connections, reused; requests beyond that wait."""

    def __init__(self, conninfo: str, size: int = 5) -> None:
        self.conninfo = conninfo
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, options=display_options()
                )
                conn.adapters.register_loader("text", _RawText)
            try:
                yield conn
            except BaseException:
                await conn.close()
                raise
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._idle.append(conn)
            else:
                await conn.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


def _column_text(table: Table, name: str) -> sql.Composable:
    """The column in its type's output format, as pgoutput sends it.

    ``::text`` differs from the output function for bool (``true`` vs ``t``) and bpchar
    (which drops the padding); ``format('%s')`` calls the output function.
    """
    column = table.column(name)
    ident = sql.Identifier(name)
    if column is not None and column.dims == 0 and column.type_name in ("bool", "bpchar"):
        return sql.SQL("format('%%s', {})").format(ident)
    return sql.SQL("{}::text").format(ident)


def row_json_query(shape: Shape) -> tuple[sql.Composed, list[object]]:
    """SELECT of one JSON text per row: key, value (selected columns) and headers."""
    table = shape.table
    prefix = relation_prefix(table.schema, table.name)
    key_parts: list[sql.Composable] = [sql.SQL("%s")]
    params: list[object] = [prefix]
    for name in table.identity:
        key_parts.append(
            sql.SQL("""coalesce('/"' || replace({}, '/', '//') || '"', '/_')""").format(
                _column_text(table, name)
            )
        )
    names = sql.SQL(", ").join(sql.Literal(c) for c in shape.columns)
    values = sql.SQL(", ").join(_column_text(table, c) for c in shape.columns)
    headers = msgspec.json.encode(
        {"operation": "insert", "relation": [table.schema, table.name]}
    ).decode()
    query = sql.SQL(
        """SELECT '{{"key":' || to_json({key})::text || ',"value":' """
        """|| json_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[])::text """
        """|| %s FROM {table}"""
    ).format(
        key=sql.SQL(" || ").join(key_parts), names=names, values=values,
        table=sql.Identifier(table.schema, table.name),
    )
    params.append(',"headers":' + headers + "}")
    if shape.where is not None:
        where_sql, where_params = shape.where.to_sql()  # type: ignore[attr-defined]
        query = sql.Composed([query, sql.SQL(" WHERE "), sql.SQL(where_sql)])
        params.extend(where_params)
    return query, params


async def take_snapshot(
    conn: psycopg.AsyncConnection[Any], shape: Shape, log: ShapeLog, *, rows: bool = True
) -> SnapshotInfo:
    """Write the shape's rows into ``log`` as snapshot chunks ending with ``snapshot-end``.

    ``rows=False`` (``log=changes_only``) records the snapshot but writes no rows.
    """
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur = await conn.execute("SELECT pg_current_snapshot()::text, pg_current_wal_lsn() - '0/0'")
        row = await cur.fetchone()
        assert row is not None
        xmin, xmax, xip = parse_snapshot(row[0].decode() if isinstance(row[0], bytes) else row[0])
        info = SnapshotInfo(xmin, xmax, xip, int(row[1]))
        chunk = 0
        buffer: list[bytes] = []
        size = 0
        limit = log.chunk_bytes
        if rows:
            query, params = row_json_query(shape)
            cursor = conn.cursor()
            async for (entry,) in cursor.stream(query, params, size=1000):
                buffer.append(entry)
                size += len(entry) + 1
                if size >= limit:
                    log.append_snapshot_chunk(chunk, b",".join(buffer), last=False)
                    chunk += 1
                    buffer = []
                    size = 0
    end = msgspec.json.encode(
        {"headers": {"control": "snapshot-end", "xmin": str(xmin), "xmax": str(xmax),
                     "xip_list": [str(x) for x in xip]}}
    )
    buffer.append(end)
    log.append_snapshot_chunk(chunk, b",".join(buffer), last=True)
    return info
