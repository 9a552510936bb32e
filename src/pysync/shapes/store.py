"""Where shapes live between restarts: a storage directory (or nothing, in memory).

    <storage>/pysync.lock        one pysync at a time (flock, holder's PID)
    <storage>/format             the layout version; another one is not read
    <storage>/registry.jsonl     shapes: "add" records when complete, "del" when gone
    <storage>/slot.json          the server and slot the logs came from
    <storage>/acknowledged       the last LSN confirmed to Postgres (written before it is)
    <storage>/shapes/<handle>/log

The directory is 0700 and its files 0600 (``private_files``): logs hold row values, the
registry the shapes' params. Every write that matters is synced before pysync relies on it; a write that fails raises
``StorageError`` and leaves the file as it was.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from struct import Struct
from typing import TYPE_CHECKING

import msgspec

from pysync.lockfile import DirectoryLock
from pysync.log.file_storage import FileStorage
from pysync.log.log import CHUNK_BYTES, COMPACT_MIN_BYTES, ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.log.storage import OS_IO, AppendFile, Io, LogStorage, StorageError
from pysync.postgres.lsn import format_lsn
from pysync.postgres.snapshot import SnapshotInfo
from pysync.private_files import make_dir, open_private, tighten
from pysync.shapes.definition import Shape, ShapeDefinition

if TYPE_CHECKING:
    from pysync.shapes.consumer import ShapeConsumer

log = logging.getLogger(__name__)

FORMAT = "2"
"""2: frames with checksums. A directory of another format is resynced, not read."""

_ACK = Struct(">QI")  # lsn, crc32 of it
_last_handle_time = 0


def new_handle(shape: Shape) -> str:
    """``<hash>-<UTC microseconds>``, strictly increasing in a process: never reused."""
    global _last_handle_time
    now = max(time.time_ns() // 1000, _last_handle_time + 1)
    _last_handle_time = now
    return f"{int(shape.key[:8], 16)}-{now}"


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


class SlotIdentity(msgspec.Struct, frozen=True):
    system_id: str
    timeline: int
    database: str
    slot: str


def gap_reason(
    known: SlotIdentity | None,
    found: SlotIdentity,
    *,
    created: bool,
    confirmed: int,
    acknowledged: int,
    has_shapes: bool,
) -> str | None:
    """Why the slot just connected to cannot continue the stored shapes, or None.

    A slot behind what was acknowledged is fine (Postgres restarted before saving the
    slot: it resends, shapes skip what they have); ahead of it, or new, or on another
    server or timeline, transactions may be missing: a gap.
    """
    if known is None:
        return "there is no record of the slot the stored shapes came from" if has_shapes else None
    if (known.system_id, known.database, known.slot) != (
        found.system_id,
        found.database,
        found.slot,
    ):
        return f"this is another server or slot ({found}) than the shapes came from ({known})"
    if known.timeline != found.timeline:
        return f"the server's timeline changed ({known.timeline} -> {found.timeline}: failover or restore)"
    if created:
        return f"replication slot '{found.slot}' was missing and had to be created"
    if confirmed > acknowledged:
        return (
            f"replication slot '{found.slot}' is at {format_lsn(confirmed)}, past what pysync "
            f"acknowledged ({format_lsn(acknowledged)}): it was moved or recreated"
        )
    return None


class ShapeStore:
    """Logs, the registry, the slot's identity and the acknowledged LSN of one engine."""

    def __init__(
        self,
        directory: Path | None,
        chunk_bytes: int = CHUNK_BYTES,
        io: Io = OS_IO,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
    ) -> None:
        self.directory = directory
        self.chunk_bytes = chunk_bytes
        self.compact_min_bytes = compact_min_bytes
        self.io = io
        self._lock = DirectoryLock(directory, "storage directory") if directory else None
        self._registry: AppendFile | None = None
        # Snapshot tasks write from worker threads, possibly while the engine stops.
        self._registry_lock = threading.Lock()
        self._identity: SlotIdentity | None = None
        self._acknowledged = 0
        self._ack_fd: int | None = None
        self._dir_fd: int | None = None

    # -- lifecycle -------------------------------------------------------------------

    def lock(self) -> None:
        """Take the directory (DirectoryInUse if another pysync has it), without reading
        it yet: a standby (``serve/rolling.py``) waits for it before ``open``."""
        if self._lock is not None and not self._lock.held:
            self._lock.acquire()

    def open(self) -> None:
        """Take the directory (DirectoryInUse if another pysync has it) and read it."""
        if self.directory is None or self._lock is None:
            return
        self.lock()
        try:
            tighten(self.directory, "storage directory")
            make_dir(self.directory / "shapes")
            # Opened once: syncfs reports a writeback error to descriptors older than it.
            self._dir_fd = os.open(self.directory / "shapes", os.O_RDONLY)
            self._check_format()
            self._identity = self._read_identity()
            self._acknowledged = self._read_acknowledged()
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        with self._registry_lock:
            if self._registry is not None:
                self._registry.close()
                self._registry = None
        for fd in (self._ack_fd, self._dir_fd):
            if fd is not None:
                os.close(fd)
        self._ack_fd = self._dir_fd = None
        if self._lock is not None:
            self._lock.release()

    def _check_format(self) -> None:
        assert self.directory is not None
        path = self.directory / "format"
        found = path.read_text().strip() if path.exists() else None
        if found == FORMAT:
            return
        if found is not None or (self.directory / "registry.jsonl").exists():
            log.warning(
                "storage %s has format %s, not %s: every stored shape is resynced",
                self.directory,
                found or "1",
                FORMAT,
            )
            for name in ("registry.jsonl", "slot.json", "acknowledged"):
                (self.directory / name).unlink(missing_ok=True)
            shutil.rmtree(self.directory / "shapes", ignore_errors=True)
            make_dir(self.directory / "shapes")
        _write_durably(path, (FORMAT + "\n").encode())

    # -- logs ------------------------------------------------------------------------

    def new_log(self, handle: str) -> ShapeLog:
        if self.directory is None:
            storage: LogStorage = MemoryStorage()
        else:
            storage = FileStorage(self.directory / "shapes" / handle, self.io)
        return ShapeLog(storage, self.chunk_bytes, self.compact_min_bytes)

    def discard(self, handle: str) -> None:
        if self.directory is not None:
            FileStorage.remove(self.directory / "shapes" / handle)

    def orphans(self, keep: set[str]) -> Iterator[str]:
        if self.directory is None:
            return
        for entry in (self.directory / "shapes").iterdir():
            if entry.name not in keep:
                yield entry.name

    @property
    def can_syncfs(self) -> bool:
        return self._dir_fd is not None and _syncfs is not None

    def syncfs(self) -> None:
        """Make every shape log durable at once (``syncfs(2)`` of their filesystem);
        StorageError if any write back failed (which log is not known: all count)."""
        assert self._dir_fd is not None and _syncfs is not None and self.directory is not None
        if _syncfs(self._dir_fd) != 0:
            code = ctypes.get_errno()
            raise StorageError(self.directory / "shapes", OSError(code, os.strerror(code)))

    def probe(self) -> None:
        """Raise StorageError unless a write of some size can be made durable now."""
        if self.directory is None:
            return
        path = self.directory / ".probe"
        try:
            probe = AppendFile(path, self.io)
            try:
                probe.append(bytes(64 * 1024))
                probe.sync()
            finally:
                probe.close()
        finally:
            path.unlink(missing_ok=True)

    # -- the registry ----------------------------------------------------------------

    def remember(self, consumer: ShapeConsumer) -> None:
        shape = consumer.shape
        self._write(
            RegistryRecord(
                "add",
                consumer.handle,
                shape.definition,
                consumer.snapshot,
                shape.key,
                {c.name: c.type_oid for c in shape.table.columns},
            )
        )

    def forget(self, handle: str) -> None:
        self._write(RegistryRecord("del", handle))

    def _write(self, record: RegistryRecord) -> None:
        if self.directory is None:
            return
        with self._registry_lock:
            if self._registry is None:
                self._registry = AppendFile(self.directory / "registry.jsonl", self.io)
            self._registry.append(msgspec.json.encode(record) + b"\n")
            self._registry.sync()

    def has_records(self) -> bool:
        if self.directory is None:
            return False
        path = self.directory / "registry.jsonl"
        return path.exists() and path.stat().st_size > 0

    def recorded(self) -> list[RegistryRecord]:
        """Shapes that were complete at the last stop, oldest first; compacts the file."""
        if self.directory is None:
            return []
        path = self.directory / "registry.jsonl"
        if not path.exists():
            return []
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
        with self._registry_lock:
            if self._registry is not None:
                self._registry.close()
                self._registry = None
            _write_durably(path, b"".join(msgspec.json.encode(r) + b"\n" for r in live.values()))
        return list(live.values())

    # -- the slot --------------------------------------------------------------------

    @property
    def slot_identity(self) -> SlotIdentity | None:
        return self._identity

    def save_slot_identity(self, identity: SlotIdentity) -> None:
        if identity == self._identity:
            return
        if self.directory is not None:
            _write_durably(self.directory / "slot.json", msgspec.json.encode(identity))
        self._identity = identity

    @property
    def acknowledged(self) -> int:
        return self._acknowledged

    def save_acknowledged(self, lsn: int) -> None:
        """Record ``lsn`` durably before it is confirmed to Postgres: a slot found past
        it later was moved by someone else (a gap)."""
        if self.directory is not None:
            if self._ack_fd is None:
                self._ack_fd = open_private(self.directory / "acknowledged", os.O_RDWR)
            record = _ACK.pack(lsn, zlib.crc32(lsn.to_bytes(8, "big")))
            try:
                os.pwrite(self._ack_fd, record, 0)  # one sector: replaced whole
                self.io.fdatasync(self._ack_fd)
            except OSError as exc:
                raise StorageError(self.directory / "acknowledged", exc) from exc
        self._acknowledged = lsn

    def _read_identity(self) -> SlotIdentity | None:
        assert self.directory is not None
        try:
            return msgspec.json.decode(
                (self.directory / "slot.json").read_bytes(), type=SlotIdentity
            )
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    def _read_acknowledged(self) -> int:
        assert self.directory is not None
        try:
            lsn, crc = _ACK.unpack((self.directory / "acknowledged").read_bytes()[: _ACK.size])
        except (OSError, struct.error):  # missing or torn: unknown
            return 0
        return lsn if zlib.crc32(lsn.to_bytes(8, "big")) == crc else 0


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs, where it reports write-back errors (Linux 5.8 and later)."""
    release = platform.release().split(".")
    try:
        if platform.system() != "Linux" or (int(release[0]), int(release[1])) < (5, 8):
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError, ValueError, IndexError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def _write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (write, fsync, rename, fsync dir)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(path, exc) from exc
