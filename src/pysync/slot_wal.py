"""What the replication slot costs Postgres, as Electric reports it: the WAL the server
retains for the slot and how far the slot's confirmed position trails the server's.

Read from ``pg_replication_slots`` when ``/metrics`` is scraped (at most once a second),
so it costs nothing between scrapes and the gauges never block.
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg

from pysync.postgres.connections import Connections

log = logging.getLogger(__name__)

_QUERY = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8
FROM pg_replication_slots WHERE slot_name = %s
"""
MIN_INTERVAL = 1.0
TIMEOUT = 2.0


class SlotWal:
    def __init__(self, connections: Connections, slot: str) -> None:
        self.connections = connections
        self.slot = slot
        self.retained_bytes = 0.0
        self.confirmed_lag_bytes = 0.0
        self._read_at = -MIN_INTERVAL

    async def refresh(self) -> None:
        """Read the slot again; a failure keeps the last values (a scrape must answer
        while the database is down: health says why)."""
        now = time.monotonic()
        if now - self._read_at < MIN_INTERVAL:
            return
        self._read_at = now
        try:
            await asyncio.wait_for(self._read(), TIMEOUT)
        except (psycopg.Error, TimeoutError) as exc:
            log.debug("could not read the replication slot's WAL use: %s", exc)

    async def _read(self) -> None:
        async with self.connections.catalog_session() as conn:
            cursor = await conn.execute(_QUERY, (self.slot,))
            row = await cursor.fetchone()
        if row is not None:
            retained, lag = row
            self.retained_bytes = float(retained or 0)
            self.confirmed_lag_bytes = float(lag or 0)
