"""The sparse index of a shape log: reads from every offset equal a plain list's, across
sealed blocks, after recovery, after a failed sync cut blocks off, and the index in
memory does not grow with the number of frames."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import pytest

from pysync.log import log as log_module
from pysync.log.file_storage import FileStorage
from pysync.log.log import BLOCK_FRAMES, ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.log.offset import BEFORE_ALL, LAST_BEFORE_REAL, LogOffset
from pysync.log.storage import Io

Model = list[tuple[LogOffset, bytes]]


def payload(rng: random.Random, n: int) -> bytes:
    # Mostly small changes, now and then a large one (a block sealed by its bytes).
    size = rng.choice([20, 60, 200]) if rng.random() < 0.97 else rng.randint(50_000, 300_000)
    return b'{"n":%d,"pad":"%s"}' % (n, b"x" * size)


def fill(log: ShapeLog, rng: random.Random, transactions: int) -> Model:
    model: Model = []
    log.append_snapshot_chunk(0, b'{"snapshot":0}', last=False)
    log.append_snapshot_chunk(1, b'{"headers":{"control":"snapshot-end"}}', last=True)
    model += [(LogOffset(0, 0), b'{"snapshot":0}')]
    model += [(LogOffset(0, 1), b'{"headers":{"control":"snapshot-end"}}')]
    lsn = 100
    for _ in range(transactions):
        lsn += rng.randint(1, 1000)
        size = rng.choice([1, 1, 1, 2, 5]) if rng.random() < 0.99 else 3 * BLOCK_FRAMES
        entries = [(LogOffset(lsn, 2 * op), payload(rng, lsn + op)) for op in range(size)]
        log.append_changes(entries)
        model += entries
    return model


def expected(model: Model, after: LogOffset, limit: int) -> tuple[list[bytes], LogOffset, bool]:
    """What a log read returns, computed from the plain list."""
    start = next((i for i, (offset, _) in enumerate(model) if offset > after), len(model))
    if start == len(model):
        return [], max(after, model[-1][0] if model[-1][0].tx else LAST_BEFORE_REAL), True
    if model[start][0].tx == 0:
        return [model[start][1]], model[start][0], False
    end, size = start, 0
    while end < len(model) and (end == start or size + len(model[end][1]) <= limit):
        size += len(model[end][1])
        end += 1
    return [p for _, p in model[start:end]], model[end - 1][0], end == len(model)


def check_reads(log: ShapeLog, model: Model, rng: random.Random, reads: int = 400) -> None:
    afters = [BEFORE_ALL, LAST_BEFORE_REAL, model[-1][0], LogOffset(model[-1][0].tx + 1, 0)]
    afters += [rng.choice(model)[0] for _ in range(reads)]
    # offsets between entries (odd ops) and inside transactions
    afters += [LogOffset(o.tx, o.op + 1) for o, _ in rng.sample(model, min(50, len(model)))]
    for after in afters:
        limit = rng.choice([1, 500, 20_000, 10 * 1024 * 1024])
        assert log.read(after, limit) == expected(model, after, limit), after
    assert log.offsets == [offset for offset, _ in model]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reads_from_any_offset_equal_a_plain_list(seed: int) -> None:
    rng = random.Random(seed)
    log = ShapeLog(MemoryStorage(), chunk_bytes=10_000)
    model = fill(log, rng, 3000)
    check_reads(log, model, rng)
    # Reading a whole log in responses, as a catching-up client does, from the start.
    after, seen = BEFORE_ALL, []
    while True:
        payloads, after, reached = log.read(after)
        seen += payloads
        if reached:
            break
    assert seen == [p for _, p in model]


def test_index_memory_does_not_grow_with_frames(tmp_path: Path) -> None:
    log = ShapeLog(FileStorage(tmp_path))
    log.append_snapshot_chunk(0, b'{"headers":{"control":"snapshot-end"}}', last=True)
    frames = 60_000

    def append(start: int, count: int) -> None:
        for n in range(start, start + count):
            log.append_changes([(LogOffset(100 + n, 0), b'{"change":%d}' % n)])
            if n % 1000 == 0:
                log.sync()
        log.sync()

    append(0, 1000)  # buffers and the first blocks in place
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    append(1000, frames)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # A dense index took about 100 bytes a frame; the sparse one about one.
    assert grown / frames < 4, f"{grown / frames:.1f} bytes per frame"
    assert len(log._tail.offsets) <= BLOCK_FRAMES
    assert log.read(LogOffset(100 + 30_000, 0), 32) == (
        [b'{"change":30001}', b'{"change":30002}'],
        LogOffset(100 + 30_002, 0),
        False,
    )


def test_recovered_file_log_reads_as_written(tmp_path: Path) -> None:
    rng = random.Random(11)
    log = ShapeLog(FileStorage(tmp_path))
    model = fill(log, rng, 1500)
    log.sync()
    again = ShapeLog(FileStorage(tmp_path))
    check_reads(again, model, rng)
    assert again.snapshot_done and again.last_tx == model[-1][0].tx


class FailingSync(Io):
    fail = False

    def fdatasync(self, fd: int) -> None:
        if self.fail:
            raise OSError(5, "Input/output error")
        super().fdatasync(fd)


@pytest.mark.parametrize("unsynced", [1, 5, BLOCK_FRAMES + 3, 5 * BLOCK_FRAMES])
def test_failed_sync_cuts_back_across_blocks(tmp_path: Path, unsynced: int) -> None:
    rng = random.Random(unsynced)
    io = FailingSync()
    log = ShapeLog(FileStorage(tmp_path, io))
    model = fill(log, rng, 700)
    log.sync()
    lsn = model[-1][0].tx
    for n in range(unsynced):
        log.append_changes([(LogOffset(lsn + 10 * (n + 1), 0), b'{"lost":%d}' % n)])
    io.fail = True
    with pytest.raises(Exception, match="cannot write"):
        log.sync()
    log.discard_unsynced()
    assert log.last_tx == lsn and log.snapshot_done
    check_reads(log, model, rng, reads=150)
    # Appending goes on where the durable part ends, and survives a restart.
    io.fail = False
    more = [(LogOffset(lsn + 5, 0), b'{"again":1}')]
    log.append_changes(more)
    log.sync()
    check_reads(ShapeLog(FileStorage(tmp_path)), model + more, rng, reads=100)


def test_parsed_blocks_are_bounded() -> None:
    rng = random.Random(5)
    logs = [ShapeLog(MemoryStorage()) for _ in range(3)]
    for log in logs:
        model = fill(log, rng, 2000)
        check_reads(log, model, rng, reads=100)
    assert len(log_module._parsed) <= log_module._PARSED_BLOCKS
