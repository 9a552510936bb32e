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
    ) -> None:
        """``position``: the WAL position replication got to (moves on with every
        transaction); ``busy``: a request is being answered or waits for changes, or a
        session is in use; ``close``: close every connection."""
        self.timeout = timeout
        self.position = position
        self.busy = busy
        self.close = close
        self.last_active = time.monotonic()
        self._position = 0

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
                # No await between the checks and ``close`` marking the engine asleep:
                # a request after this point waits for the reopening.
                log.info(
                    "closing every database connection after %.3g s without activity; "
                    "the next shape request opens them again",
                    now - self.last_active,
                )
                await self.close()
                return
