"""The storage of a shape log in an HTTP worker of ``pysync serve --workers``.

The replicating process writes the logs; a worker follows each one read-only, indexing
the frames the writer has announced (see ``serve/mirror.py``).
"""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from pysync.log.frames import CRCS, FIELDS, HEADER_SIZE, Frame, header_problem
from pysync.log.storage import (
    FdReader,
    LogCutError,
    PendingSync,
    Reader,
    Readers,
    StorageError,
)

_crc32 = zlib.crc32
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
        self._readers = Readers()
        """Of responses being streamed from the file followed now."""

    def read(self, position: int, length: int) -> bytes:
        data = os.pread(self._fd, length, position)
        if len(data) != length:
            # The writer cut its file (a failed sync) and this index has not heard yet.
            raise LogCutError(position, length, position + len(data))
        return data

    def reader(self) -> Reader:
        return self._readers.add(FdReader(os.dup(self._fd), self.end, b""))

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
                window, window_start = (
                    os.pread(self._fd, max(_WINDOW, HEADER_SIZE), position),
                    position,
                )
            at = position - window_start
            header = window[at : at + HEADER_SIZE]
            if header_problem(header, size - position) is not None:
                break
            flags, tx, op, length = FIELDS.unpack_from(header, 1)
            end = position + HEADER_SIZE + length
            if end > window_start + len(window):
                window, window_start = (
                    os.pread(self._fd, max(_WINDOW, end - position), position),
                    position,
                )
            at = position - window_start
            if (
                _crc32(window[at + HEADER_SIZE : at + HEADER_SIZE + length])
                != CRCS.unpack_from(header, 1 + FIELDS.size)[1]
            ):
                break
            yield Frame(tx, op, flags, position + HEADER_SIZE, length)
            position = end
            self.end = position

    def rewind(self) -> None:
        """The writer cut its file back (it lost frames that were not durable): where
        is not known here, so no response being streamed from it reads on."""
        self.end = 0
        self._readers.cut(0)

    def replaced(self) -> bool:
        """Did the writer put another file in place of the one followed (a compaction)?
        Then it is followed from its start."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False  # deleted: the shape is going away
        if current == os.fstat(self._fd).st_ino:
            return False
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.end = 0
        # Readers made before keep reading the replaced file, which stays as it was.
        self._readers.forget()
        return True

    def durable_size(self) -> int:
        return self.end

    def prepare_replacement(self, start: int, region: bytes, reader: Reader) -> object:
        raise StorageError(self.path, OSError(errno.EROFS, "a followed log is read-only"))

    def replace(self, start: int, end: int, prepared: object) -> int:
        raise StorageError(self.path, OSError(errno.EROFS, "a followed log is read-only"))

    def drop_replacement(self, prepared: object) -> None:
        pass

    def append(self, data: bytes | bytearray) -> int:
        raise StorageError(self.path, OSError(errno.EROFS, "a followed log is read-only"))

    def begin_sync(self) -> PendingSync:
        return PendingSync(lambda: None, lambda: None)  # the writer syncs its file

    def discard_unsynced(self) -> int:
        return self.end

    def file_size(self) -> int:
        """The size of the file followed (not of the one at ``path`` after a
        replacement: see ``replaced``)."""
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        os.close(self._fd)

    def destroy(self) -> None:
        os.close(self._fd)
        self._fd = os.open(os.devnull, os.O_RDONLY)  # reads after this find nothing
