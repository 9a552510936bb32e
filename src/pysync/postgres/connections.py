"""The engine's Postgres sessions, pooled (psycopg_pool): one layer for catalog work,
publishing and snapshots.

Every session formats values as the walsender does (the display settings), so snapshot
rows and replicated rows agree byte for byte, and no session waits without bound: catalog
work has a statement timeout, every session a lock timeout. The replication connection
is not pooled (it is one long COPY BOTH session, see ``replication``).

Behind a transaction pooler (``pooled=True``: ``--pooled-database-url``, e.g. PgBouncer
with ``pool_mode=transaction``) a session keeps no state between transactions: the
settings are set in each transaction (``session.PooledConnection``), every catalog
session is one transaction, and nothing is prepared by name (psycopg would after five
executions of a statement; the next transaction may be on a server that lacks it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pysync.postgres.session import (
    DISPLAY_SETTINGS,
    PooledConnection,
    display_options,
    local_settings,
    set_locals,
)

AsyncConn = psycopg.AsyncConnection[Any]


class _RawText(Loader):
    """Snapshot rows arrive as JSON text: keep the bytes, skip decoding to str and back."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


async def _raw_text(conn: AsyncConn) -> None:
    conn.adapters.register_loader("text", _RawText)


def _session(
    conninfo: str, pooled: bool, settings: dict[str, str], raw_text: bool = False
) -> dict[str, Any]:
    """A pool's connection arguments: ``settings`` (and the display settings) as start-up
    parameters of a direct session, or to be set in each transaction of a pooled one."""
    every = {**DISPLAY_SETTINGS, **settings}

    async def configure(conn: AsyncConn) -> None:
        if isinstance(conn, PooledConnection):
            conn.settings = every
        if raw_text:
            await _raw_text(conn)

    if not pooled:
        kwargs = {"autocommit": True, "options": _options(conninfo, settings)}
        return {"kwargs": kwargs, "configure": configure}
    return {
        # PgBouncer refuses start-up parameters it does not know (``options`` among
        # them) unless told to ignore them, and then they are lost: none are sent.
        "kwargs": {"autocommit": True, "prepare_threshold": None},
        "connection_class": PooledConnection,
        "configure": configure,
    }


def _options(conninfo: str, settings: dict[str, str]) -> str:
    """libpq ``options``: the caller's (from the URL), the display settings, ours."""
    given = psycopg.conninfo.conninfo_to_dict(conninfo).get("options") or ""
    ours = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{given} {display_options()} {ours}".strip()


