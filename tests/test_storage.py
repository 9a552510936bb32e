"""Shape log storage under faults: all-or-nothing appends, torn tails, corruption,
failed fsyncs. Real files; the failures are injected through the storage's ``Io`` seam
(the engine-level tests use a real full tmpfs)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pysync.http import body
from pysync.http.body import _pieces
from pysync.log.file_storage import BUFFER_BYTES, FileStorage
from pysync.log.followed_storage import FollowedStorage
from pysync.log.frames import HEADER_SIZE, Frame
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.log.offset import LogOffset
from pysync.log.storage import Io, LogCorruptError, LogCutError, StorageError


def entry(n: int) -> bytes:
    return json.dumps({"key": str(n), "value": {"id": str(n), "pad": "x" * 50}}).encode()


class FaultyIo(Io):
    """Fails chosen calls as a full disk does: ``write`` after writing ``partial`` bytes."""

    def __init__(self) -> None:
        self.fail_writes = 0
        self.partial = 0
        self.fail_syncs = 0
        self.fail_truncates = 0

    def write(self, fd: int, data: memoryview) -> int:
        if self.fail_writes:
            self.fail_writes -= 1
            if self.partial:
                written = os.write(fd, data[: self.partial])
                self.partial = 0
                return written  # the next call fails: a short write, then ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.fail_syncs:
            self.fail_syncs -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        if self.fail_truncates:
            self.fail_truncates -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.ftruncate(fd, size)


def snapshot_log(directory: Path, io: Io | None = None) -> ShapeLog:
    log = ShapeLog(FileStorage(directory, io) if io else FileStorage(directory))
    if not log.snapshot_done:
        log.append_snapshot_chunk(0, entry(0), last=True)
        log.sync()
    return log


def append(log: ShapeLog, *entries: tuple[LogOffset, bytes]) -> None:
    """Append and write to the file (appends are buffered until a sync)."""
    log.append_changes(list(entries))
    log.sync()


def reopen(directory: Path) -> ShapeLog:
    return ShapeLog(FileStorage(directory))


def test_failed_write_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    io = FaultyIo()
    log = snapshot_log(tmp_path, io)
    append(log, (LogOffset(10, 0), entry(1)))
    size = (tmp_path / "log").stat().st_size
    log.append_changes([(LogOffset(20, 0), entry(2)), (LogOffset(20, 2), entry(3))])
    io.fail_writes, io.partial = 2, 40  # part of a frame reaches the file, then ENOSPC
    with pytest.raises(StorageError) as failure:
        log.sync()
    assert failure.value.disk_full and "log" in str(failure.value)
    assert (tmp_path / "log").stat().st_size == size, "the partial frame was not cut back"
    # Still buffered and readable; written whole once there is room.
    assert log.read(LogOffset(10, 0)) == ([entry(2), entry(3)], LogOffset(20, 2), True)
    log.sync()
    again = reopen(tmp_path)
    assert again.offsets == [LogOffset(0, 0), LogOffset(10, 0), LogOffset(20, 0), LogOffset(20, 2)]
    assert again.read(LogOffset(10, 0)) == ([entry(2), entry(3)], LogOffset(20, 2), True)


def test_a_big_append_that_cannot_be_written_is_not_appended(tmp_path: Path) -> None:
    io = FaultyIo()
    log = snapshot_log(tmp_path, io)
    append(log, (LogOffset(10, 0), entry(1)))
    big = b'{"pad":"' + b"x" * (BUFFER_BYTES + 10) + b'"}'
    io.fail_writes = 1
    with pytest.raises(StorageError):
        log.append_changes([(LogOffset(20, 0), big)])  # over the buffer: written at once
    assert log.offsets == [LogOffset(0, 0), LogOffset(10, 0)] and log.last_tx == 10
    append(log, (LogOffset(20, 0), entry(2)))
    assert reopen(tmp_path).offsets == [LogOffset(0, 0), LogOffset(10, 0), LogOffset(20, 0)]


def test_a_cut_that_failed_is_redone_before_the_next_write(tmp_path: Path) -> None:
    io = FaultyIo()
    log = snapshot_log(tmp_path, io)
    log.append_changes([(LogOffset(10, 0), entry(1))])
    io.fail_writes, io.partial, io.fail_truncates = 2, 30, 1
    with pytest.raises(StorageError):
        log.sync()
    io.fail_truncates = 1  # still failing: the write must refuse, not append after junk
    with pytest.raises(StorageError):
        log.sync()
    log.sync()
    assert reopen(tmp_path).offsets == [LogOffset(0, 0), LogOffset(10, 0)]


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5])
def test_torn_tail_is_cut_on_recovery(tmp_path: Path, cut: int) -> None:
    log = snapshot_log(tmp_path)
    append(log, (LogOffset(10, 0), entry(1)), (LogOffset(10, 2), entry(2)))
    path = tmp_path / "log"
    whole = path.stat().st_size
    append(log, (LogOffset(20, 0), entry(3)))
    os.truncate(path, whole + cut)  # a crash part way through the last frame
    again = reopen(tmp_path)
    assert again.offsets == [LogOffset(0, 0), LogOffset(10, 0), LogOffset(10, 2)]
    assert path.stat().st_size == whole
    append(again, (LogOffset(20, 0), entry(3)))
    assert reopen(tmp_path).offsets[-1] == LogOffset(20, 0)


def test_zeros_after_the_last_frame_are_a_torn_tail(tmp_path: Path) -> None:
    append(snapshot_log(tmp_path), (LogOffset(10, 0), entry(1)))
    path = tmp_path / "log"
    whole = path.stat().st_size
    with path.open("ab") as f:
        f.write(bytes(5000))  # the file grew, the data never reached the disk
    assert reopen(tmp_path).offsets == [LogOffset(0, 0), LogOffset(10, 0)]
    assert path.stat().st_size == whole


@pytest.mark.parametrize("where", ["header", "payload", "marker"])
def test_corruption_in_the_middle_stops_recovery(tmp_path: Path, where: str) -> None:
    log = snapshot_log(tmp_path)
    for n in range(1, 6):
        append(log, (LogOffset(n * 10, 0), entry(n)))
    path = tmp_path / "log"
    data = bytearray(path.read_bytes())
    second = list(log.entries())[2][1] - HEADER_SIZE  # the frame of LSN 20
    flip = {"header": second + 5, "payload": second + HEADER_SIZE + 3, "marker": second}[where]
    data[flip] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError) as failure:
        reopen(tmp_path)
    assert failure.value.position == second and str(path) in str(failure.value)
    assert path.read_bytes() == bytes(data), "recovery changed a corrupt log"


def test_failed_sync_discards_what_is_not_durable(tmp_path: Path) -> None:
    io = FaultyIo()
    log = snapshot_log(tmp_path, io)
    append(log, (LogOffset(10, 0), entry(1)))
    log.append_changes([(LogOffset(20, 0), entry(2)), (LogOffset(20, 2), entry(3))])
    io.fail_syncs = 1
    with pytest.raises(StorageError):
        log.sync()
    assert log.dirty
    log.discard_unsynced()
    assert log.offsets == [LogOffset(0, 0), LogOffset(10, 0)] and log.last_tx == 10
    assert log.snapshot_done
    append(log, (LogOffset(20, 0), entry(2)))
    assert reopen(tmp_path).offsets == [LogOffset(0, 0), LogOffset(10, 0), LogOffset(20, 0)]


def test_discarding_an_unsynced_snapshot_end(tmp_path: Path) -> None:
    io = FaultyIo()
    log = ShapeLog(FileStorage(tmp_path, io))
    log.append_snapshot_chunk(0, entry(0), last=False)
    log.sync()
    log.append_snapshot_chunk(1, entry(1), last=True)
    assert log.snapshot_done
    log.discard_unsynced()
    assert not log.snapshot_done and log.offsets == [LogOffset(0, 0)]


@pytest.mark.parametrize("kind", ["file: written, not synced", "file: buffered", "memory"], ids=str)
def test_a_reader_never_serves_bytes_a_failed_sync_cut_off(tmp_path: Path, kind: str) -> None:
    # A large response is streamed from a reader made with its slice; a failed sync then
    # cuts the log back, and the replay appends other frames at the same positions. The
    # reader must not hand out those bytes (nor the nothing a cut file reads as): it
    # raises, and the response ends unfinished so its client asks again.
    storage = MemoryStorage() if kind == "memory" else FileStorage(tmp_path)
    log = ShapeLog(storage)
    log.append_snapshot_chunk(0, entry(0), last=True)
    log.sync()
    log.append_changes([(LogOffset(10, 0), entry(1)), (LogOffset(10, 2), entry(2))])
    if kind == "file: written, not synced":
        storage.written_size()
    part = log.slice(LogOffset(0, 0))
    spans = part.spans
    assert len(spans) == 2
    reader = storage.reader()
    durable = log.storage.durable_size()
    (before_position, before_length) = log.slice(LogOffset(-1, 0)).spans[0]
    log.discard_unsynced()  # as after a failed sync
    log.append_changes([(LogOffset(10, 0), entry(7)), (LogOffset(10, 2), entry(8))])
    log.sync()
    assert storage.size() > durable
    # What stayed the log's reads as before; what was cut raises, even though the
    # positions hold bytes again.
    assert reader.read(before_position, before_length) == entry(0)
    for position, length in spans:
        with pytest.raises(LogCutError):
            reader.read(position, length)
    reader.close()
    # A reader made after the cut reads the new frames.
    fresh = storage.reader()
    assert [fresh.read(p, n) for p, n in log.slice(LogOffset(0, 0)).spans] == [entry(7), entry(8)]
    fresh.close()


def test_a_reader_raises_on_a_file_cut_under_it(tmp_path: Path) -> None:
    # A worker follows a file the replicating process writes; when that process cuts it
    # back, the worker's reader finds fewer bytes than it was told of.
    log = snapshot_log(tmp_path)
    append(log, (LogOffset(10, 0), entry(1)))
    reader = log.storage.reader()
    (position, length) = log.slice(LogOffset(0, 0)).spans[0]
    os.truncate(tmp_path / "log", position + 3)
    with pytest.raises(LogCutError):
        reader.read(position, length)
    reader.close()


async def test_a_streamed_body_cut_under_it_ends_unfinished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(body, "PIECE_BYTES", len(entry(1)) + 4)  # one entry per piece
    io = FaultyIo()
    log = snapshot_log(tmp_path, io)
    log.append_changes([(LogOffset(10, 0), entry(1)), (LogOffset(10, 2), entry(2))])
    pieces = _pieces(log.storage.reader(), log.slice(LogOffset(0, 0)).spans, None, "h-1")
    assert await anext(pieces) == b"["
    assert await anext(pieces) == entry(1)
    io.fail_syncs = 1
    with pytest.raises(StorageError):
        log.sync()
    log.discard_unsynced()
    with pytest.raises(LogCutError):
        await anext(pieces)


@pytest.mark.parametrize("storage", ["file", "memory"])
async def test_a_streamed_body_is_the_inline_one_in_few_pieces(
    tmp_path: Path, storage: str
) -> None:
    """Small entries are read and sent in pieces of up to PIECE_BYTES of the file, a
    large one in pieces of its own; the bytes are those of the body built at once. One
    read and one piece per entry made a catch-up of 30,000 small changes take 13 s."""
    log = ShapeLog(FileStorage(tmp_path) if storage == "file" else MemoryStorage())
    log.append_snapshot_chunk(0, entry(0), last=False)
    log.append_snapshot_chunk(1, b"[" + b"y" * (3 * body.PIECE_BYTES + 5) + b"]", last=True)
    changes = [(LogOffset(10 + n, 0), entry(n)) for n in range(3000)]
    log.append_changes(changes[:1000])
    log.append_changes([(LogOffset(5000, 0), b'"' + b"z" * body.PIECE_BYTES + b'"')])
    log.append_changes(changes[1000:])
    log.sync()
    spans = [(position, length) for _, position, length in log.entries()]
    payloads = [log.storage.read(position, length) for position, length in spans]
    tail = b'{"headers":{"control":"up-to-date"}}'
    for start, stop, end in ((0, 1, None), (1, 2, tail), (2, 9, None), (0, 0, tail), (0, 0, None)):
        some = spans[start:stop]
        pieces = [p async for p in _pieces(log.storage.reader(), some, end, "h-1")]
        whole = payloads[start:stop] + ([end] if end else [])
        assert b"".join(pieces) == b"[" + b",".join(whole) + b"]"
    pieces = [p async for p in _pieces(log.storage.reader(), spans, tail, "h-1")]
    expected = b"[" + b",".join([*payloads, tail]) + b"]"
    assert b"".join(pieces) == expected
    assert max(len(p) for p in pieces) <= body.PIECE_BYTES + 1
    # 3000 entries of ~80 bytes, and two large ones: about 270 KB in some 20 pieces
    assert len(pieces) < 3 + 2 * (len(expected) // body.PIECE_BYTES + 2), len(pieces)


def test_a_followed_log_cut_by_its_writer_is_never_read_on(tmp_path: Path) -> None:
    # A worker (``--workers``) follows the file the replicating process writes, unsynced
    # frames included. When the writer cuts them off, the worker's reads past the cut
    # raise instead of answering nothing, and the responses it streams stop when it hears
    # of the cut (``rewind``), even if the writer wrote other frames there meanwhile.
    writer = snapshot_log(tmp_path)
    append(writer, (LogOffset(10, 0), entry(1)), (LogOffset(10, 2), entry(2)))
    followed = FollowedStorage(tmp_path / "log")
    worker = ShapeLog(followed)
    assert worker.offsets == writer.offsets
    spans = worker.slice(LogOffset(0, 0)).spans
    streaming = followed.reader()
    cut = spans[0][0] + 5
    os.truncate(tmp_path / "log", cut)  # the writer discards what was not durable
    with pytest.raises(LogCutError):
        followed.read(*spans[1])
    # The replay writes other bytes where the cut ones were; the worker hears of the cut.
    with open(tmp_path / "log", "ab") as f:
        f.write(b"x" * 500)
    worker.follow(cut)
    for span in spans:
        with pytest.raises(LogCutError):
            streaming.read(*span)
    streaming.close()


class CutAfterVerifying(FollowedStorage):
    """A followed log whose writer cuts its file (a failed sync) just after the worker
    verified the frames it was told of, before it reads their payloads."""

    cut_to: int | None = None

    def frames_to(self, size: int) -> Iterator[Frame]:
        yield from super().frames_to(size)
        if self.cut_to is not None:
            os.truncate(self.path, self.cut_to)
            self.cut_to = None


async def test_a_followed_log_cut_as_it_is_indexed_waits_for_the_cut_s_news(
    tmp_path: Path,
) -> None:
    writer = snapshot_log(tmp_path)
    followed = CutAfterVerifying(tmp_path / "log")
    worker = ShapeLog(followed)
    waiter = worker.waiter()
    durable = os.path.getsize(tmp_path / "log")
    writer.append_changes([(LogOffset(10, 0), entry(1)), (LogOffset(10, 2), entry(2))])
    writer.storage.written_size()  # written, not synced: the worker is told of them
    followed.cut_to = durable  # the sync fails: cut back to what is durable
    worker.follow(os.path.getsize(tmp_path / "log"))  # raised LogCutError, out of the
    assert not waiter.done()  # worker's channel: no waiter is woken for the cut frames
    # The writer's replay, then its announcement of the new size: indexed anew.
    writer.discard_unsynced()
    append(writer, (LogOffset(10, 0), entry(1)), (LogOffset(11, 0), entry(3)))
    worker.follow(durable)
    worker.follow(os.path.getsize(tmp_path / "log"))
    assert worker.offsets == writer.offsets
    assert worker.payloads(worker.slice(LogOffset(0, 0))) == writer.payloads(
        writer.slice(LogOffset(0, 0))
    )


def test_a_compaction_of_a_followed_log_leaves_its_streams_reading(tmp_path: Path) -> None:
    writer = snapshot_log(tmp_path)
    append(writer, (LogOffset(10, 0), entry(1)))
    followed = FollowedStorage(tmp_path / "log")
    worker = ShapeLog(followed)
    span = worker.slice(LogOffset(0, 0)).spans[0]
    streaming = followed.reader()
    # The writer puts a compacted file in place (a rename): the old one stays readable.
    replacement = tmp_path / "log.new"
    replacement.write_bytes((tmp_path / "log").read_bytes())
    os.rename(replacement, tmp_path / "log")
    worker.follow(os.path.getsize(tmp_path / "log"))
    assert streaming.read(*span) == entry(1)
    streaming.close()
