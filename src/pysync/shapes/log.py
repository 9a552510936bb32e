"""A shape's append-only log: JSON entries at Electric offsets, read from an offset.

A unit of the log is a frame: one replicated change at ``<commit_lsn>_<op>``, or one
initial-snapshot chunk at ``0_<n>`` (many rows, already comma-joined). Entries are
encoded once, at append time; a response concatenates stored bytes. An append reaches
the index only once storage holds it whole (see ``storage``).
"""

from __future__ import annotations

import asyncio
from array import array
from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple

from pysync.shapes.followed_storage import FollowedStorage
from pysync.shapes.frames import FLAG_SNAPSHOT_END, HEADER_SIZE, Frame, frame_header
from pysync.shapes.offset import LAST_BEFORE_REAL, LogOffset
from pysync.shapes.storage import LogStorage, PendingSync

CHUNK_BYTES = 10 * 1024 * 1024
"""About this much JSON per response and per snapshot chunk (Electric's default)."""


class LogSlice(NamedTuple):
    spans: list[tuple[int, int]]
    """(position, length) in storage of each payload, in log order."""
    payloads: list[bytes] | None
    """The payloads themselves, when they are at hand (the last append's)."""
    end: LogOffset
    reached: bool
    size: int
    """Total payload bytes."""


_NO_WAITERS: frozenset[asyncio.Future[None]] = frozenset()