class Connections:
    """Pools of sessions to the database pysync syncs from.

    ``catalog``: short statements (table lookups, publishing, slot checks), a few at
    once. ``snapshots``: snapshot and subset transactions, at most ``snapshots`` at
    once; further requests queue for a session (as Electric's pool does). ``pooled``:
    ``conninfo`` is a transaction pooler in front of the database (see above).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        pooled: bool = False,
        snapshots: int = 5,
        catalog: int = 3,
        statement_timeout: float = 30.0,
        lock_timeout: float = 1.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.conninfo = conninfo
        self.pooled = pooled
        self.lock_timeout = lock_timeout
        self._sizes = (catalog, snapshots)
        self._statement_timeout = statement_timeout
        self._connect_timeout = connect_timeout
        self._make_pools()

    def _make_pools(self) -> None:
        conninfo = self.conninfo
        pooled = self.pooled
        catalog, snapshots = self._sizes
        lock = {"lock_timeout": f"{int(self.lock_timeout * 1000)}"}
        statement = {"statement_timeout": f"{int(self._statement_timeout * 1000)}"}
        self.catalog: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
            conninfo,
            min_size=0,
            max_size=catalog,
            open=False,
            name="pysync-catalog",
            check=AsyncConnectionPool.check_connection,
            timeout=self._connect_timeout,
            **_session(conninfo, pooled, {**lock, **statement}),
        )
        self.snapshots: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
            conninfo,
            min_size=0,
            max_size=snapshots,
            open=False,
            name="pysync-snapshots",
            check=AsyncConnectionPool.check_connection,
            # A shape waits its turn for a session behind the other snapshots.
            timeout=600.0,
            **_session(conninfo, pooled, lock, raw_text=True),
        )

    async def open(self) -> None:
        await self.catalog.open(wait=False)
        await self.snapshots.open(wait=False)

    async def close(self) -> None:
        await self.catalog.close()
        await self.snapshots.close()

    async def check_pooled(self, slot: str) -> None:
        """At start, not at the first shape: the pooled URL works (a pooler that refuses
        pysync's sessions says so here) and leads to the database whose slot ``slot``
        replication reads: snapshots from another server or database would not match
        the stream (a standby fails too: snapshots read ``pg_current_wal_lsn()``)."""
        where = _where(self.conninfo)
        try:
            async with self.catalog_session() as conn:
                cursor = await conn.execute(_SAME_DATABASE, (slot,))
                row = await cursor.fetchone()
                await conn.execute("SELECT pg_current_wal_lsn()")
        except psycopg.Error as exc:  # DatabaseUnavailable too
            reason = " ".join(str(exc).split())
            raise PooledUnusable(
                f"cannot use the pooled database URL ({where}): {reason}; {_CHECK}"
            ) from None
        if row is None or not row[0]:
            raise PooledUnusable(
                f"the pooled database URL ({where}) does not lead to the database "
                f"replication reads (the replication slot {slot!r} of DATABASE_URL's "
                f"database is not on its server); {_CHECK}"
            )

    async def reopen(self) -> None:
        """Open again after ``close`` (a closed psycopg pool cannot be: new ones)."""
        self._make_pools()
        await self.open()

    def busy(self) -> bool:
        """Is a session in use or waited for (a snapshot, a catalog query)?"""
        for pool in (self.catalog, self.snapshots):
            stats = pool.get_stats()
            if stats.get("pool_size", 0) > stats.get("pool_available", 0):
                return True
            if stats.get("requests_waiting", 0):
                return True
        return False

    @asynccontextmanager
    async def catalog_session(self) -> AsyncIterator[AsyncConn]:
        """A session for catalog work; through a pooler, one transaction (its settings
        hold only in one, and it must not run on a server without them)."""
        async with _connection(self.catalog) as conn:
            settings = local_settings(conn)
            if not settings:
                yield conn
                return
            async with conn.transaction():
                sets, params = set_locals(settings)
                await conn.execute(f"SELECT {sets}", params)
                yield conn

    @asynccontextmanager
    async def snapshot_session(self) -> AsyncIterator[AsyncConn]:
        async with _connection(self.snapshots) as conn:
            yield conn

    @asynccontextmanager
    async def spare_snapshot_session(self) -> AsyncIterator[AsyncConn | None]:
        """A second session for a snapshot if the pool has one now, else None: it never
        queues (two snapshots each holding a session and waiting for another would wait
        on each other) nor goes before a shape waiting for its first."""
        pool = self.snapshots
        stats = pool.get_stats()
        idle = stats.get("pool_available", 0) or stats.get("pool_size", 0) < pool.max_size
        if stats.get("requests_waiting", 0) or not idle:
            yield None
            return
        try:
            conn = await pool.getconn(timeout=SPARE_WAIT)
        except PoolTimeout:
            yield None
            return
        try:
            yield conn
        finally:
            await pool.putconn(conn)


SPARE_WAIT = 1.0
"""Seconds a snapshot waits for a second session the pool is opening."""


class PooledUnusable(RuntimeError):
    """The pooled URL does not lead to the database replication reads; the message
    says why."""


_CHECK = "check --pooled-database-url / PYSYNC_POOLED_DATABASE_URL"
_SAME_DATABASE = (
    "SELECT EXISTS (SELECT FROM pg_replication_slots"
    " WHERE slot_name = %s AND database = current_database())"
)


class DatabaseUnavailable(psycopg.OperationalError):
    """No session could be had in time: the database is down or unreachable."""


@asynccontextmanager
async def _connection(pool: AsyncConnectionPool[AsyncConn]) -> AsyncIterator[AsyncConn]:
    try:
        async with pool.connection() as conn:
            yield conn
    except PoolTimeout as exc:
        raise DatabaseUnavailable(f"no connection to the database ({exc})") from exc


def _where(conninfo: str) -> str:
    """host:port/dbname of ``conninfo`` (never its password), for messages."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    return (
        f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
    )
