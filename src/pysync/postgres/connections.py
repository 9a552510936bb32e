"""The engine's Postgres sessions, pooled (psycopg_pool): one layer for catalog work,
publishing and snapshots.

Every session formats values as the walsender does (the display settings), so snapshot
rows and replicated rows agree byte for byte, and no session waits without bound: catalog
work has a statement timeout, every session a lock timeout. The replication connection
is not pooled (it is one long COPY BOTH session, see ``replication``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pysync.postgres.session import display_options

AsyncConn = psycopg.AsyncConnection[Any]


class _RawText(Loader):
    """Snapshot rows arrive as JSON text: keep the bytes, skip decoding to str and back."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


async def _raw_text(conn: AsyncConn) -> None:
    conn.adapters.register_loader("text", _RawText)


def _options(conninfo: str, settings: dict[str, str]) -> str:
    """libpq ``options``: the caller's (from the URL), the display settings, ours."""
    given = psycopg.conninfo.conninfo_to_dict(conninfo).get("options") or ""
    ours = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{given} {display_options()} {ours}".strip()


class Connections:
    """Pools of sessions to the database pysync syncs from.

    ``catalog``: short statements (table lookups, publishing, slot checks), a few at
    once. ``snapshots``: snapshot and subset transactions, at most ``snapshots`` at
    once; further requests queue for a session (as Electric's pool does).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        snapshots: int = 5,
        catalog: int = 3,
        statement_timeout: float = 30.0,
        lock_timeout: float = 1.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.conninfo = conninfo
        self.lock_timeout = lock_timeout
        self._sizes = (catalog, snapshots)
        self._statement_timeout = statement_timeout
        self._connect_timeout = connect_timeout
        self._make_pools()

    def _make_pools(self) -> None:
        conninfo = self.conninfo
        catalog, snapshots = self._sizes
        base = {"autocommit": True}
        lock = {"lock_timeout": f"{int(self.lock_timeout * 1000)}"}
        statement = {"statement_timeout": f"{int(self._statement_timeout * 1000)}"}
        self.catalog: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
            conninfo,
            min_size=0,
            max_size=catalog,
            open=False,
            name="pysync-catalog",
            kwargs={**base, "options": _options(conninfo, {**lock, **statement})},
            check=AsyncConnectionPool.check_connection,
            timeout=self._connect_timeout,
        )
        self.snapshots: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
            conninfo,
            min_size=0,
            max_size=snapshots,
            open=False,
            name="pysync-snapshots",
            kwargs={**base, "options": _options(conninfo, lock)},
            configure=_raw_text,
            check=AsyncConnectionPool.check_connection,
            # A shape waits its turn for a session behind the other snapshots.
            timeout=600.0,
        )

    async def open(self) -> None:
        await self.catalog.open(wait=False)
        await self.snapshots.open(wait=False)

    async def close(self) -> None:
        await self.catalog.close()
        await self.snapshots.close()

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
        async with _connection(self.catalog) as conn:
            yield conn

    @asynccontextmanager
    async def snapshot_session(self) -> AsyncIterator[AsyncConn]:
        async with _connection(self.snapshots) as conn:
            yield conn


class DatabaseUnavailable(psycopg.OperationalError):
    """No session could be had in time: the database is down or unreachable."""


@asynccontextmanager
async def _connection(pool: AsyncConnectionPool[AsyncConn]) -> AsyncIterator[AsyncConn]:
    try:
        async with pool.connection() as conn:
            yield conn
    except PoolTimeout as exc:
        raise DatabaseUnavailable(f"no connection to the database ({exc})") from exc