class ShapeLog:
    def __init__(self, storage: LogStorage, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.storage = storage
        self.chunk_bytes = chunk_bytes
        self.offsets: list[LogOffset] = []
        self._positions = array("Q")  # payload start of each frame
        self._lengths = array("I")
        self._snapshot_end: int | None = None
        """Index of the frame that ends the initial snapshot, once written."""
        self.dirty = False
        self._recent: list[bytes] = []
        self._recent_start = 0
        # Most shapes have nobody waiting: they share one empty set (216 bytes a shape).
        self._waiters: set[asyncio.Future[None]] | frozenset[asyncio.Future[None]] = _NO_WAITERS
        self._recover()

    # -- state ----------------------------------------------------------------------

    @property
    def snapshot_done(self) -> bool:
        return self._snapshot_end is not None

    @property
    def last_offset(self) -> LogOffset:
        """The offset a reader that has everything is at (``0_inf`` right after the snapshot)."""
        if not self.offsets:
            return LAST_BEFORE_REAL if self.snapshot_done else LogOffset(-1, 0)
        last = self.offsets[-1]
        if self.snapshot_done and last.tx == 0:
            return LAST_BEFORE_REAL
        return last

    @property
    def last_tx(self) -> int:
        """Commit LSN of the last replicated transaction in the log (0 if none)."""
        return self.offsets[-1].tx if self.offsets else 0

    # -- writing --------------------------------------------------------------------

    def append_snapshot_chunk(self, number: int, payload: bytes, *, last: bool) -> None:
        self._write([(LogOffset(0, number), payload)], FLAG_SNAPSHOT_END if last else 0)
        if last:
            self._snapshot_end = len(self.offsets) - 1
        self.notify()

    def append_changes(self, entries: list[tuple[LogOffset, bytes]]) -> None:
        """Append one transaction's entries for this shape (callers then ``notify``)."""
        start = len(self.offsets)
        self._write(entries, 0)
        # Live readers woken by this append all read these entries: keep them at hand.
        self._recent_start = start
        self._recent = [payload for _, payload in entries]

    def _write(self, entries: list[tuple[LogOffset, bytes]], last_flags: int) -> None:
        """Frames for ``entries`` in one storage append; ``last_flags`` go on the last.

        Indexed only after the append succeeded: a failed one (StorageError) leaves the
        log as it was, so offsets and positions never point at bytes that are not there.
        """
        last = len(entries) - 1
        if last == 0:  # most appends: one change of one transaction
            offset, payload = entries[0]
            frames: bytes | bytearray = (
                frame_header(offset.tx, offset.op, payload, last_flags) + payload
            )
        else:
            frames = bytearray()
            for n, (offset, payload) in enumerate(entries):
                frames += frame_header(
                    offset.tx, offset.op, payload, last_flags if n == last else 0
                )
                frames += payload
        base = self.storage.append(frames)
        position = base + HEADER_SIZE
        offsets = self.offsets
        positions = self._positions
        lengths = self._lengths
        for offset, payload in entries:
            offsets.append(offset)
            positions.append(position)
            lengths.append(len(payload))
            position += HEADER_SIZE + len(payload)
        self.dirty = True

    def begin_sync(self) -> PendingSync | None:
        """On the event loop: write out what is buffered (StorageError); the returned
        PendingSync makes it durable (in another thread). None when nothing was appended
        since the last sync. After a failed sync, ``dirty`` must be set again."""
        if not self.dirty:
            return None
        # Cleared now, not after the fsync, which runs in a thread: an append racing with
        # it must leave the log dirty. Clearing afterwards forgot such appends, and the
        # next flush acknowledged their transactions to Postgres without an fsync.
        self.dirty = False
        try:
            return self.storage.begin_sync()
        except BaseException:
            self.dirty = True
            raise

    def sync(self) -> None:
        """Write out and make durable now (on the event loop, blocking)."""
        pending = self.begin_sync()
        if pending is not None:
            try:
                pending.run()
            except BaseException:
                self.dirty = True
                raise

    def discard_unsynced(self) -> None:
        """After a failed sync: drop every frame not known to be durable (the stream
        replays their transactions from the acknowledged position)."""
        size = self.storage.discard_unsynced()
        keep = bisect_right(self._positions, size - HEADER_SIZE)
        while keep and self._positions[keep - 1] + self._lengths[keep - 1] > size:
            keep -= 1
        del self.offsets[keep:]
        del self._positions[keep:]
        del self._lengths[keep:]
        if self._snapshot_end is not None and self._snapshot_end >= keep:
            self._snapshot_end = None
        self._recent = []
        self._recent_start = 0
        self.dirty = False

    # -- reading --------------------------------------------------------------------

    def read(
        self, after: LogOffset, max_bytes: int | None = None
    ) -> tuple[list[bytes], LogOffset, bool]:
        """Entries strictly after ``after``: (payloads, end offset, reached the end).

        A snapshot chunk is always served alone, at its own offset ``0_k`` (as Electric
        does), so such a response never reaches the end. Otherwise it stops after about
        ``max_bytes`` (at least one frame). "Reached the end" needs a complete snapshot.
        """
        part = self.slice(after, max_bytes)
        payloads = part.payloads
        if payloads is None:
            read = self.storage.read
            payloads = [read(position, length) for position, length in part.spans]
        return payloads, part.end, part.reached

    def slice(self, after: LogOffset, max_bytes: int | None = None) -> LogSlice:
        """What ``read`` returns, as positions in storage (and the payloads themselves
        when they are at hand), so a large response can be streamed piece by piece."""
        limit = self.chunk_bytes if max_bytes is None else max_bytes
        offsets = self.offsets
        positions = self._positions
        lengths = self._lengths
        start = bisect_right(offsets, after)
        count = len(offsets)
        if start < count and offsets[start].tx == 0:
            length = lengths[start]
            return LogSlice([(positions[start], length)], None, offsets[start], False, length)
        end = start
        size = 0
        while end < count and (end == start or size + lengths[end] <= limit):
            size += lengths[end]
            end += 1
        recent_start = self._recent_start
        payloads = None
        if start >= recent_start and end <= recent_start + len(self._recent):
            payloads = self._recent[start - recent_start : end - recent_start]
        reached_end = end == count and self.snapshot_done
        if end > start:
            end_offset = offsets[end - 1]
        else:
            end_offset = max(after, self.last_offset) if self.snapshot_done else after
        spans = [(positions[i], lengths[i]) for i in range(start, end)]
        return LogSlice(spans, payloads, end_offset, reached_end, size)

    def has_after(self, offset: LogOffset) -> bool:
        return bool(self.offsets) and self.offsets[-1] > offset

    # -- waiting --------------------------------------------------------------------

    def notify(self) -> None:
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, _NO_WAITERS
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future resolved at the next append (or when the shape goes away); hand it
        back with ``unwait`` if it is no longer wanted."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if not isinstance(waiters, set):
            waiters = set()
            self._waiters = waiters
        waiters.add(future)
        return future

    def unwait(self, future: asyncio.Future[None]) -> None:
        future.cancel()
        if isinstance(self._waiters, set):
            self._waiters.discard(future)

    # -- recovery, and following another process's appends ---------------------------

    def _recover(self) -> None:
        self._index(self.storage.frames())

    def _index(self, frames: Iterable[Frame]) -> int:
        """Index ``frames``; how many there were."""
        start = len(self.offsets)
        for frame in frames:
            self.offsets.append(LogOffset(frame.tx, frame.op))
            self._positions.append(frame.position)
            self._lengths.append(frame.length)
            if frame.flags & FLAG_SNAPSHOT_END:
                self._snapshot_end = len(self.offsets) - 1
        return len(self.offsets) - start

    def follow(self, size: int) -> None:
        """The writing process's log is now ``size`` bytes: index what it appended (its
        payloads at hand, as after an append here) and wake the waiters. A size below
        what is indexed means the writer cut its log back: it is indexed anew."""
        storage = self.storage
        assert isinstance(storage, FollowedStorage)
        if size < storage.end:
            storage.rewind()
            self.offsets.clear()
            del self._positions[:], self._lengths[:]
            self._snapshot_end = None
            self._recent, self._recent_start = [], 0
        start = len(self.offsets)
        if not self._index(storage.frames_to(size)):
            return
        if self.offsets[start].tx != 0:  # changes (not snapshot chunks) are read often
            first = self._positions[start]
            end = self._positions[-1] + self._lengths[-1]
            block = storage.read(first, end - first)
            self._recent_start = start
            self._recent = [
                block[p - first : p - first + n]
                for p, n in zip(self._positions[start:], self._lengths[start:], strict=True)
            ]
        self.notify()
