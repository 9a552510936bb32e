"""Live shapes: handles, logs, the registry of definitions on disk, recovery."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from pysync.postgres.snapshot import SnapshotInfo
from pysync.shapes.changes import ShapeConverter
from pysync.shapes.definition import Shape, ShapeDefinition
from pysync.shapes.log import CHUNK_BYTES, ShapeLog
from pysync.shapes.storage import FileStorage, LogStorage, MemoryStorage

_last_handle_time = 0


def new_handle(shape: Shape) -> str:
    """``<hash>-<UTC microseconds>``, strictly increasing in a process: never reused."""
    global _last_handle_time
    now = max(time.time_ns() // 1000, _last_handle_time + 1)
    _last_handle_time = now
    return f"{int(shape.key[:8], 16)}-{now}"


class LiveShape:
    """A shape being served: its log, snapshot state and per-relation converter."""

    __slots__ = (
        "handle", "shape", "log", "snapshot", "filtering", "pending", "converter",
        "last_used", "ready", "error", "gone", "__weakref__",
    )

    def __init__(self, handle: str, shape: Shape, log: ShapeLog) -> None:
        self.handle = handle
        self.shape = shape
        self.log = log
        self.snapshot: SnapshotInfo | None = None
        self.filtering = True
        # Transactions that arrive while the snapshot runs: (xid, commit_lsn, entries).
        self.pending: list[tuple[int, int, list[Any]]] | None = []
        self.converter: ShapeConverter | None = None
        self.last_used = time.monotonic()
        self.ready = False
        self.error: BaseException | None = None
        self.gone = False

    @property
    def definition(self) -> ShapeDefinition:
        return self.shape.definition

    def skip(self, xid: int, commit_lsn: int) -> bool:
        """Is this transaction already in the shape (its snapshot or its log)?"""
        if commit_lsn <= self.log.last_tx:
            return True
        info = self.snapshot
        if info is None:
            return False
        if self.filtering or commit_lsn < info.lsn:
            if info.visible(xid):
                return True
            if self.filtering and info.started_after(xid):
                # Transactions arrive in commit order: every later one committed after
                # the snapshot too (only a replay from before it needs checking again).
                self.filtering = False
        return False


class RegistryRecord(msgspec.Struct):
    op: str
    handle: str
    definition: ShapeDefinition | None = None
    snapshot: SnapshotInfo | None = None
    key: str | None = None
    """The shape's identity (table oid, key, columns, clause) when it was made."""
    types: dict[str, int] | None = None
    """Column name -> type oid when it was made: a schema change while pysync was down
    must not let a recovered shape serve rows of the old schema."""


class ShapeStore:
    """Where logs live: a directory per shape plus a registry, or memory."""

    def __init__(self, directory: Path | None, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.directory = directory
        self.chunk_bytes = chunk_bytes
        self._registry_fd: int | None = None
        # Snapshot tasks write from worker threads, possibly while the engine stops.
        self._registry_lock = threading.Lock()
        if directory is not None:
            (directory / "shapes").mkdir(parents=True, exist_ok=True)

    def new_log(self, handle: str) -> ShapeLog:
        return ShapeLog(self._storage(handle), self.chunk_bytes)

    def _storage(self, handle: str) -> LogStorage:
        if self.directory is None:
            return MemoryStorage()
        return FileStorage(self.directory / "shapes" / handle)

    def remember(self, live: LiveShape) -> None:
        table = live.shape.table
        self._write(RegistryRecord(
            "add", live.handle, live.definition, live.snapshot, live.shape.key,
            {c.name: c.type_oid for c in table.columns},
        ))

    def forget(self, handle: str) -> None:
        self._write(RegistryRecord("del", handle))

    def _write(self, record: RegistryRecord) -> None:
        if self.directory is None:
            return
        with self._registry_lock:
            if self._registry_fd is None:
                self._registry_fd = os.open(
                    self.directory / "registry.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
                )
            os.write(self._registry_fd, msgspec.json.encode(record) + b"\n")
            os.fdatasync(self._registry_fd)

    def recorded(self) -> Iterator[RegistryRecord]:
        """Shapes that were complete at the last stop, oldest first."""
        if self.directory is None:
            return
        path = self.directory / "registry.jsonl"
        if not path.exists():
            return
        live: dict[str, RegistryRecord] = {}
        decoder = msgspec.json.Decoder(RegistryRecord)
        for line in path.read_bytes().splitlines():
            try:
                record = decoder.decode(line)
            except msgspec.DecodeError:
                continue  # a torn last line
            if record.op == "add":
                live[record.handle] = record
            else:
                live.pop(record.handle, None)
        yield from live.values()
        # Compact: rewrite only what is live.
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in live.values()))
        os.replace(tmp, path)

    def discard(self, handle: str) -> None:
        if self.directory is not None:
            FileStorage(self.directory / "shapes" / handle).destroy()

    def orphans(self, keep: set[str]) -> Iterator[str]:
        if self.directory is None:
            return
        for entry in (self.directory / "shapes").iterdir():
            if entry.name not in keep:
                yield entry.name

    def close(self) -> None:
        with self._registry_lock:
            if self._registry_fd is not None:
                os.close(self._registry_fd)
                self._registry_fd = None

