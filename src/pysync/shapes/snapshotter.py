"""A shape's initial snapshot into its log, and subset snapshots.

Rows come from Postgres already encoded as Electric's JSON (``querying``) and go into the
log in chunks of about ``log.chunk_bytes``, so memory stays bounded for any table size.
The last chunk ends with the ``snapshot-end`` control message.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

from pysync.postgres.snapshot import SnapshotInfo, fetch_rows, snapshot_transaction, stream_rows
from pysync.shapes.definition import Shape
from pysync.shapes.log import ShapeLog
from pysync.shapes.querying import OrderBy, row_json_query


def snapshot_end(info: SnapshotInfo) -> bytes:
    return msgspec.json.encode(
        {"headers": {"control": "snapshot-end", "xmin": str(info.xmin), "xmax": str(info.xmax),
                     "xip_list": [str(x) for x in info.xip]}}
    )


async def write_snapshot(
    conn: psycopg.AsyncConnection[Any], shape: Shape, log: ShapeLog, *, rows: bool = True
) -> SnapshotInfo:
    """Write the shape's rows into ``log`` as snapshot chunks ending with ``snapshot-end``.

    ``rows=False`` (``log=changes_only``) records the snapshot but writes no rows.
    """
    chunk = 0
    buffer: list[bytes] = []
    size = 0
    limit = log.chunk_bytes
    async with snapshot_transaction(conn) as info:
        if rows:
            query, params = row_json_query(shape)
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
) -> tuple[SnapshotInfo, list[bytes]]:
    """A subset snapshot: rows of the shape narrowed by ``where``, at a recorded snapshot."""
    query, params = row_json_query(
        shape, extra_headers={"snapshot_mark": mark}, subset_where=where,
        order_by=order_by, limit=limit, offset=offset,
    )
    async with snapshot_transaction(conn) as info:
        rows = await fetch_rows(conn, query, params)
    return info, rows
