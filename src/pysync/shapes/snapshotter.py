"""A shape's initial snapshot into its log, and subset snapshots.

Rows come from Postgres already encoded as Electric's JSON (``querying``) and go into the
log in chunks of about ``log.chunk_bytes``, so memory stays bounded for any table size.
The last chunk ends with the ``snapshot-end`` control message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from pysync.log.log import ShapeLog
from pysync.postgres.snapshot import (
    SnapshotInfo,
    fetch_rows,
    fetch_texts,
    snapshot_transaction,
    stream_rows,
)
from pysync.shapes.definition import Shape, Subquery
from pysync.shapes.querying import (
    OrderBy,
    Tagging,
    move_in_where,
    row_json_query,
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


async def write_snapshot(
    conn: psycopg.AsyncConnection[Any],
    shape: Shape,
    log: ShapeLog,
    *,
    rows: bool = True,
    tagging: Tagging | None = None,
    seen: Sequence[int] = (),
) -> SnapshotInfo:
    """Write the shape's rows into ``log`` as snapshot chunks ending with ``snapshot-end``.

    ``rows=False`` (``log=changes_only``) records the snapshot but writes no rows. A shape
    with ``IN (SELECT ...)`` reads them with ``tagging``'s views, at a snapshot that sees
    every transaction in ``seen`` (else StaleSnapshot, before anything is written).
    """
    chunk = 0
    buffer: list[bytes] = []
    size = 0
    limit = log.chunk_bytes
    async with snapshot_transaction(conn) as info:
        _check_seen(info, seen)
        if rows:
            query, params = row_json_query(shape, tagging=tagging)
            async for entry in stream_rows(conn, query, params):
                buffer.append(entry)
                size += len(entry) + 1
                if size >= limit:
                    log.append_snapshot_chunk(chunk, b",".join(buffer), last=False)
                    chunk += 1
                    buffer = []
                    size = 0
    buffer.append(snapshot_end(info))
    log.append_snapshot_chunk(chunk, b",".join(buffer), last=True)
    return info


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
