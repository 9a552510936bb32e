#!/usr/bin/env python
"""Log reads: a catch-up read of a large shape log from its middle, and live reads at its end.

Run from the repository root::

    python benchmarks/log_read.py [--entries 1000000] [--size 120]

Builds a shape log in a temporary directory (a file, as in production): a snapshot, then
``--entries`` changes of about ``--size`` bytes, one per transaction, synced every 10,000.
Then measures, with the log's memory in this process (tracemalloc, the log's index only:
its bytes are on the file):

- catch-up: a client at the middle offset reads to the end in ``chunk_bytes`` (10 MB)
  responses, as a client catching up does: entries/s and MB/s;
- streamed: the same responses as the HTTP server sends a body over 256 KiB, read from
  the file in pieces as a client takes them (``http/body.py``): entries/s, pieces;
- random: 2,000 reads of one 64 KiB response each from random offsets (a client
  resuming anywhere): reads/s;
- live: 100,000 reads from the second-to-last offset (a live client woken by an append):
  reads/s.

The file's bytes are in the page cache (just written), so this measures the index and
the read path, not the disk. The last line printed is::

    log_read: catch-up X entries/s, streamed S entries/s, random Y reads/s, live Z reads/s,
    index N bytes/entry
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from hot_path import hot_path
from pysync.http.body import _pieces
from pysync.log.file_storage import FileStorage
from pysync.log.log import ShapeLog
from pysync.log.offset import LogOffset


def build(directory: Path, entries: int, size: int) -> tuple[ShapeLog, list[LogOffset], int]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    log = ShapeLog(FileStorage(directory))
    log.append_snapshot_chunk(0, b'{"headers":{"control":"snapshot-end"}}', last=True)
    pad = b"x" * max(0, size - 60)
    offsets = []
    for n in range(entries):
        offset = LogOffset(1000 + n, 0)
        payload = b'{"key":"%d","value":{"pad":"%s"},"headers":{}}' % (n % 1000, pad)
        log.append_changes([(offset, payload)])
        if n % 10_000 == 9_999:
            log.sync()
        if n % 1000 == 0:
            offsets.append(offset)
    log.sync()
    index = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return log, offsets, index


async def _stream(log: ShapeLog, spans: list[tuple[int, int]]) -> int:
    """A response's body as the HTTP server streams it; its number of pieces."""
    count = 0
    async for _ in _pieces(log.storage.reader(), spans, None, "bench"):
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=120)
    args = parser.parse_args()
    print(hot_path(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        log, sampled, index = build(Path(tmp), args.entries, args.size)
        print(f"built {args.entries:,} entries in {time.perf_counter() - start:.1f} s")
        # Catch-up from the middle.
        after = LogOffset(1000 + args.entries // 2, 0)
        read = 0
        total = 0
        start = time.perf_counter()
        while True:
            payloads, after, reached = log.read(after)
            read += len(payloads)
            total += sum(map(len, payloads))
            if reached:
                break
        seconds = time.perf_counter() - start
        catch_up = read / seconds
        print(f"catch-up: {read:,} entries, {total / 1e6:.0f} MB in {seconds:.2f} s")
        # The same catch-up as streamed HTTP bodies.
        streamed, pieces, start = 0, 0, time.perf_counter()
        after = LogOffset(1000 + args.entries // 2, 0)
        while True:
            part = log.slice(after)
            pieces += asyncio.run(_stream(log, part.spans))
            streamed += len(part.spans)
            after = part.end
            if part.reached:
                break
        seconds = time.perf_counter() - start
        stream_rate = streamed / seconds
        print(f"streamed: {streamed:,} entries in {pieces:,} pieces in {seconds:.2f} s")
        # Random resumes.
        rng = random.Random(1)
        start = time.perf_counter()
        for _ in range(2000):
            offset = rng.choice(sampled)
            log.read(LogOffset(offset.tx + rng.randint(0, 999), 0), 64 * 1024)
        random_rate = 2000 / (time.perf_counter() - start)
        # Live readers at the end.
        last = LogOffset(1000 + args.entries - 2, 0)
        start = time.perf_counter()
        for _ in range(100_000):
            log.read(last)
        live_rate = 100_000 / (time.perf_counter() - start)
        print(
            f"log_read: catch-up {catch_up:,.0f} entries/s, streamed {stream_rate:,.0f} entries/s,"
            f" random {random_rate:,.0f} reads/s,"
            f" live {live_rate:,.0f} reads/s, index {index / args.entries:.1f} bytes/entry"
        )


if __name__ == "__main__":
    main()
