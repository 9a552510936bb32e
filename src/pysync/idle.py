"""Idle close: every database connection closed after a while without activity, so a
database that scales to zero (Neon and the like) can (Electric's
``ELECTRIC_REPLICATION_IDLE_TIMEOUT``).

Activity is a transaction on the replication stream (Electric's measure) or a shape
request, answered or waiting: a client long-polling a quiet database keeps the
connections open, since closing them would leave its request waiting for changes
nobody reads. The engine reopens them for the next shape request (``Engine.wake``).

The check runs a few times per timeout, never per change or per request: a request
only stamps a time, a transaction is seen as the collector's position moving on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pysync.postgres.connections import Connections

log = logging.getLogger(__name__)

MAX_CHECK_INTERVAL = 1.0
"""Seconds between checks at most (a closed connection is late by at most this)."""


class IdleClose:
    def __init__(
        self,
        timeout: float,
        position: Callable[[], int],
        busy: Callable[[], bool],
        close: Callable[[], Awaitable[None]],
        reopen: Callable[[], Awaitable[None]],
    ) -> None:
        """``position``: the WAL position replication got to (moves on with every
        transaction); ``busy``: a request is being answered or waits for changes, or a
        session is in use; ``close``: close every connection; ``reopen``: open them
        again (raises when it cannot, connections closed)."""
        self.timeout = timeout
        self.position = position
        self.busy = busy
        self.close = close
        self.reopen = reopen
        self.asleep = False
        """The connections are closed (``wake`` opens them)."""
        self.last_active = time.monotonic()
        self._position = 0
        self._lock = asyncio.Lock()
        """Held while closing or reopening: one reopening for all the requests that
        arrive meanwhile."""

    async def wake(self) -> None:
        """A shape request: reopen the connections if they are closed."""
        self.touch()
        if not self.asleep:
            return
        async with self._lock:
            if self.asleep:
                await self.reopen()
                self.asleep = False

    def touch(self) -> None:
        """A shape request arrived."""
        self.last_active = time.monotonic()

    async def run(self) -> None:
        """Close once idle for ``timeout``, then return (``Engine.wake`` starts it again)."""
        self.last_active = time.monotonic()
        self._position = self.position()
        interval = min(self.timeout / 4, MAX_CHECK_INTERVAL)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            position = self.position()
            if position != self._position or self.busy():
                self._position, self.last_active = position, now
            elif now - self.last_active >= self.timeout:
                # No await between the checks and this: a request from here on waits
                # for the reopening.
                self.asleep = True
                log.info(
                    "closing every database connection after %.3g s without activity; "
                    "the next shape request opens them again",
                    now - self.last_active,
                )
                async with self._lock:
                    await self.close()
                return


async def catch_up(
    connections: Connections,
    applied: Callable[[], int],
    request_position: Callable[[], None],
    wait: float,
) -> None:
    """Until replication applied what the server had written when asked (``applied``:
    its position), or ``wait`` seconds passed."""
    async with connections.catalog_session() as conn:
        # A standby (Postgres 16 replicates from one) has no WAL of its own to flush.
        cursor = await conn.execute(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_flush_lsn() END - '0/0')::int8"
        )
        row = await cursor.fetchone()
    target = int(row[0]) if row else 0
    deadline = time.monotonic() + wait
    while applied() < target and time.monotonic() < deadline:
        request_position()  # the server's answer (a keepalive) moves ``applied`` on
        await asyncio.sleep(0.02)
