"""A standby ``pysync serve``: the shapes of a storage directory another pysync holds,
served read-only (a rolling deploy's overlap; ``serve/rolling.py`` takes over after).

The holder writes; the standby never writes a byte to the directory. It reads the
shapes' records from ``registry.jsonl`` (a shape is there once its snapshot is
complete), and a shape asked for is served from its log file, followed read-only as an
HTTP worker follows it (``FollowedStorage``), under the same handle and offsets: the
responses are the same bytes the holder gives.

There is no hub to say when a log grew (the holder may be an older pysync that knows
nothing of standbys), so the files are polled: every ``POLL_INTERVAL`` the size of each
log asked for (one ``stat``), every ``REGISTRY_POLLS`` polls the registry's. A commit
reaches a standby's clients at most one poll after the holder wrote it (it writes at
each flush round, 50 ms apart, or at once when it has HTTP workers).

A shape the registry has no record of (new, or still taking its snapshot) is not made
here: ``shape`` returns None and the caller waits for the takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from pysync.metrics import EngineMetrics
from pysync.postgres.catalog import load_table_async
from pysync.postgres.connections import Connections
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.definition import (
    Shape,
    ShapeDefinition,
    build_shape,
    retyped,
    subquery_relations,
)
from pysync.shapes.followed_storage import FollowedStorage
from pysync.shapes.log import ShapeLog
from pysync.shapes.storage import StorageError
from pysync.shapes.store import FORMAT, RegistryRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_INTERVAL = 0.02
"""Seconds between looks at the followed logs' sizes."""
REGISTRY_POLLS = 10
"""The registry is looked at every this many polls (new and deleted shapes)."""
COMPILE_TIMEOUT = 10.0


class StandbyStatus(enum.Enum):
    WAITING = "waiting"
    """Electric's health status while it waits for the lock and serves read-only."""


class RegistryReader:
    """``registry.jsonl`` read as the holder appends to it: the live records by handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, RegistryRecord] = {}
        self.by_key: dict[str, RegistryRecord] = {}
        """The live records by shape identity (``Shape.key``)."""
        self._inode = 0
        self._read = 0
        self._decoder = msgspec.json.Decoder(RegistryRecord)

    def refresh(self) -> set[str]:
        """Read what was appended since the last call; the handles deleted meanwhile."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return self._restart()
        if stat.st_ino != self._inode or stat.st_size < self._read:
            gone = self._restart()
            self._inode = stat.st_ino
        else:
            gone = set()
        if stat.st_size == self._read:
            return gone
        with open(self.path, "rb") as file:
            file.seek(self._read)
            data = file.read(stat.st_size - self._read)
        whole = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._read += whole
        for line in data[:whole].splitlines():
            try:
                record = self._decoder.decode(line)
            except msgspec.DecodeError:
                continue  # a torn line the holder's recovery drops too
            if record.op == "add":
                self.records[record.handle] = record
                if record.key is not None:
                    self.by_key[record.key] = record
                gone.discard(record.handle)
                continue
            removed = self.records.pop(record.handle, None)
            if removed is not None:
                gone.add(record.handle)
                if removed.key is not None and self.by_key.get(removed.key) is removed:
                    del self.by_key[removed.key]
        return gone

    def _restart(self) -> set[str]:
        """The file was replaced (compacted) or removed: read again from its start."""
        gone = set(self.records)
        self.records.clear()
        self.by_key.clear()
        self._inode = self._read = 0
        return gone


