"""ShapeLog: snapshot chunks, change frames, reads from offsets, recovery of torn files."""

from __future__ import annotations

import json
from pathlib import Path

from pysync.log.file_storage import FileStorage
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.log.offset import BEFORE_ALL, LAST_BEFORE_REAL, LogOffset
from pysync.log.storage import PendingSync


def entry(n: int) -> bytes:
    return json.dumps(
        {"key": str(n), "value": {"id": str(n)}, "headers": {"operation": "insert"}}
    ).encode()


def test_snapshot_chunks_then_changes() -> None:
    log = ShapeLog(MemoryStorage(), chunk_bytes=1000)
    assert log.read(BEFORE_ALL) == ([], BEFORE_ALL, False)  # snapshot still running
    log.append_snapshot_chunk(0, entry(1) + b"," + entry(2), last=False)
    log.append_snapshot_chunk(1, entry(3) + b',{"headers":{"control":"snapshot-end"}}', last=True)
    assert log.last_offset == LAST_BEFORE_REAL
    payloads, end, reached = log.read(BEFORE_ALL)
    assert (len(payloads), str(end), reached) == (1, "0_0", False)
    payloads, end, reached = log.read(end)
    assert (str(end), reached) == ("0_1", False) and b"snapshot-end" in payloads[0]
    assert log.read(end) == ([], LAST_BEFORE_REAL, True)
    log.append_changes([(LogOffset(100, 0), entry(4)), (LogOffset(100, 2), entry(5))])
    log.append_changes([(LogOffset(200, 1), entry(6))])
    payloads, end, reached = log.read(LAST_BEFORE_REAL, max_bytes=1)
    assert (payloads, end, reached) == ([entry(4)], LogOffset(100, 0), False)  # at least one
    payloads, end, reached = log.read(LogOffset(0, 1))
    assert (payloads, end, reached) == ([entry(4), entry(5), entry(6)], LogOffset(200, 1), True)
    assert log.read(LogOffset(100, 1)) == ([entry(5), entry(6)], LogOffset(200, 1), True)
    assert log.read(LogOffset(300, 0)) == ([], LogOffset(300, 0), True)
    assert log.last_offset == LogOffset(200, 1) and log.last_tx == 200


def test_changes_read_in_bounded_responses() -> None:
    log = ShapeLog(MemoryStorage(), chunk_bytes=200)
    log.append_snapshot_chunk(0, b'{"headers":{"control":"snapshot-end"}}', last=True)
    for n in range(1, 51):
        log.append_changes([(LogOffset(n * 10, 0), entry(n))])
    after, seen = LogOffset(0, 0), []
    while True:
        payloads, end, reached = log.read(after)
        assert sum(map(len, payloads)) <= 200
        seen += payloads
        after = end
        if reached:
            break
    assert seen == [entry(n) for n in range(1, 51)]


def test_file_log_recovers_and_cuts_a_torn_frame(tmp_path: Path) -> None:
    log = ShapeLog(FileStorage(tmp_path / "s"))
    log.append_snapshot_chunk(0, entry(1), last=True)
    log.append_changes([(LogOffset(10, 0), entry(2)), (LogOffset(10, 2), entry(3))])
    log.sync()
    assert not log.dirty
    with (tmp_path / "s" / "log").open("ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x00\x01partial")  # a crash mid-write
    again = ShapeLog(FileStorage(tmp_path / "s"))
    assert again.offsets == [LogOffset(0, 0), LogOffset(10, 0), LogOffset(10, 2)]
    assert again.snapshot_done
    assert again.read(LogOffset(0, 0)) == ([entry(2), entry(3)], LogOffset(10, 2), True)
    again.append_changes([(LogOffset(20, 0), entry(4))])
    again.sync()
    assert ShapeLog(FileStorage(tmp_path / "s")).offsets[-1] == LogOffset(20, 0)


def test_sync_keeps_appends_racing_with_it_dirty() -> None:
    class Racing(MemoryStorage):
        """An append lands while the fsync runs (the flush loop syncs in a thread)."""

        log: ShapeLog

        def begin_sync(self) -> PendingSync:
            sync = super().begin_sync()

            def racing() -> None:
                if not getattr(self, "raced", False):
                    self.raced = True
                    self.log.append_changes([(LogOffset(20, 0), entry(2))])

            return PendingSync(racing, sync.mark)

    storage = Racing()
    log = ShapeLog(storage)
    storage.log = log
    log.append_changes([(LogOffset(10, 0), entry(1))])
    log.sync()
    assert log.dirty, "the racing append would never be fsynced"
