"""Snapshot transactions: rows at a REPEATABLE READ snapshot, and what that snapshot saw.

``pg_current_snapshot()`` tells which replicated transactions a snapshot already
contains (``SnapshotInfo.visible``); that is how a shape's snapshot and the replication
stream agree. What the rows are (the SQL) is the caller's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.string import ByteaBinaryLoader

from pysync.postgres.session import local_settings, set_locals

Query = sql.Composed | sql.SQL | str
_SNAPSHOT = "SELECT pg_current_snapshot()::text, pg_current_wal_lsn() - '0/0'"


class SnapshotInfo(msgspec.Struct, frozen=True):
    xmin: int
    xmax: int
    xip: tuple[int, ...]
    lsn: int
    """``pg_current_wal_lsn()`` when the snapshot was taken."""

    def visible(self, xid: int) -> bool:
        """Was the transaction ``xid`` (32-bit, from pgoutput) committed in the snapshot?"""
        full = _widen(xid, self.xmax)
        if full < self.xmin:
            return True
        return full < self.xmax and full not in self.xip

    def started_after(self, xid: int) -> bool:
        """Did ``xid`` start after the snapshot was taken (xid >= xmax)?"""
        return _widen(xid, self.xmax) >= self.xmax


def after_snapshot(
    info: SnapshotInfo | None, xid: int, commit_lsn: int, filtering: bool
) -> tuple[bool, bool]:
    """Is the transaction ``xid`` (committed at ``commit_lsn``) new to a shape whose rows
    come from the snapshot ``info``: not visible in it? And must the next ones still be
    checked (``filtering``)? Transactions arrive in commit order, so once one started
    after the snapshot, every later one committed after it too (only a replay from before
    it needs checking again)."""
    if info is None or not (filtering or commit_lsn < info.lsn):
        return True, filtering
    if info.visible(xid):
        return False, filtering
    return True, filtering and not info.started_after(xid)


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


@asynccontextmanager
async def snapshot_transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[SnapshotInfo]:
    """A REPEATABLE READ READ ONLY transaction; yields what its snapshot contains.

    Everything a snapshot needs happens in this one transaction, so it also works
    through a transaction pooler (one server connection per transaction): a pooled
    session's settings are set by the statement that reads the snapshot (no extra
    round trip), before any row is read."""
    sets, params = set_locals(local_settings(conn))
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur = await conn.execute(f"{_SNAPSHOT}, {sets}" if sets else _SNAPSHOT, params or None)
        row = await cur.fetchone()
        assert row is not None
        text = row[0].decode() if isinstance(row[0], bytes) else row[0]
        xmin, xmax, xip = parse_snapshot(text)
        yield SnapshotInfo(xmin, xmax, xip, int(row[1]))


@asynccontextmanager
async def imported_snapshot(
    conn: psycopg.AsyncConnection[Any], snapshot: str
) -> AsyncIterator[None]:
    """A REPEATABLE READ READ ONLY transaction at the snapshot another transaction
    exported (``export_snapshot``, still open): it sees exactly the rows that one sees."""
    sets, params = set_locals(local_settings(conn))
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # Before any query of the transaction; a utility statement takes no parameter
        # (the id comes from Postgres).
        await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        if sets:
            await conn.execute(f"SELECT {sets}", params)
        yield


async def export_snapshot(conn: psycopg.AsyncConnection[Any]) -> str:
    """The id other sessions import this transaction's snapshot by, while it is open."""
    cursor = await conn.execute("SELECT pg_export_snapshot()")
    row = await cursor.fetchone()
    assert row is not None
    value = row[0]
    return value.decode() if isinstance(value, bytes) else str(value)


async def table_blocks(
    conn: psycopg.AsyncConnection[Any], schema: str, name: str
) -> tuple[int, int]:
    """The table's size in blocks now, and its TOAST table's (0, 0 if it is gone: the
    reading query says so)."""
    cursor = await conn.execute(
        "SELECT pg_relation_size(c.oid) / b, coalesce(pg_relation_size(nullif(c.reltoastrelid,"
        " 0)), 0) / b FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
        " CAST(current_setting('block_size') AS bigint) b WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return 0, 0
    return int(row[0]), int(row[1])


async def fetch_value(
    conn: psycopg.AsyncConnection[Any], query: Query, params: list[object]
) -> Any:
    """The first column of the one row of ``query``."""
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def stream_bytes(
    conn: psycopg.AsyncConnection[Any], query: Query, params: list[object], size: int = 1000
) -> AsyncIterator[bytes]:
    """The first column of each row of ``query``, a text, as its bytes; fetched ``size``
    rows at a time (memory stays bounded for any table). Binary results: a text's binary
    form is its bytes, so psycopg's compiled bytea loader takes them without a Python call
    per row."""
    cursor = conn.cursor()
    cursor.adapters.register_loader("text", ByteaBinaryLoader)
    async for (value,) in cursor.stream(query, params, binary=True, size=size):
        yield value


async def fetch_rows(
    conn: psycopg.AsyncConnection[Any], query: Query, params: list[object]
) -> list[Any]:
    """The first column of every row of ``query``."""
    cursor = await conn.execute(query, params)
    return [row[0] for row in await cursor.fetchall()]


async def fetch_texts(
    conn: psycopg.AsyncConnection[Any], query: Query, params: list[object]
) -> list[tuple[str | None, ...]]:
    """Every row of ``query``, whose columns are all text, as str (snapshot sessions
    load text as bytes)."""
    cursor = await conn.execute(query, params)
    return [
        tuple(None if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in row)
        for row in await cursor.fetchall()
    ]
