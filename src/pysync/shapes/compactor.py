"""Runs the compaction of shape logs that grew enough (see ``compaction`` for the rules).

The flush tracker hands over every log it synced whose sealed part doubled since its last
compaction (``ShapeLog.compaction_due``); one at a time, each is compacted in a worker
thread from a reader of its own, then put in place on the event loop (``ShapeLog.
finish_compaction``), where no append can come between. Subquery shapes are not
compacted (their move-in and move-out events and tags are not plain changes).

A compaction that fails (a full disk while writing the compacted file) leaves the log as
it was: compaction is an optimisation, never a reason to stop ingest.
"""

from __future__ import annotations

import asyncio
import logging

from pysync.shapes.consumer import LIVE, ShapeConsumer

log = logging.getLogger(__name__)


class Compactor:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._due: dict[ShapeConsumer, None] = {}  # an ordered set
        self._wake = asyncio.Event()
        self.compactions = 0
        """Logs compacted so far (tests, metrics)."""

    def due(self, consumer: ShapeConsumer) -> None:
        if self.enabled and consumer.subquery is None and consumer not in self._due:
            self._due[consumer] = None
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._due:
                consumer = next(iter(self._due))
                del self._due[consumer]
                await self.compact(consumer)

    async def compact(self, consumer: ShapeConsumer) -> bool:
        """Compact one shape's log now; False when there was nothing to do or it failed."""
        if consumer.state is not LIVE:
            return False
        shape_log = consumer.log
        job = shape_log.begin_compaction(shape_log.storage.durable_size())
        if job is None:
            return False
        try:
            await asyncio.to_thread(job.run)
            if consumer.state is not LIVE:
                job.abandon()
                return False
            done = shape_log.finish_compaction(job)
        except OSError as exc:
            job.abandon()
            log.warning("compaction of shape %s failed, left as it was: %s", consumer.handle, exc)
            return False
        except Exception:
            # A bug: that log stays as it is, the other shapes are still compacted.
            job.abandon()
            log.exception("compaction of shape %s failed, left as it was", consumer.handle)
            return False
        if done:
            self.compactions += 1
            log.debug(
                "compacted shape %s: %d entries -> %d (%d bytes)",
                consumer.handle,
                job.entries_before,
                len(job.frames.offsets) if job.frames is not None else 0,
                job.compacted_bytes,
            )
        return done
