"""Dirty logs -> fsync -> acknowledged LSN.

Every ``interval`` the logs appended to since the last round are synced (in a thread);
only then is the position the collector had applied up to *before* the round
acknowledged: recorded durably first, then confirmed to Postgres. So the slot never
moves past anything a log does not hold durably, and after a crash it resends exactly
what is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pysync.log.storage import PendingSync, StorageError
from pysync.shapes.collector import Collector
from pysync.shapes.compactor import Compactor
from pysync.shapes.consumer import GONE, ShapeConsumer
from pysync.shapes.store import ShapeStore

log = logging.getLogger(__name__)

Failed = list[tuple[ShapeConsumer, StorageError]]
SYNCFS_FROM = 16
"""Dirty logs from which one syncfs beats an fsync each."""


class FlushTracker:
    def __init__(
        self,
        collector: Collector,
        store: ShapeStore,
        acknowledge: Callable[[int], None],
        *,
        on_failure: Callable[[StorageError, Failed], None],
        interval: float = 0.05,
        compactor: Compactor | None = None,
    ) -> None:
        """``on_failure``: called on the event loop when a sync failed (nothing was
        acknowledged)."""
        self.collector = collector
        self.compactor = compactor
        """Told of the synced logs that grew enough to be compacted."""
        self.store = store
        self.acknowledge = acknowledge
        """Confirms a position to Postgres (the replication stream's ``acknowledge``)."""
        self.interval = interval
        self.acknowledged = store.acknowledged
        self.on_failure = on_failure

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> bool:
        """One round; False if storage failed (then nothing was acknowledged)."""
        collector = self.collector
        target = collector.applied_end_lsn
        dirty = collector.appender.take()
        failed: Failed = []
        pending: list[tuple[ShapeConsumer, PendingSync]] = []
        for consumer in dirty:  # written out here, on the loop: appends happen here too
            if consumer.state is GONE:
                continue
            try:
                sync = consumer.log.begin_sync()
            except StorageError as exc:
                failed.append((consumer, exc))
                continue
            if sync is not None:
                pending.append((consumer, sync))
        if len(pending) >= SYNCFS_FROM and self.store.can_syncfs:
            # One syscall for the whole filesystem instead of one fsync per log: with a
            # thousand busy shapes, 1,000 fdatasyncs took 80-140 ms, a syncfs 5-8 ms here.
            try:
                await asyncio.to_thread(self.store.syncfs)
            except StorageError as exc:
                failed += [(consumer, exc) for consumer, _ in pending]
            else:
                for _, sync in pending:
                    sync.mark()
        elif pending:
            failed += await asyncio.to_thread(_sync, pending)
        for consumer, _ in failed:
            consumer.log.dirty = True
        failed = [(c, exc) for c, exc in failed if c.state is not GONE]
        if failed:
            self.on_failure(failed[0][1], failed)
            return False
        compactor = self.compactor
        if compactor is not None:
            for consumer, _ in pending:
                if consumer.log.compaction_due:
                    compactor.due(consumer)
        if target > self.acknowledged:
            try:
                await asyncio.to_thread(self.store.save_acknowledged, target)
            except StorageError as exc:
                self.on_failure(exc, [])
                return False
            self.acknowledged = target
            self.acknowledge(target)
        return True

    def rewind(self, lsn: int) -> None:
        """A new slot (or one found elsewhere) starts the count again at ``lsn``."""
        self.acknowledged = lsn


def _sync(pending: list[tuple[ShapeConsumer, PendingSync]]) -> Failed:
    failed: Failed = []
    for consumer, sync in pending:
        try:
            sync.run()
        except StorageError as exc:
            failed.append((consumer, exc))
    return failed
