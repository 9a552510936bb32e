"""What storage of a shape log is, how it fails, and the files under it.

``LogStorage`` is what ``ShapeLog`` appends its frames (``frames.py``) to and reads them
back from; there are three: ``file_storage.FileStorage`` (a file per shape),
``memory_storage.MemoryStorage`` (no storage directory) and
``followed_storage.FollowedStorage`` (a log another process writes). A write that fails
raises ``StorageError``: ingest stops until writing works again.

The files are written through ``AppendFile``: an append either lands whole or leaves the
file as it was (a short or failed write is cut back), so what the log's index holds is
always on the file. Descriptors are kept open, a bounded number of them
(``log_files_budget``). Every system call goes through an ``Io`` object, so tests can
make a chosen write or fsync fail as a full or broken disk does.
"""

from __future__ import annotations

import errno
import os
import resource
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from pysync.log.frames import Frame
from pysync.private_files import FILE_MODE, make_dir, open_private


class StorageError(RuntimeError):
    """Shape storage could not be written (disk full, I/O error): ingest stops until
    writing works again; nothing that was not stored is acknowledged."""

    def __init__(self, path: Path | str, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        super().__init__(f"cannot write {path}: {reason}")
        self.path = Path(path)
        self.errno = cause.errno
        self.reason = reason

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


class LogCorruptError(RuntimeError):
    """A frame in the middle of a log fails its checksum: stop rather than drop the
    good frames after it."""

    def __init__(self, path: Path | str, position: int, reason: str) -> None:
        super().__init__(
            f"shape log {path} is corrupt at byte {position} ({reason}) with more data after "
            f"it. Nothing was changed. To resync that shape from Postgres, move its directory "
            f"({Path(path).parent}) out of the storage directory and start again."
        )
        self.path = Path(path)
        self.position = position


class LogCutError(RuntimeError):
    """Bytes a reader was made to read are no longer the log's: a failed sync cut off
    what was not durable (the stream replays it) while a response was streamed from
    them. The response must end unfinished, so its client asks again."""

    def __init__(self, position: int, length: int, valid: int) -> None:
        super().__init__(
            f"the log was cut back to byte {valid} while bytes {position}-{position + length} "
            "were being streamed from it (a failed sync dropped what was not durable)"
        )


class Io:
    """The system calls storage makes; a test subclass fails chosen ones."""

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)


OS_IO = Io()


class AppendFile:
    """A file written only at its end, whole appends or nothing.

    After a failed write the file is cut back to its last good size; if even that fails,
    the next append cuts it first (or fails), so the file never holds a partial record
    in front of a later good one.
    """

    def __init__(self, path: Path, io: Io = OS_IO) -> None:
        self.path = path
        self.io = io
        try:
            make_dir(path.parent)
            fd = open_private(path, os.O_WRONLY)
            try:
                self.size = os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(path, exc) from exc
        self.synced = self.size
        self.generation = 0
        """Counts replacements of the file (compactions): a sync begun before one must
        not mark sizes of the file it replaced."""
        self._cut_pending = False

    def fd(self) -> int:
        return open_files.fd(self.path)

    def append(self, data: bytes) -> int:
        position = self.size
        try:
            fd = self.fd()
            if self._cut_pending:
                self.io.ftruncate(fd, position)
                self._cut_pending = False
        except OSError as exc:
            raise StorageError(self.path, exc) from exc
        view = memoryview(data)
        try:
            while view:
                written = self.io.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[written:]
        except OSError as exc:
            try:
                self.io.ftruncate(fd, position)
            except OSError:
                self._cut_pending = True
            raise StorageError(self.path, exc) from exc
        self.size = position + len(data)
        return position

    def sync(self) -> None:
        size = self.size
        try:
            self.io.fdatasync(self.fd())
        except OSError as exc:
            raise StorageError(self.path, exc) from exc
        self.synced = max(self.synced, size)

    def cut(self, size: int) -> None:
        try:
            self.io.ftruncate(self.fd(), size)
        except OSError as exc:
            raise StorageError(self.path, exc) from exc
        self.size = size
        self.synced = min(self.synced, size)

    def close(self) -> None:
        open_files.close(self.path)


class PendingSync:
    """What a sync makes durable of one log: what it had written when the sync began.

    ``run`` syncs the log's file (in a worker thread); ``mark`` records it as durable
    without that, after the whole filesystem was synced (``ShapeStore.syncfs``)."""

    __slots__ = ("_fsync", "mark")

    def __init__(self, fsync: Callable[[], None], mark: Callable[[], None]) -> None:
        self._fsync = fsync
        self.mark = mark

    def run(self) -> None:
        self._fsync()
        self.mark()


