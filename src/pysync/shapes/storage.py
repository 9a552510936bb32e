"""Bytes of shape logs: framed, checksummed, appended all or nothing.

A log is a sequence of frames ``[magic u8][flags u8][tx u64][op u64][length u32]
[crc32 of the header fields u32][crc32 of the payload u32][payload]``. ``ShapeLog`` keeps
the index. An append either lands whole or leaves the file as it was (a short or failed
write is cut back), so what the index holds is always on the file. Recovery tells a torn
tail (a crash during a write: no valid frame follows the last good one) from corruption
in the middle (a bad frame with good frames after it), which is never silently cut off:
that raises ``LogCorruptError`` naming the file and the position.

Every system call goes through an ``Io`` object, so tests can make a chosen write or
fsync fail as a full or broken disk does.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import resource
import shutil
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from struct import Struct
from typing import NamedTuple, Protocol

MAGIC = 0xA7
FLAG_SNAPSHOT_END = 1
_FIELDS = Struct(">BQQI")  # flags, tx, op, length
_CRCS = Struct(">II")  # of the fields, of the payload
HEADER_SIZE = 1 + _FIELDS.size + _CRCS.size
BUFFER_BYTES = 256 * 1024
"""A log's appends collect in memory up to this much before they are written."""
MAX_FRAME = 1 << 31
"""Larger than any chunk or change we write: a larger length is corruption, not data."""

_MAGIC_BYTE = bytes([MAGIC])
_crc32 = zlib.crc32


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


_HEADER = Struct(">BBQQIII")  # magic, the fields, their crc32, the payload's crc32
_pack_fields = _FIELDS.pack
_pack_header = _HEADER.pack


def frame_header(tx: int, op: int, payload: bytes, flags: int = 0) -> bytes:
    """The header of a frame for ``payload`` (the payload follows it)."""
    # The header has a checksum of its own: a torn frame (valid header, payload cut
    # short by the end of the file) is then told apart from a corrupted length.
    length = len(payload)
    fields_crc = _crc32(_pack_fields(flags, tx, op, length))
    return _pack_header(MAGIC, flags, tx, op, length, fields_crc, _crc32(payload))


class Frame(NamedTuple):
    tx: int
    op: int
    flags: int
    position: int
    """Where the payload starts."""
    length: int


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
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
            self.size = path.stat().st_size
        except OSError as exc:
            raise StorageError(path, exc) from exc
        self.synced = self.size
        self._cut_pending = False

    def fd(self) -> int:
        return _open_files.fd(self.path)

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
        _open_files.close(self.path)


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

    def frames(self) -> Iterator[Frame]:
        """The frames stored, verified; cuts off a torn tail, raises LogCorruptError."""

    def reader(self) -> Reader:
        """Reads of what is stored now that go on working if the log is deleted (a
        response being streamed)."""

    def destroy(self) -> None: ...