class StandbyEngine:
    """A ``ShapeSource`` over another pysync's storage directory, read-only."""

    def __init__(
        self,
        storage_dir: Path,
        connections: Connections,
        metrics: EngineMetrics,
        *,
        chunk_bytes: int,
    ) -> None:
        self.storage_dir = storage_dir
        self.connections = connections
        self.metrics = metrics
        self.chunk_bytes = chunk_bytes
        self.status = StandbyStatus.WAITING
        self.problem: str | None = None
        self.warnings: list[str] = []
        self.storage_error: StorageError | None = None
        self.started = asyncio.Event()
        self.registry = RegistryReader(storage_dir / "registry.jsonl")
        self.consumers: dict[str, ShapeConsumer] = {}
        """The shapes followed (asked for), by handle."""
        self._by_definition: dict[ShapeDefinition, ShapeConsumer] = {}
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.connections.open()
        if _format(self.storage_dir) == FORMAT:
            await asyncio.to_thread(self.registry.refresh)
            self._task = asyncio.create_task(self._poll(), name="pysync-standby-poll")
        else:
            # Another layout (an older pysync): nothing of it is read; every request
            # waits for the takeover, which resyncs the shapes.
            log.warning(
                "storage %s has another format: no shape served before the takeover",
                self.storage_dir,
            )
        self.started.set()

    async def stop_following(self) -> None:
        """No more polls of the logs and the registry (the consumers stay as they are)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def stop(self) -> None:
        await self.stop_following()
        await self.connections.close()

    # -- following ------------------------------------------------------------------

    async def _poll(self) -> None:
        polls = 0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            polls += 1
            if polls % REGISTRY_POLLS == 0:
                self._refresh()
            for consumer in list(self.consumers.values()):
                storage = consumer.log.storage
                assert isinstance(storage, FollowedStorage)
                try:
                    size = os.stat(storage.path).st_size
                except FileNotFoundError:
                    continue  # deleted: the registry says so in a moment
                if size != storage.end:  # a compaction's new file differs in size too
                    consumer.log.follow(size)

    def _refresh(self) -> None:
        """New records, and the shapes deleted meanwhile dropped (on the event loop
        only: one reader of the registry at a time)."""
        for handle in self.registry.refresh():
            consumer = self.consumers.get(handle)
            if consumer is not None:
                self.forget(consumer, "deleted")

    def forget(self, consumer: ShapeConsumer, reason: str) -> None:
        """Its clients are told to refetch (409), as the holder tells its own."""
        consumer.invalidate(reason)
        self.consumers.pop(consumer.handle, None)
        for definition in [d for d, c in self._by_definition.items() if c is consumer]:
            del self._by_definition[definition]
        consumer.log.storage.destroy()

    def release(self) -> list[ShapeConsumer]:
        """The followed shapes, no longer held here (the takeover hands them over)."""
        consumers = list(self.consumers.values())
        self.consumers.clear()
        self._by_definition.clear()
        return consumers

    # -- ShapeSource ------------------------------------------------------------------

    @property
    def last_seen_lsn(self) -> int:
        return 0  # not known here: responses fall back to the shape's own (as Electric)

    def known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        consumer = self._by_definition.get(definition)
        return consumer if consumer is not None and not consumer.gone else None

    def get(self, handle: str) -> ShapeConsumer | None:
        return self.consumers.get(handle)

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        return await self.existing(definition, verify=False)

    async def existing(self, definition: ShapeDefinition, *, verify: bool) -> ShapeConsumer | None:
        """The stored shape for ``definition``, followed from now on; None if storage has
        none. ``verify``: checked against the catalog (raises ShapeError: the table is
        gone), else a shape known as spelt is taken as it is."""
        consumer = self.known(definition)
        if consumer is not None and not verify:
            return consumer
        if subquery_relations(definition):
            return None  # never recorded (it does not outlive its process): a new shape
        shape = await self._build(definition)
        if consumer is not None and consumer.shape.key == shape.key:
            return consumer
        record = self._record(shape)
        if record is None:
            self._refresh()  # made just now?
            record = self._record(shape)
        if record is None or record.snapshot is None:
            return None
        consumer = self.consumers.get(record.handle)
        if consumer is None:
            try:
                consumer = self._follow(record, shape)
            except FileNotFoundError:
                return None  # deleted since: a new shape, made after the takeover
        self._by_definition[definition] = consumer
        return consumer

    def _record(self, shape: Shape) -> RegistryRecord | None:
        record = self.registry.by_key.get(shape.key)
        if record is None or (record.types is not None and retyped(shape, record.types)):
            return None
        return record

    def _follow(self, record: RegistryRecord, shape: Shape) -> ShapeConsumer:
        storage = FollowedStorage(self.storage_dir / "shapes" / record.handle / "log")
        consumer = ShapeConsumer(
            record.handle, shape, ShapeLog(storage, self.chunk_bytes), record.snapshot
        )
        # Its file is closed with it: after a takeover, requests that hold it go on
        # reading it as long as they run (``rolling.py``).
        weakref.finalize(consumer, storage.close)
        self.consumers[record.handle] = consumer
        return consumer

    async def _build(self, definition: ShapeDefinition) -> Shape:
        """The shape as the catalog makes it now (ShapeError if it cannot be made)."""
        async with self.connections.catalog_session() as conn:
            table = await load_table_async(conn, definition.schema, definition.table)
        return build_shape(definition, table)

    async def compute(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), COMPILE_TIMEOUT)

    def storage_failure(self) -> asyncio.Future[None]:
        return self._never  # the holder's storage failing is the holder's to report


def _format(directory: Path) -> str | None:
    try:
        return (directory / "format").read_text().strip()
    except OSError:
        return None
