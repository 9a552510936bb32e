"""A standby ``pysync serve``: the shapes of a storage directory another pysync holds,
served read-only (a rolling deploy's overlap; ``serve/rolling.py`` takes over after).

The holder writes; the standby never writes a byte to the directory. It reads the
shapes' records from ``registry.jsonl`` (a shape is there once its snapshot is
complete), and a shape asked for is served from its log file, followed read-only as an
HTTP worker follows it (``FollowedStorage``), under the same handle and offsets: the
responses are the same bytes the holder gives.

There is no hub to say when a log grew (the holder may be an older pysync that knows
nothing of standbys), so the files are polled: every ``POLL_INTERVAL`` the size of each
log a request used within ``hold_seconds`` (the longest a request waits: one ``fstat``
each), every ``REGISTRY_POLLS`` polls the registry and the logs' paths (a compaction puts
a new file in place). A commit reaches a standby's clients at most one poll after the
holder wrote it (it writes at each flush round, 50 ms apart, or at once when it has
HTTP workers). A log not polled is looked at when a request uses it. The polls take at
most a tenth of the time: with very many logs in use, they come less often.

A shape the registry has no record of (new, or still taking its snapshot) is not made
here: ``shape`` returns None and the caller waits for the takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from pysync.log.followed_storage import FollowedStorage
from pysync.log.log import ShapeLog
from pysync.log.storage import StorageError
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
        hold_seconds: float,
    ) -> None:
        self.storage_dir = storage_dir
        self.connections = connections
        self.metrics = metrics
        self.chunk_bytes = chunk_bytes
        self.hold_seconds = hold_seconds
        """Logs used this recently are polled (a request may be waiting on them): the
        longest a long-poll or an SSE response lasts, and a second."""
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
        self.readable = False
        """Is the directory of this pysync's format (else nothing of it is served)?"""

    async def start(self) -> None:
        await self.connections.open()
        self.readable = _format(self.storage_dir) == FORMAT
        if self.readable:
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
        pause = POLL_INTERVAL
        said = ""
        while True:
            await asyncio.sleep(pause)
            started = time.monotonic()
            polls += 1
            try:
                self._poll_once(paths=polls % REGISTRY_POLLS == 0)
            except OSError as exc:  # following must outlive a failed read: said once
                if str(exc) != said:
                    said = str(exc)
                    log.warning("reading the holder's files failed (retrying): %s", exc)
            pause = max(POLL_INTERVAL, 9 * (time.monotonic() - started))

    def _poll_once(self, *, paths: bool) -> None:
        if paths:
            self._refresh()
        used = time.monotonic() - self.hold_seconds
        for consumer in list(self.consumers.values()):
            if consumer.last_used >= used:
                _catch_up(consumer, paths)

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
        return self._used(consumer) if consumer is not None and not consumer.gone else None

    def get(self, handle: str) -> ShapeConsumer | None:
        consumer = self.consumers.get(handle)
        return self._used(consumer) if consumer is not None else None

    def _used(self, consumer: ShapeConsumer) -> ShapeConsumer:
        """``consumer``, up to date: polled from now on (caught up now if it was not)."""
        now = time.monotonic()
        if consumer.last_used < now - self.hold_seconds:
            _catch_up(consumer, True)
        consumer.last_used = now
        return consumer

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        return await self.existing(definition, verify=False)

    async def existing(self, definition: ShapeDefinition, *, verify: bool) -> ShapeConsumer | None:
        """The stored shape for ``definition``, followed from now on; None if storage has
        none. ``verify``: checked against the catalog (raises ShapeError: the table is
        gone), else a shape known as spelt is taken as it is."""
        consumer = self.known(definition)
        if consumer is not None and not verify:
            return consumer
        if not self.readable or subquery_relations(definition):
            # Nothing read; a shape with subqueries is never recorded (it does not
            # outlive its process): made after the takeover.
            return None
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
        return self._used(consumer)

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


def _catch_up(consumer: ShapeConsumer, by_path: bool) -> None:
    """Index what the holder appended to ``consumer``'s log. ``by_path``: the file now
    at its path (a compaction's new file: its size differs); else the one followed."""
    storage = consumer.log.storage
    assert isinstance(storage, FollowedStorage)
    try:
        size = os.stat(storage.path).st_size if by_path else storage.file_size()
    except FileNotFoundError:
        return  # deleted: the registry says so in a moment
    if size != storage.end:
        consumer.log.follow(size)
