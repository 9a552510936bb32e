"""A shape's append-only log: JSON entries at Electric offsets, read from an offset.

A unit of the log is a frame: one replicated change at ``<commit_lsn>_<op>``, or one
initial-snapshot chunk at ``0_<n>`` (many rows, already comma-joined). Entries are
encoded once, at append time; a response concatenates stored bytes. An append reaches
the index only once storage holds it whole (see ``storage``).

The index in memory is sparse, so that a log's memory does not grow with its history:
frames are grouped in blocks (``BLOCK_FRAMES`` frames or ``BLOCK_BYTES`` of payload),
and only a sealed block's first offset and position are kept. The open block at the end
(the tail, where live readers read) is indexed frame by frame. A read from inside a
sealed block finds its frames by reading their headers back from storage (a few
recently read blocks stay parsed, shared by every log: catch-up readers of one shape
read the same blocks).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from pysync.log.compaction import NotCompactable, compact
from pysync.log.followed_storage import FollowedStorage
from pysync.log.frames import FIELDS, FLAG_SNAPSHOT_END, HEADER_SIZE, Frame, frame_header
from pysync.log.offset import LAST_BEFORE_REAL, LogOffset
from pysync.log.storage import LogCutError, LogStorage, PendingSync

CHUNK_BYTES = 10 * 1024 * 1024
"""About this much JSON per response and per snapshot chunk (Electric's default)."""
BLOCK_FRAMES = 128
BLOCK_BYTES = 128 * 1024
"""A block is sealed once it holds this many frames or payload bytes: ~1 byte of memory
per frame for the sparse index, and a read from inside a block parses at most this much."""
COMPACT_MIN_BYTES = 1024 * 1024
"""A log is compacted once it grew by this much, and by at least its size after the last
compaction (or after its snapshot)."""
_NEVER = 1 << 63
_PARSED_BLOCKS = 64
"""Sealed blocks kept parsed (all logs together)."""
_READ_WHOLE = 4 * BLOCK_BYTES
"""A block up to this size is read in one piece to parse it; a larger one (a big
snapshot chunk or change in it) header by header."""


class LogSlice(NamedTuple):
    spans: list[tuple[int, int]]
    """(position, length) in storage of each payload, in log order."""
    payloads: list[bytes] | None
    """The payloads themselves, when they are at hand (the last append's)."""
    end: LogOffset
    reached: bool
    size: int
    """Total payload bytes."""


class _Frames(NamedTuple):
    """Frames indexed one by one: offsets, payload positions and lengths."""

    offsets: list[LogOffset]
    positions: array[int]
    lengths: array[int]


_NO_WAITERS: frozenset[asyncio.Future[None]] = frozenset()
# LogOffset(tx, op) without the NamedTuple's Python-level __new__: one per parsed frame.
_offset = functools.partial(tuple.__new__, LogOffset)
_tokens = itertools.count()
_parsed: OrderedDict[tuple[int, int], _Frames] = OrderedDict()
"""(log token, block) -> that sealed block's frames: a small cache shared by all logs."""


class ShapeLog:
    def __init__(
        self,
        storage: LogStorage,
        chunk_bytes: int = CHUNK_BYTES,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
    ) -> None:
        self.storage = storage
        self.chunk_bytes = chunk_bytes
        self.compact_min_bytes = compact_min_bytes
        self._reset_index()
        self.dirty = False
        # Most shapes have nobody waiting: they share one empty set (216 bytes a shape).
        self._waiters: set[asyncio.Future[None]] | frozenset[asyncio.Future[None]] = _NO_WAITERS
        self._recover()

    def _reset_index(self) -> None:
        self._token = next(_tokens)
        """Names this index's parsed blocks in ``_parsed``; a new one when frames are cut."""
        self._blocks: list[LogOffset] = []
        """First offset of each sealed block."""
        self._block_starts = array("Q")
        """Where each sealed block's first frame (its header) starts."""
        self._sealed_end = 0
        """Where the sealed blocks end: the tail's first frame starts here."""
        self._sealed_last: LogOffset | None = None
        self._tail = _Frames([], array("Q"), array("I"))
        self._tail_bytes = 0
        self._last: LogOffset | None = None
        self._snapshot_end: int | None = None
        """Where the frame that ends the initial snapshot ends, once written."""
        self._recent: list[bytes] = []
        self._recent_start = 0
        """Index in the tail of ``_recent``'s first payload."""
        self._compact_at = _NEVER
        """Compaction is due once the sealed blocks end past this (set at snapshot end)."""

    # -- state ----------------------------------------------------------------------

    @property
    def snapshot_done(self) -> bool:
        return self._snapshot_end is not None

    @property
    def last_offset(self) -> LogOffset:
        """The offset a reader that has everything is at (``0_inf`` right after the snapshot)."""
        last = self._last
        if last is None:
            return LAST_BEFORE_REAL if self.snapshot_done else LogOffset(-1, 0)
        if self.snapshot_done and last.tx == 0:
            return LAST_BEFORE_REAL
        return last

    @property
    def last_tx(self) -> int:
        """Commit LSN of the last replicated transaction in the log (0 if none)."""
        return self._last.tx if self._last is not None else 0

    @property
    def offsets(self) -> list[LogOffset]:
        """Every offset in the log, read back (for checks; readers use ``slice``)."""
        return [offset for offset, _, _ in self.entries()]

    def entries(self) -> Iterator[tuple[LogOffset, int, int]]:
        """Every frame: (offset, payload position, length), in log order."""
        for frames in self._segments(0):
            yield from zip(frames.offsets, frames.positions, frames.lengths, strict=True)

    # -- writing --------------------------------------------------------------------

    def append_snapshot_chunk(self, number: int, payload: bytes, *, last: bool) -> None:
        self._write([(LogOffset(0, number), payload)], FLAG_SNAPSHOT_END if last else 0)
        if last:
            tail = self._tail
            self._snapshot_end = tail.positions[-1] + tail.lengths[-1]
            self._compact_at = self._next_compaction(self._snapshot_end)
        self.notify()

    def append_changes(self, entries: list[tuple[LogOffset, bytes]]) -> None:
        """Append one transaction's entries for this shape (callers then ``notify``)."""
        self._write(entries, 0)
        # Live readers woken by this append all read these entries: keep them at hand
        # (those of them still in the tail, after a large append sealed blocks).
        kept = min(len(entries), len(self._tail.offsets))
        self._recent_start = len(self._tail.offsets) - kept
        self._recent = [payload for _, payload in entries[len(entries) - kept :]]

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
        position = self.storage.append(frames) + HEADER_SIZE
        for offset, payload in entries:
            self._add(offset, position, len(payload))
            position += HEADER_SIZE + len(payload)
        self.dirty = True

    def _add(self, offset: LogOffset, position: int, length: int) -> None:
        """Index one frame (its payload at ``position``), sealing the tail when full."""
        tail = self._tail
        if len(tail.offsets) >= BLOCK_FRAMES or self._tail_bytes >= BLOCK_BYTES:
            self._seal()
            tail = self._tail
        tail.offsets.append(offset)
        tail.positions.append(position)
        tail.lengths.append(length)
        self._tail_bytes += length
        self._last = offset

    def _seal(self) -> None:
        """The tail becomes a sealed block: only its first offset and position stay."""
        tail = self._tail
        self._blocks.append(tail.offsets[0])
        self._block_starts.append(tail.positions[0] - HEADER_SIZE)
        self._sealed_last = tail.offsets[-1]
        self._sealed_end = tail.positions[-1] + tail.lengths[-1]
        self._tail = _Frames([], array("Q"), array("I"))
        self._tail_bytes = 0
        self._recent = []
        self._recent_start = 0

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
        if size < self._sealed_end:
            # Cut inside the sealed blocks (rare: a failed sync of many appends): the block
            # holding the cut becomes the tail, with the frames of it that remain.
            block = bisect_right(self._block_starts, size) - 1
            start = self._block_starts[block]
            kept = _parse(self.storage.read, start, size)
            del self._blocks[block:], self._block_starts[block:]
            self._token = next(_tokens)  # parsed blocks from before the cut are stale
            self._sealed_end = start
            self._sealed_last = self._block(block - 1).offsets[-1] if block else None
            self._tail = kept
            self._tail_bytes = sum(kept.lengths)
        else:
            tail = self._tail
            keep = bisect_right(tail.positions, size - HEADER_SIZE)
            while keep and tail.positions[keep - 1] + tail.lengths[keep - 1] > size:
                keep -= 1
            del tail.offsets[keep:], tail.positions[keep:], tail.lengths[keep:]
            self._tail_bytes = sum(tail.lengths)
        self._last = self._tail.offsets[-1] if self._tail.offsets else self._sealed_last
        if self._snapshot_end is not None and self._snapshot_end > size:
            self._snapshot_end = None
        self._recent = []
        self._recent_start = 0
        self.dirty = False

    # -- compaction -----------------------------------------------------------------

    @property
    def compaction_due(self) -> bool:
        return self._sealed_end >= self._compact_at

    def begin_compaction(self, durable: int) -> CompactionJob | None:
        """On the event loop: the job that compacts the changes in sealed blocks after
        the snapshot, up to ``durable`` bytes (what storage holds durably); None when
        there is nothing to compact."""
        start = self._snapshot_end
        if start is None or not self._blocks:
            return None
        # Whole sealed blocks only, all of them durable: the live tail is not compacted.
        end = self._sealed_end
        if end > durable:
            end = self._block_starts[bisect_right(self._block_starts, durable) - 1]
        if end <= start:
            return None
        return CompactionJob(self.storage, self._token, start, end)

    def finish_compaction(self, job: CompactionJob) -> bool:
        """On the event loop: put the compacted log in place (False if the log changed
        meanwhile so that the job no longer applies: it is dropped)."""
        if job.token != self._token or job.frames is None:
            if job.frames is None:  # not compactable (subquery events): never again
                self._compact_at = _NEVER
            job.abandon()
            return False
        moved = self.storage.replace(job.start, job.end, job.prepared) - job.end
        # Index anew: the snapshot's frames, the compacted ones, the sealed ones after
        # them, then the tail as it was (its recent payloads stay valid, only shifted).
        read = self.storage.read
        snapshot = _parse(read, 0, job.start)
        rest = _parse(read, job.end + moved, self._sealed_end + moved)
        tail, tail_bytes = self._tail, self._tail_bytes
        recent, recent_start = self._recent, self._recent_start
        snapshot_end = self._snapshot_end
        self._reset_index()
        for frames in (snapshot, job.frames, rest):
            for offset, position, length in zip(*frames, strict=True):
                self._add(offset, position, length)
        if self._tail.offsets:
            self._seal()
        self._tail = _Frames(
            tail.offsets, array("Q", [p + moved for p in tail.positions]), tail.lengths
        )
        self._tail_bytes = tail_bytes
        self._last = tail.offsets[-1] if tail.offsets else self._sealed_last
        self._recent, self._recent_start = recent, recent_start
        self._snapshot_end = snapshot_end
        self._compact_at = self._next_compaction(job.start + job.compacted_bytes)
        return True

    def _next_compaction(self, size: int) -> int:
        """Where the sealed blocks must reach for the next compaction of a log of ``size``
        compacted bytes: it doubled (each byte is rewritten a bounded number of times on
        average, the file stays under about twice its compacted size plus the tail)."""
        return size + max(self.compact_min_bytes, size)

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
        return self.payloads(part), part.end, part.reached

    def payloads(self, part: LogSlice) -> list[bytes]:
        """The payloads of ``part``: at hand, or read in one piece (the frames of a slice
        follow each other in storage, headers between them) and cut apart."""
        if part.payloads is not None:
            return part.payloads
        spans = part.spans
        if not spans:
            return []
        first = spans[0][0]
        last, length = spans[-1]
        block = self.storage.read(first, last + length - first)
        return [block[p - first : p - first + n] for p, n in spans]

    def slice(self, after: LogOffset, max_bytes: int | None = None) -> LogSlice:
        """What ``read`` returns, as positions in storage (and the payloads themselves
        when they are at hand), so a large response can be streamed piece by piece."""
        last = self._last
        if last is None or after >= last:
            end = max(after, self.last_offset) if self.snapshot_done else after
            return LogSlice([], None, end, self.snapshot_done, 0)
        limit = self.chunk_bytes if max_bytes is None else max_bytes
        sealed_last = self._sealed_last
        if sealed_last is None or after >= sealed_last:
            return self._slice_tail(after, limit)
        # From inside the sealed blocks: the block holding the first frame after ``after``.
        first = max(bisect_right(self._blocks, after) - 1, 0)
        spans: list[tuple[int, int]] = []
        size = 0
        end_offset = after
        start = True
        for offsets, positions, lengths in self._segments(first):
            i = bisect_right(offsets, after) if start else 0
            start = False
            count = len(offsets)
            if not spans and i < count and offsets[i].tx == 0:
                length = lengths[i]
                return LogSlice([(positions[i], length)], None, offsets[i], False, length)
            while i < count and (not spans or size + lengths[i] <= limit):
                spans.append((positions[i], lengths[i]))
                size += lengths[i]
                end_offset = offsets[i]
                i += 1
            if i < count:
                return LogSlice(spans, None, end_offset, False, size)
        return LogSlice(spans, None, end_offset, self.snapshot_done, size)

    def _slice_tail(self, after: LogOffset, limit: int) -> LogSlice:
        """``slice`` when it starts in the tail (live readers: the common case)."""
        offsets, positions, lengths = self._tail
        start = bisect_right(offsets, after)
        count = len(offsets)
        if offsets[start].tx == 0:
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
        spans = [(positions[i], lengths[i]) for i in range(start, end)]
        reached_end = end == count and self.snapshot_done
        return LogSlice(spans, payloads, offsets[end - 1], reached_end, size)

    def _segments(self, first: int) -> Iterator[_Frames]:
        """The frames from sealed block ``first`` on, block by block, then the tail's."""
        for block in range(first, len(self._blocks)):
            yield self._block(block)
        yield self._tail

    def _block(self, block: int) -> _Frames:
        """A sealed block's frames, read back from their headers in storage."""
        key = (self._token, block)
        frames = _parsed.get(key)
        if frames is not None:
            _parsed.move_to_end(key)
            return frames
        starts = self._block_starts
        end = starts[block + 1] if block + 1 < len(starts) else self._sealed_end
        frames = _parsed[key] = _parse(self.storage.read, starts[block], end)
        if len(_parsed) > _PARSED_BLOCKS:
            _parsed.popitem(last=False)
        return frames

    def has_after(self, offset: LogOffset) -> bool:
        return self._last is not None and self._last > offset

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
        count = 0
        for frame in frames:
            self._add(LogOffset(frame.tx, frame.op), frame.position, frame.length)
            if frame.flags & FLAG_SNAPSHOT_END:
                self._snapshot_end = frame.position + frame.length
                self._compact_at = self._next_compaction(self._snapshot_end)
            count += 1
        return count

    def follow(self, size: int) -> None:
        """The writing process's log is now ``size`` bytes: index what it appended (its
        payloads at hand, as after an append here) and wake the waiters. A size below
        what is indexed means the writer cut its log back: it is indexed anew."""
        storage = self.storage
        assert isinstance(storage, FollowedStorage)
        if storage.replaced() or size < storage.end:
            storage.rewind()
            self._reset_index()
        added = self._index(storage.frames_to(size))
        if not added:
            return
        offsets, positions, lengths = self._tail
        kept = min(added, len(offsets))
        start = len(offsets) - kept
        self._recent, self._recent_start = [], 0
        if offsets[start].tx != 0:  # changes (not snapshot chunks) are read often
            first = positions[start]
            try:
                block = storage.read(first, positions[-1] + lengths[-1] - first)
            except LogCutError:
                # The writer cut its file since the frames were verified (a failed
                # sync): its announcement of the cut follows and indexes the log anew.
                # Until then a read of these frames raises, and its request retries.
                return
            self._recent_start = start
            self._recent = [
                block[p - first : p - first + n]
                for p, n in zip(positions[start:], lengths[start:], strict=True)
            ]
        self.notify()


def _parse(read: Callable[[int, int], bytes], start: int, end: int) -> _Frames:
    """The whole frames stored between ``start`` (a frame's header) and ``end``, from
    their headers (not verified: recovery did that, or this process wrote them)."""
    if end - start > _READ_WHOLE:  # a large frame in it: header by header
        return _parse_headers(read, start, end)
    # The hot case (a catch-up read parses every block it reads): plain and local.
    whole = read(start, end - start)
    unpack = FIELDS.unpack_from
    offsets: list[LogOffset] = []
    positions: list[int] = []
    lengths: list[int] = []
    add_offset, add_position, add_length = offsets.append, positions.append, lengths.append
    size = len(whole)
    at = 0
    while at + HEADER_SIZE <= size:
        _, tx, op, length = unpack(whole, at + 1)
        if at + HEADER_SIZE + length > size:
            break
        add_offset(_offset((tx, op)))
        at += HEADER_SIZE
        add_position(start + at)
        add_length(length)
        at += length
    return _Frames(offsets, array("Q", positions), array("I", lengths))


def _parse_headers(read: Callable[[int, int], bytes], start: int, end: int) -> _Frames:
    frames = _Frames([], array("Q"), array("I"))
    position = start
    while position + HEADER_SIZE <= end:
        _, tx, op, length = FIELDS.unpack_from(read(position, HEADER_SIZE), 1)
        if position + HEADER_SIZE + length > end:
            break
        frames.offsets.append(LogOffset(tx, op))
        frames.positions.append(position + HEADER_SIZE)
        frames.lengths.append(length)
        position += HEADER_SIZE + length
    return frames


class CompactionJob:
    """Compacts a log's frames between ``start`` and ``end`` (``run``, in a thread,
    reading through a reader of its own) and prepares the compacted log for
    ``ShapeLog.finish_compaction``."""

    def __init__(self, storage: LogStorage, token: int, start: int, end: int) -> None:
        self.storage = storage
        self.token = token
        self.start = start
        self.end = end
        self.reader = storage.reader()
        self.frames: _Frames | None = None
        """The compacted frames, positioned in the new log; None if not compactable."""
        self.compacted_bytes = 0
        self.prepared: object = None
        self.entries_before = 0

    def run(self) -> None:
        try:
            old = _parse(self.reader.read, self.start, self.end)
            self.entries_before = len(old.offsets)
            read = self.reader.read
            entries = [
                (offset, read(position, length))
                for offset, position, length in zip(*old, strict=True)
            ]
            try:
                compacted = compact(entries)
            except NotCompactable:
                return
            region = bytearray()
            frames = _Frames([], array("Q"), array("I"))
            for offset, payload in compacted:
                region += frame_header(offset.tx, offset.op, payload)
                frames.offsets.append(offset)
                frames.positions.append(self.start + len(region))
                frames.lengths.append(len(payload))
                region += payload
            self.compacted_bytes = len(region)
            self.prepared = self.storage.prepare_replacement(self.start, bytes(region), self.reader)
            self.frames = frames
        finally:
            self.reader.close()

    def abandon(self) -> None:
        self.storage.drop_replacement(self.prepared)
