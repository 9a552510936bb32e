"""A shape log kept in memory: the storage of shapes when there is no storage directory.

Nothing survives the process; a sync has nothing to write and only marks what it covers
as durable, so that ``discard_unsynced`` behaves as it does on a file.
"""

from __future__ import annotations

from collections.abc import Iterator

from pysync.log.frames import Frame
from pysync.log.storage import CutReader, PendingSync, Reader, Readers


class _BytesReader(CutReader):
    __slots__ = ("_data", "__weakref__")

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__(len(data))
        self._data = data

    def read(self, position: int, length: int) -> bytes:
        self._check(position, length)
        return bytes(self._data[position : position + length])

    def close(self) -> None:
        pass


class MemoryStorage:
    def __init__(self) -> None:
        self._data = bytearray()
        self._synced = 0
        self._readers = Readers()

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
        self._readers.cut(self._synced)
        del self._data[self._synced :]
        return len(self._data)

    def durable_size(self) -> int:
        return self._synced

    def prepare_replacement(self, start: int, region: bytes, reader: Reader) -> object:
        return region

    def replace(self, start: int, end: int, prepared: object) -> int:
        assert isinstance(prepared, bytes)
        # A new buffer: readers of a response being streamed keep the old one.
        self._data = self._data[:start] + prepared + self._data[end:]
        new_end = start + len(prepared)
        self._synced += new_end - end  # a job compacts only what was durable
        return new_end

    def drop_replacement(self, prepared: object) -> None:
        pass

    def frames(self) -> Iterator[Frame]:
        return iter(())

    def reader(self) -> Reader:
        return self._readers.add(_BytesReader(self._data))

    def destroy(self) -> None:
        self._data = bytearray()
        self._synced = 0
