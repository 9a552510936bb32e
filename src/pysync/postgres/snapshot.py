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

    def started_after(self, xid: int) -> bool:
        """Did ``xid`` start after the snapshot was taken (xid >= xmax)?"""
        return _widen(xid, self.xmax) >= self.xmax


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


def _plain_key_column(table: Table, name: str) -> bool:
    column = table.column(name)
    return column is not None and column.dims == 0 and (
        column.type_name in ("int2", "int4", "int8", "numeric", "uuid", "oid")
    )


def _column_text(table: Table, name: str) -> sql.Composable:
    """The column in its type's output format, as pgoutput sends it.

    ``::text`` differs from the output function for bool (``true`` vs ``t``) and bpchar
    (which drops the padding); ``format('%s')`` calls the output function. But
    ``format('%s', NULL)`` is ``''``, not NULL: without the CASE a NULL bool/bpchar
    became ``""`` in values and ``/""`` instead of ``/_`` in keys of PK-less tables,
    disagreeing with what replication sends for the same row.
    """
    column = table.column(name)
    ident = sql.Identifier(name)
    if column is not None and column.dims == 0 and column.type_name in ("bool", "bpchar"):
        return sql.SQL("CASE WHEN {0} IS NULL THEN NULL ELSE format('%%s', {0}) END").format(ident)
    return sql.SQL("{}::text").format(ident)


class OrderBy(msgspec.Struct, frozen=True):
    column: str
    descending: bool = False
    nulls_first: bool | None = None


def row_json_query(
    shape: Shape,
    *,
    extra_headers: dict[str, object] | None = None,
    subset_where: object | None = None,
    order_by: tuple[OrderBy, ...] = (),
    limit: int | None = None,
    offset: int | None = None,
) -> tuple[sql.Composed, list[object]]:
    """SELECT of one JSON text per row: key, value (selected columns) and headers.

    The subset arguments narrow and order it (subset snapshots); every value is bound.
    """
    table = shape.table
    prefix = relation_prefix(table.schema, table.name)
    # The key as a JSON string. Values of plain numeric or uuid key columns need no
    # escaping (no '/', nothing JSON escapes, never NULL in a primary key): writing them
    # straight in spares Postgres a replace() and to_json() per row.
    if table.primary_key and all(_plain_key_column(table, c) for c in table.primary_key):
        key_parts: list[sql.Composable] = [sql.SQL("%s")]
        params: list[object] = ['{"key":' + msgspec.json.encode(prefix).decode()[:-1]]
        for name in table.primary_key:
            key_parts += [sql.SQL(r"""'/\"' || {} || '\"'""").format(_column_text(table, name))]
        key = sql.SQL(" || ").join(key_parts) + sql.SQL(""" || '"'""")
    else:
        escaped: list[sql.Composable] = [sql.SQL("%s")]
        params = ['{"key":']
        prefix_parts: list[sql.Composable] = [sql.SQL("%s")]
        params_prefix: list[object] = [prefix]
        for name in table.identity:
            prefix_parts.append(
                sql.SQL("""coalesce('/"' || replace({}, '/', '//') || '"', '/_')""").format(
                    _column_text(table, name)
                )
            )
        escaped.append(sql.SQL("to_json({})::text").format(sql.SQL(" || ").join(prefix_parts)))
        params.extend(params_prefix)
        key = sql.SQL(" || ").join(escaped)
    names = sql.SQL(", ").join(sql.Literal(c) for c in shape.columns)
    values = sql.SQL(", ").join(_column_text(table, c) for c in shape.columns)
    headers = msgspec.json.encode(
        {"operation": "insert", "relation": [table.schema, table.name], **(extra_headers or {})}
    ).decode()
    parts: list[sql.Composable] = [
        sql.SQL(
            """SELECT {key} || ',"value":' """
            """|| json_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[])::text """
            """|| %s FROM {table}"""
        ).format(
            key=key, names=names, values=values,
            table=sql.Identifier(table.schema, table.name),
        )
    ]
    params.append(',"headers":' + headers + "}")
    conditions = [w for w in (shape.where, subset_where) if w is not None]
    for i, where in enumerate(conditions):
        where_sql, where_params = where.to_sql()  # type: ignore[attr-defined]
        parts.append(sql.SQL(" WHERE (" if i == 0 else " AND (") + sql.SQL(where_sql) + sql.SQL(")"))
        params.extend(where_params)
    if order_by:
        terms = []
        for term in order_by:
            nulls = "" if term.nulls_first is None else (" NULLS FIRST" if term.nulls_first else " NULLS LAST")
            terms.append(sql.SQL("{}" + (" DESC" if term.descending else " ASC") + nulls).format(
                sql.Identifier(term.column)))
        parts.append(sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms))
    if limit is not None:
        parts.append(sql.SQL(" LIMIT %s"))
        params.append(limit)
    if offset is not None:
        parts.append(sql.SQL(" OFFSET %s"))
        params.append(offset)
    return sql.Composed(parts), params


async def take_subset(
    conn: psycopg.AsyncConnection[Any],
    shape: Shape,
    *,
    mark: int,
    where: object | None,
    order_by: tuple[OrderBy, ...],
    limit: int | None,
    offset: int | None,
) -> tuple[SnapshotInfo, list[bytes]]:
    """A subset snapshot: rows of the shape narrowed by ``where``, at a recorded snapshot."""
    async with conn.transaction():
        info = await _begin_snapshot(conn)
        query, params = row_json_query(
            shape, extra_headers={"snapshot_mark": mark}, subset_where=where,
            order_by=order_by, limit=limit, offset=offset,
        )
        cur = await conn.execute(query, params)
        rows = [r[0] for r in await cur.fetchall()]
    return info, rows


async def _begin_snapshot(conn: psycopg.AsyncConnection[Any]) -> SnapshotInfo:
    """First statements of a snapshot transaction: its isolation and what it sees."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    cur = await conn.execute("SELECT pg_current_snapshot()::text, pg_current_wal_lsn() - '0/0'")
    row = await cur.fetchone()
    assert row is not None
    xmin, xmax, xip = parse_snapshot(row[0].decode() if isinstance(row[0], bytes) else row[0])
    return SnapshotInfo(xmin, xmax, xip, int(row[1]))


async def take_snapshot(
    conn: psycopg.AsyncConnection[Any], shape: Shape, log: ShapeLog, *, rows: bool = True
) -> SnapshotInfo:
    """Write the shape's rows into ``log`` as snapshot chunks ending with ``snapshot-end``.

    ``rows=False`` (``log=changes_only``) records the snapshot but writes no rows.
    """
    async with conn.transaction():
        info = await _begin_snapshot(conn)
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
        {"headers": {"control": "snapshot-end", "xmin": str(info.xmin), "xmax": str(info.xmax),
                     "xip_list": [str(x) for x in info.xip]}}
    )
    buffer.append(end)
    log.append_snapshot_chunk(chunk, b",".join(buffer), last=True)
    return info
