"""Shape storage that cannot be written (disk full, I/O error), until it can be again.

A failed write or sync stops ingest: nothing further is acknowledged, and what the logs
hold that was not durable is dropped (replication resumes from the acknowledged position,
which precedes all of it, and each shape skips what its log already holds). Meanwhile the
engine reports degraded, new shapes are refused and live requests answered (503). A probe
writes to the storage directory, backing off, until a write succeeds; then ingest resumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pysync.log.storage import StorageError
from pysync.metrics import EngineMetrics
from pysync.shapes.collector import Collector
from pysync.shapes.flush import Failed, FlushTracker
from pysync.shapes.registry import ShapeRegistry
from pysync.shapes.store import ShapeStore

log = logging.getLogger(__name__)

PROBE_MAX_SECONDS = 5.0
"""Longest pause between attempts to write storage again."""


class StorageOutage:
    def __init__(
        self,
        store: ShapeStore,
        registry: ShapeRegistry,
        collector: Collector,
        flush: FlushTracker,
        metrics: EngineMetrics,
        *,
        degrade: Callable[[str], None],
        recover: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self.store = store
        self.registry = registry
        self.collector = collector
        self.flush = flush
        self.metrics = metrics
        self._degrade = degrade
        self._recover = recover
        self._spawn = spawn
        self.error: StorageError | None = None
        """Set while storage fails: ingest is stopped, new shapes are refused."""
        self.halt: StorageError | None = None
        """The failure ingest stops for (it raises it between the items it reads)."""
        self._writable = asyncio.Event()
        self._writable.set()
        self._failure: asyncio.Future[None] | None = None

    def failed(self, exc: StorageError) -> None:
        """Stop ingest (nothing more is acknowledged) until storage can be written."""
        self.metrics.storage_errors.inc()
        if self.error is None:
            log.error("%s: ingest stopped, new shapes refused until it can be written again", exc)
            self.error = exc
            self.halt = exc
            self._degrade(f"storage: {exc}")
            self._writable.clear()
            # Live requests answer now (503) instead of waiting for changes that won't come.
            self.failure()
            self._spawn(self._probe(), "pysync-storage-probe")

    def flush_failed(self, exc: StorageError, failed: Failed) -> None:
        # On the event loop, with ingest suspended between transactions: the logs lose
        # what was not durable before anything more is appended, and replication
        # resumes from the acknowledged position, which precedes all of it.
        self.failed(exc)
        # Nothing applied since the last acknowledgement counts any more: the flush
        # tracker must not confirm it (the stream delivers it again).
        self.collector.rewind(self.flush.acknowledged)
        self.halt = self.halt or exc
        for consumer, _ in failed:
            if consumer.subquery is not None:
                # its views are ahead of what its log keeps: the replay cannot rebuild it
                self.registry.invalidate(consumer, "its log lost what it had not synced")
                continue
            try:
                consumer.log.discard_unsynced()
                consumer.storage_rolled_back()
                # Now, before the replay writes other frames there: the workers that
                # follow this log (the hub announces its size) see it shrink and
                # index it anew, instead of reading on from where they were.
                consumer.log.notify()
            except StorageError:
                self.registry.invalidate(consumer, "its log could not be repaired")

    def failure(self) -> asyncio.Future[None]:
        """Done when storage fails (already done while it is failing)."""
        future = self._failure
        if future is None or (future.done() and self.error is None):
            future = self._failure = asyncio.get_running_loop().create_future()
        if self.error is not None and not future.done():
            future.set_result(None)
        return future

    async def resume(self) -> None:
        """Wait until storage can be written, then lift the halt: ingest calls this
        before each attempt to replicate."""
        await self._writable.wait()
        self.halt = None

    async def _probe(self) -> None:
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(self.store.probe)
            except StorageError as exc:
                log.debug("storage still failing: %s", exc)
                delay = min(delay * 2, PROBE_MAX_SECONDS)
                continue
            break
        log.warning("shape storage can be written again: resuming ingest")
        self.error = None
        self._recover()
        self._writable.set()