class LogStorage(Protocol):
    def append(self, data: bytes | bytearray) -> int:
        """Append ``data`` whole (or raise StorageError and leave nothing); returns the
        position it starts at."""

    def read(self, position: int, length: int) -> bytes: ...

    def size(self) -> int: ...

    def written_size(self) -> int:
        """Bytes in the file itself, buffered appends written out first (as far as they
        can be: a failed write leaves them to the next sync, which reports it). Another
        process following the log (``pysync serve --workers``) reads only the file."""

    def begin_sync(self) -> PendingSync:
        """On the event loop: write out what is buffered (StorageError); what is then on
        the file is made durable by the returned PendingSync, in another thread."""

    def discard_unsynced(self) -> int:
        """Cut off what was appended since the last successful sync; the new size."""

    def durable_size(self) -> int:
        """How much of the log a successful sync made durable."""

    def prepare_replacement(self, start: int, region: bytes, reader: Reader) -> object:
        """In a thread: the log with its bytes from ``start`` on replaced by ``region``
        (what is before ``start`` read through ``reader``), durable; for ``replace``."""

    def replace(self, start: int, end: int, prepared: object) -> int:
        """On the event loop: the prepared log in place of this one, with what this one
        holds after ``end`` added at its end; the new position of ``end``."""

    def drop_replacement(self, prepared: object) -> None:
        """A prepared replacement that will not be used."""

    def frames(self) -> Iterator[Frame]:
        """The frames stored, verified; cuts off a torn tail, raises LogCorruptError."""

    def reader(self) -> Reader:
        """Reads of what is stored now that go on working if the log is deleted (a
        response being streamed)."""

    def destroy(self) -> None: ...


class Reader(Protocol):
    def read(self, position: int, length: int) -> bytes:
        """``length`` bytes from ``position``, or LogCutError when they were cut off."""

    def cut(self, size: int) -> None:
        """The log was cut back to ``size`` bytes: nothing from there on may be read (the
        bytes written there next are other frames, or nothing)."""

    def close(self) -> None: ...


R = TypeVar("R", bound=Reader)


class CutReader:
    """What every reader shares: the bytes before ``valid`` are still the log's; reads
    past it raise (``cut`` lowers it)."""

    __slots__ = ("_valid",)

    def __init__(self, valid: int) -> None:
        self._valid = valid

    def _check(self, position: int, length: int) -> None:
        if position + length > self._valid:
            raise LogCutError(position, length, self._valid)

    def cut(self, size: int) -> None:
        self._valid = min(self._valid, size)


class Readers:
    """The readers of the responses being streamed from one log, told when it is cut
    back (held weakly: a response that ended, or was dropped, is forgotten)."""

    __slots__ = ("_live",)

    def __init__(self) -> None:
        self._live: weakref.WeakSet[Reader] = weakref.WeakSet()

    def add(self, reader: R) -> R:
        self._live.add(reader)
        return reader

    def cut(self, size: int) -> None:
        for reader in list(self._live):
            reader.cut(size)

    def forget(self) -> None:
        """Readers made so far read a file no cut of this log touches any more."""
        self._live = weakref.WeakSet()


class FdReader(CutReader):
    """Reads of a log file through a descriptor of its own (closed by ``close``, or when
    the reader is dropped unused), and of what was still buffered, not written, when the
    reader was made. It reads the file as it was then, even once compaction replaced it."""

    __slots__ = ("_fd", "_written", "_buffered", "__weakref__")

    def __init__(self, fd: int, written: int, buffered: bytes) -> None:
        super().__init__(written + len(buffered))
        self._fd = fd
        self._written = written
        self._buffered = buffered

    def read(self, position: int, length: int) -> bytes:
        self._check(position, length)
        written = self._written
        if position >= written:
            start = position - written
            return self._buffered[start : start + length]
        data = os.pread(self._fd, min(length, written - position), position)
        if position + length > written:
            data += self._buffered[: position + length - written]
        if len(data) != length:
            # Cut by another process (the writer a worker follows), or under this one.
            raise LogCutError(position, length, position + len(data))
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def log_files_budget() -> int:
    """How many shape log files stay open at once: a share of the open-files limit (read
    when first needed, after ``pysync serve`` raised it), so that thousands of busy shapes
    do not reopen their files on every write."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 8192
    return max(256, min(8192, soft // 4))


class _OpenFiles:
    """A bounded set of open files: 100,000 shapes must not hold 100,000 fds."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._fds: OrderedDict[Path, int] = OrderedDict()

    def fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._fds[path] = fd
        if self.limit is None:
            self.limit = log_files_budget()
        while len(self._fds) > self.limit:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def close(self, path: Path) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)


open_files = _OpenFiles()
"""The log files held open, shared by every ``AppendFile``."""
