"""A shape log's file, ``<dir>/log``: buffered appends, recovery after a crash.

Appends collect in memory and reach the file in one write per sync round. Recovery reads
the frames back, verified: it tells a torn tail (a crash during a write: no valid frame
follows the last good one), which it cuts off, from corruption in the middle (a bad frame
with good frames after it), which is never silently cut off: that raises
``LogCorruptError`` naming the file and the position.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

from pysync.log.frames import CRCS, FIELDS, HEADER_SIZE, MAGIC_BYTE, Frame, header_problem
from pysync.log.storage import (
    OS_IO,
    AppendFile,
    FdReader,
    Io,
    LogCorruptError,
    PendingSync,
    Reader,
    Readers,
    StorageError,
    open_files,
)

BUFFER_BYTES = 256 * 1024
"""A log's appends collect in memory up to this much before they are written."""

_crc32 = zlib.crc32
COMPACTING = "log.compacting"
"""A compacted log being written; it replaces ``log`` by a rename."""
_COPY_BYTES = 1024 * 1024


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        self._readers = Readers()

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
        return self._readers.add(
            FdReader(os.dup(self.file.fd()), self.file.size, bytes(self._buffer))
        )

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

        generation = file.generation

        def mark() -> None:
            if file.generation == generation:  # else compaction made it all durable
                file.synced = max(file.synced, size)

        return PendingSync(fsync, mark)

    def discard_unsynced(self) -> int:
        self._buffer.clear()
        synced = self.file.synced
        self._readers.cut(synced)
        self.file.cut(synced)
        return self.file.size

    def durable_size(self) -> int:
        return self.file.synced

    def prepare_replacement(self, start: int, region: bytes, reader: Reader) -> object:
        path = self.directory / COMPACTING
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for piece in range(0, start, _COPY_BYTES):
                    _write_all(fd, reader.read(piece, min(_COPY_BYTES, start - piece)))
                _write_all(fd, region)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return path

    def replace(self, start: int, end: int, prepared: object) -> int:
        assert isinstance(prepared, Path)
        file = self.file
        new_end = prepared.stat().st_size
        # What was appended to the file while the job ran: small (the live tail), written
        # and synced here, on the loop, so no append comes between.
        fd = os.open(prepared, os.O_WRONLY | os.O_APPEND)
        try:
            for piece in range(end, file.size, _COPY_BYTES):
                _write_all(fd, self.read(piece, min(_COPY_BYTES, file.size - piece)))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        # The rename is the moment the compacted log replaces the old one: a crash before
        # it leaves the old log (and a leftover that recovery removes), after it the new
        # one, both whole and durable.
        os.rename(prepared, file.path)
        open_files.close(file.path)  # the old file's descriptor
        file.size += new_end - end
        file.synced = file.size
        file.generation += 1
        with contextlib.suppress(OSError):  # the rename's own durability: best effort
            _sync_directory(self.directory)
        return new_end

    def drop_replacement(self, prepared: object) -> None:
        if isinstance(prepared, Path):
            with contextlib.suppress(OSError):
                prepared.unlink()

    def frames(self) -> Iterator[Frame]:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / COMPACTING).unlink()  # a compaction a crash interrupted
        size = self.file.size
        position = 0
        with self.path.open("rb", buffering=1 << 20) as f:
            while position < size:
                header = f.read(HEADER_SIZE)
                problem = header_problem(header, size - position)
                if problem is None:
                    flags, tx, op, length = FIELDS.unpack_from(header, 1)
                    payload = f.read(length)
                    (_, crc) = CRCS.unpack_from(header, 1 + FIELDS.size)
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
            position = data.find(MAGIC_BYTE, start)
            while position != -1:
                header = data[position : position + HEADER_SIZE]
                if header_problem(header, size - position) is None:
                    length = FIELDS.unpack_from(header, 1)[3]
                    (_, crc) = CRCS.unpack_from(header, 1 + FIELDS.size)
                    body = position + HEADER_SIZE
                    if _crc32(data[body : body + length]) == crc:
                        return True
                position = data.find(MAGIC_BYTE, position + 1)
        return False

    def destroy(self) -> None:
        self.remove(self.directory)

    @staticmethod
    def remove(directory: Path) -> None:
        """Delete the log in ``directory`` (open or not)."""
        open_files.close(directory / "log")
        shutil.rmtree(directory, ignore_errors=True)
