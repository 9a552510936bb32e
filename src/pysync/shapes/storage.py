"""Bytes of shape logs: in a file per shape (default) or in memory (tests, benchmarks).

Both store frames ``[tx u64][op u64][length u32][flags u8][payload]`` appended in order;
``ShapeLog`` keeps the index. A torn frame at the end of a file (a crash during a write)
is cut off on recovery.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from pathlib import Path
from struct import Struct
from typing import Protocol

FRAME_HEADER = Struct(">QQIB")
FLAG_SNAPSHOT_END = 1


class LogStorage(Protocol):
    def append(self, data: bytes) -> int:
        """Append ``data``; returns the position it starts at."""

    def read(self, position: int, length: int) -> bytes: ...

    def size(self) -> int: ...

    def sync(self) -> None: ...

    def truncate(self, size: int) -> None: ...

    def destroy(self) -> None: ...


class MemoryStorage:
    def __init__(self) -> None:
        self._data = bytearray()

    def append(self, data: bytes) -> int:
        position = len(self._data)
        self._data += data
        return position

    def read(self, position: int, length: int) -> bytes:
        return bytes(self._data[position : position + length])

    def size(self) -> int:
        return len(self._data)

    def sync(self) -> None:
        pass

    def truncate(self, size: int) -> None:
        del self._data[size:]

    def destroy(self) -> None:
        self._data = bytearray()


class _OpenFiles:
    """A bounded set of open log files: 100,000 shapes must not hold 100,000 fds."""

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self._fds: OrderedDict[Path, int] = OrderedDict()

    def fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._fds[path] = fd
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
    """One append-only file, ``<dir>/log``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "log"
        self.path.touch(exist_ok=True)
        self._size = self.path.stat().st_size

    def append(self, data: bytes) -> int:
        position = self._size
        fd = _open_files.fd(self.path)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self._size += len(data)
        return position

    def read(self, position: int, length: int) -> bytes:
        return os.pread(_open_files.fd(self.path), length, position)

    def size(self) -> int:
        return self._size

    def sync(self) -> None:
        os.fdatasync(_open_files.fd(self.path))

    def truncate(self, size: int) -> None:
        os.truncate(self.path, size)
        self._size = size

    def destroy(self) -> None:
        _open_files.close(self.path)
        shutil.rmtree(self.directory, ignore_errors=True)