class Reader(Protocol):
    def read(self, position: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class _BytesReader:
    def __init__(self, data: bytes | bytearray) -> None:
        self._data = data

    def read(self, position: int, length: int) -> bytes:
        return bytes(self._data[position : position + length])

    def close(self) -> None:
        pass


class _FdReader:
    def __init__(self, fd: int, written: int, buffered: bytes) -> None:
        self._fd = fd
        self._written = written
        self._buffered = buffered

    def read(self, position: int, length: int) -> bytes:
        written = self._written
        if position >= written:
            start = position - written
            return self._buffered[start : start + length]
        data = os.pread(self._fd, min(length, written - position), position)
        if position + length > written:
            data += self._buffered[: position + length - written]
        return data

    def close(self) -> None:
        os.close(self._fd)


class MemoryStorage:
    def __init__(self) -> None:
        self._data = bytearray()
        self._synced = 0

    def append(self, data: bytes | bytearray) -> int:
        position = len(self._data)
        self._data += data
        return position

    def read(self, position: int, length: int) -> bytes:
        return bytes(self._data[position : position + length])

    def size(self) -> int:
        return len(self._data)

    def written_size(self) -> int:
        return len(self._data)

    def begin_sync(self) -> PendingSync:
        size = len(self._data)

        def mark() -> None:
            self._synced = max(self._synced, size)

        return PendingSync(lambda: None, mark)

    def discard_unsynced(self) -> int:
        del self._data[self._synced :]
        return len(self._data)

    def frames(self) -> Iterator[Frame]:
        return iter(())

    def reader(self) -> Reader:
        return _BytesReader(self._data)

    def destroy(self) -> None:
        self._data = bytearray()
        self._synced = 0


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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
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


_open_files = _OpenFiles()


class FileStorage:
    """One append-only file of frames, ``<dir>/log``.

    Appends collect in memory and go to the file in one write when the flush tracker
    syncs (or the buffer fills): a system call per sync round instead of one per
    transaction. Buffered frames are read from memory; they are never acknowledged
    before they are written and synced, so a crash loses only what the slot resends.
    """

    def __init__(self, directory: Path, io: Io = OS_IO) -> None:
        self.directory = directory
        self.file = AppendFile(directory / "log", io)
        self._buffer = bytearray()

    @property
    def path(self) -> Path:
        return self.file.path

    def append(self, data: bytes | bytearray) -> int:
        position = self.file.size + len(self._buffer)
        self._buffer += data
        if len(self._buffer) >= BUFFER_BYTES:
            try:
                self.write_out()
            except StorageError:
                del self._buffer[position - self.file.size :]  # this append: not at all
                raise
        return position

    def write_out(self) -> None:
        """The buffered frames to the file, in one write (StorageError: nothing written)."""
        if self._buffer:
            self.file.append(bytes(self._buffer))
            self._buffer.clear()

    def read(self, position: int, length: int) -> bytes:
        written = self.file.size
        if position >= written:
            start = position - written
            return bytes(self._buffer[start : start + length])
        data = os.pread(self.file.fd(), min(length, written - position), position)
        if position + length > written:
            data += self._buffer[: position + length - written]
        return data

    def reader(self) -> Reader:
        # Its own descriptor: the file may be deleted (and the cached one closed) while
        # a response is streamed from it; the data stays readable until closed.
        return _FdReader(os.dup(self.file.fd()), self.file.size, bytes(self._buffer))

    def size(self) -> int:
        return self.file.size + len(self._buffer)

    def written_size(self) -> int:
        with contextlib.suppress(StorageError):
            self.write_out()
        return self.file.size

    def begin_sync(self) -> PendingSync:
        self.write_out()
        file = self.file
        size = file.size
        path, io = file.path, file.io

        def fsync() -> None:
            # By path, in the syncing thread: the cached descriptor may be closed (and
            # its number reused for another file) while the fsync runs.
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    io.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageError(path, exc) from exc

        def mark() -> None:
            file.synced = max(file.synced, size)

        return PendingSync(fsync, mark)

    def discard_unsynced(self) -> int:
        self._buffer.clear()
        self.file.cut(self.file.synced)
        return self.file.size

    def frames(self) -> Iterator[Frame]:
        size = self.file.size
        position = 0
        with self.path.open("rb", buffering=1 << 20) as f:
            while position < size:
                header = f.read(HEADER_SIZE)
                problem = _header_problem(header, size - position)
                if problem is None:
                    flags, tx, op, length = _FIELDS.unpack_from(header, 1)
                    payload = f.read(length)
                    (_, crc) = _CRCS.unpack_from(header, 1 + _FIELDS.size)
                    if _crc32(payload) == crc:
                        yield Frame(tx, op, flags, position + HEADER_SIZE, length)
                        position += HEADER_SIZE + length
                        continue
                    problem = "payload checksum mismatch"
                if problem != "torn" and self._good_frame_after(position + 1):
                    raise LogCorruptError(self.path, position, problem)
                break
        if position != size:
            self.file.cut(position)

    def _good_frame_after(self, start: int) -> bool:
        """Is there a whole, valid frame anywhere from ``start`` on? If not, what follows
        the last good frame is the remains of an interrupted write (a torn tail: partly
        written, or zeros where a crash extended the file), safe to cut off."""
        with self.path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            size = len(data)
            position = data.find(_MAGIC_BYTE, start)
            while position != -1:
                header = data[position : position + HEADER_SIZE]
                if _header_problem(header, size - position) is None:
                    length = _FIELDS.unpack_from(header, 1)[3]
                    (_, crc) = _CRCS.unpack_from(header, 1 + _FIELDS.size)
                    body = position + HEADER_SIZE
                    if _crc32(data[body : body + length]) == crc:
                        return True
                position = data.find(_MAGIC_BYTE, position + 1)
        return False

    def destroy(self) -> None:
        self.remove(self.directory)

    @staticmethod
    def remove(directory: Path) -> None:
        """Delete the log in ``directory`` (open or not)."""
        _open_files.close(directory / "log")
        shutil.rmtree(directory, ignore_errors=True)


_WINDOW = 1 << 20


class FollowedStorage:
    """A log another process appends to (``pysync serve --workers``: the replicating
    process writes, HTTP workers read). Read-only: frames are read up to a size the
    writer announced, and what does not form a whole valid frame yet is not indexed
    (never cut: it is the writer's file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self.end = 0
        """Where the frames indexed so far end."""

    def read(self, position: int, length: int) -> bytes:
        return os.pread(self._fd, length, position)

    def reader(self) -> Reader:
        return _FdReader(os.dup(self._fd), self.end, b"")

    def size(self) -> int:
        return self.end

    def written_size(self) -> int:
        return self.end

    def frames(self) -> Iterator[Frame]:
        return self.frames_to(os.fstat(self._fd).st_size)

    def frames_to(self, size: int) -> Iterator[Frame]:
        """The whole valid frames from ``end`` up to ``size``; ``end`` follows them.
        Read in windows: following a large snapshot costs one window of memory."""
        position = self.end
        window, window_start = b"", position
        while position + HEADER_SIZE <= size:
            if position + HEADER_SIZE > window_start + len(window):
                window, window_start = os.pread(self._fd, max(_WINDOW, HEADER_SIZE), position), position
            at = position - window_start
            header = window[at : at + HEADER_SIZE]
            if _header_problem(header, size - position) is not None:
                break
            flags, tx, op, length = _FIELDS.unpack_from(header, 1)
            end = position + HEADER_SIZE + length
            if end > window_start + len(window):
                window, window_start = os.pread(self._fd, max(_WINDOW, end - position), position), position
            at = position - window_start
            if _crc32(window[at + HEADER_SIZE : at + HEADER_SIZE + length]) != _CRCS.unpack_from(header, 1 + _FIELDS.size)[1]:
                break
            yield Frame(tx, op, flags, position + HEADER_SIZE, length)
            position = end
            self.end = position

    def rewind(self) -> None:
        """The writer cut its file back (it lost frames that were not durable)."""
        self.end = 0

    def append(self, data: bytes | bytearray) -> int:
        raise StorageError(self.path, OSError(errno.EROFS, "a followed log is read-only"))

    def begin_sync(self) -> PendingSync:
        return PendingSync(lambda: None, lambda: None)  # the writer syncs its file

    def discard_unsynced(self) -> int:
        return self.end

    def destroy(self) -> None:
        os.close(self._fd)
        self._fd = os.open(os.devnull, os.O_RDONLY)  # reads after this find nothing


def _header_problem(header: bytes, remaining: int) -> str | None:
    """Why ``header`` cannot start a frame of the ``remaining`` bytes, or None."""
    if len(header) < HEADER_SIZE:
        return "torn"
    if header[0] != MAGIC:
        return "bad frame marker"
    fields = header[1 : 1 + _FIELDS.size]
    (crc, _) = _CRCS.unpack_from(header, 1 + _FIELDS.size)
    if _crc32(fields) != crc:
        return "header checksum mismatch"
    flags, _, _, length = _FIELDS.unpack(fields)
    if flags & ~FLAG_SNAPSHOT_END or length > MAX_FRAME:
        return "bad frame header"
    if HEADER_SIZE + length > remaining:
        return "torn"  # a whole header whose payload the end of the file cut short
    return None
