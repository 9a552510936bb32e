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

from pysync.shapes.collector import Collector
from pysync.shapes.consumer import GONE, ShapeConsumer
from pysync.shapes.storage import StorageError
from pysync.shapes.store import ShapeStore

log = logging.getLogger(__name__)

Failed = list[tuple[ShapeConsumer, StorageError]]


class FlushTracker:
    def __init__(
        self,
        collector: Collector,
        store: ShapeStore,
        acknowledge: Callable[[int], None],
        *,
        interval: float = 0.05,
    ) -> None:
        self.collector = collector
        self.store = store
        self.acknowledge = acknowledge
        """Confirms a position to Postgres (the replication stream's ``acknowledge``)."""
        self.interval = interval
        self.acknowledged = store.acknowledged
        self.on_failure: Callable[[StorageError, Failed], None] = lambda exc, failed: None
        """Called on the event loop when a sync failed: nothing was acknowledged."""

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> bool:
        """One round; False if storage failed (then nothing was acknowledged)."""
        collector = self.collector
        target = collector.applied_end_lsn
        dirty, collector.dirty = collector.dirty, set()
        failed: Failed = []
        syncs: list[tuple[ShapeConsumer, Callable[[], None]]] = []
        for consumer in dirty:  # written out here, on the loop: appends happen here too
            if consumer.state is GONE:
                continue
            try:
                sync = consumer.log.begin_sync()
            except StorageError as exc:
                failed.append((consumer, exc))
                continue
            if sync is not None:
                syncs.append((consumer, sync))
        if syncs:
            failed += await asyncio.to_thread(_sync, syncs)
        failed = [(c, exc) for c, exc in failed if c.state is not GONE]
        if failed:
            self.on_failure(failed[0][1], failed)
            return False
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


def _sync(syncs: list[tuple[ShapeConsumer, Callable[[], None]]]) -> Failed:
    failed: Failed = []
    for consumer, sync in syncs:
        try:
            sync()
        except StorageError as exc:
            failed.append((consumer, exc))
    return failed
