#!/usr/bin/env python
"""Snapshot benchmark: pysync's initial snapshot against a plain ``COPY ... TO STDOUT``.

Run from the repository root::

    python benchmarks/snapshot.py [--rows N] [--rounds R]

Starts a private Postgres (``temporary_cluster``) and fills ``items(id int primary key,
user_id int, title text, done bool, created timestamptz)`` with 1,000,000 rows (then
VACUUM ANALYZE and a warm-up scan, so every reader finds the table in shared buffers
with hint bits set). Four readers take all rows, one after the other, never
concurrently:

- ``COPY``: ``COPY (SELECT id, user_id, title, done, created FROM items) TO STDOUT`` with
  psycopg's ``cursor.copy()``, reading every block (text format, the same display
  settings as pysync's snapshot connections);
- ``pysync memory``: ``write_snapshot`` of the shape ``items`` (all columns, no WHERE)
  through pysync's snapshot connection pool (2 sessions, the second lent as the engine
  lends it: ``spare_snapshot_session``) into a ``ShapeLog`` on ``MemoryStorage``: the
  rows as Electric JSON entries (built in SQL), appended in chunks;
- ``pysync 1 session``: the same with no second session;
- ``pysync disk``: as ``pysync memory`` into a ``ShapeLog`` on ``FileStorage`` in a
  temporary directory (the final fdatasync, done by the engine after the snapshot, is
  shown separately and not in the rate).

Rounds alternate the order (COPY first, then last, ...); each line shows wall time and
this process's CPU time (the Postgres backends' is not in it). The memory log is decoded
once (untimed) to check it holds exactly the table's rows. Ratios are COPY's time over
pysync's in the same round; the last line is the median over the rounds::

    snapshot ratio pysync/COPY: X.XX

(1.00 = as fast as COPY).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import psycopg

from hot_path import hot_path
from pysync.log.file_storage import FileStorage
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.postgres.cluster import temporary_cluster
from pysync.postgres.connections import Connections
from pysync.postgres.session import display_options
from pysync.shapes.definition import Shape, ShapeDefinition, validate
from pysync.shapes.snapshotter import write_snapshot

DBNAME = "bench"
COPY_QUERY = "COPY (SELECT id, user_id, title, done, created FROM items) TO STDOUT"


def say(text: str = "") -> None:
    print(text, flush=True)


def fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, user_id int, title text, done bool,"
            " created timestamptz)"
        )
        conn.execute(
            "INSERT INTO items SELECT g, g %% 1000, 'item ' || g || ' of user ' || (g %% 1000),"
            " g %% 3 = 0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'"
            " FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE items")
        conn.execute("SELECT count(*), sum(length(title)) FROM items")


def copy_rows(url: str) -> tuple[float, int, int]:
    """Seconds, rows and bytes of ``COPY ... TO STDOUT`` read to the end."""
    with psycopg.connect(url, autocommit=True, options=display_options()) as conn:
        start = time.perf_counter()
        size = 0
        lines = 0
        with conn.cursor() as cur, cur.copy(COPY_QUERY) as copy:
            for block in copy:
                size += len(block)
                lines += bytes(block).count(b"\n")
        return time.perf_counter() - start, lines, size


async def pysync_rows(url: str, shape: Shape, log: ShapeLog, sessions: int) -> float:
    connections = Connections(url, snapshots=sessions)
    await connections.open()
    try:
        # Both sessions connected before timing, as in a running engine's pool.
        async with connections.snapshot_session(), connections.spare_snapshot_session():
            pass
        async with connections.snapshot_session() as conn:
            start = time.perf_counter()
            helper = connections.spare_snapshot_session if sessions > 1 else None
            await write_snapshot(conn, shape, log, helper=helper)
            return time.perf_counter() - start
    finally:
        await connections.close()


def log_rows(log: ShapeLog) -> int:
    """Rows in a snapshot log (decoded; the last chunk ends with the snapshot-end control)."""
    rows = 0
    for _, position, length in log.entries():
        payload = log.storage.read(position, length)
        entries = msgspec.json.decode(b"[" + payload + b"]")
        rows += sum(1 for e in entries if "key" in e)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one pysync memory snapshot"
    )
    args = parser.parse_args()
    print(hot_path(), flush=True)

    with temporary_cluster() as cluster, tempfile.TemporaryDirectory(prefix="pysync-snap-") as tmp:
        say(
            f"Postgres {cluster.bin_dir} on port {cluster.port}; Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; {args.rows:,} rows, {args.rounds} round(s)"
        )
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        url = cluster.url(DBNAME)
        start = time.perf_counter()
        fill(url, args.rows)
        say(f"table filled in {time.perf_counter() - start:.1f}s")
        with psycopg.connect(url, autocommit=True) as conn:
            shape = validate(conn, ShapeDefinition.create("items"))

        times: dict[str, list[float]] = {}
        memory_log: ShapeLog | None = None
        order = ["COPY", "pysync memory", "pysync 1 session", "pysync disk"]
        for r in range(args.rounds):
            say(f"round {r + 1}")
            for n, name in enumerate(order if r % 2 == 0 else order[::-1]):
                cpu = time.process_time()
                if name == "COPY":
                    seconds, lines, size = copy_rows(url)
                    if lines != args.rows:
                        raise SystemExit(f"COPY returned {lines} rows, expected {args.rows}")
                    extra = f"{size / 2**20:.0f} MiB text"
                else:
                    if name == "pysync disk":
                        log = ShapeLog(FileStorage(Path(tmp) / f"shape{r}-{n}"))
                    else:
                        log = ShapeLog(MemoryStorage())
                    sessions = 1 if name == "pysync 1 session" else 2
                    seconds = asyncio.run(pysync_rows(url, shape, log, sessions))
                    size = log.storage.size()
                    extra = f"{size / 2**20:.0f} MiB JSON in {len(log.offsets)} chunks"
                    if name == "pysync disk":
                        sync_start = time.perf_counter()
                        log.sync()
                        extra += f", fdatasync {time.perf_counter() - sync_start:.2f}s"
                        log.storage.destroy()
                    elif memory_log is None:
                        memory_log = log
                cpu = time.process_time() - cpu
                say(
                    f"  {name:<16} {seconds:6.2f}s  {args.rows / seconds:>10,.0f} rows/s"
                    f"  cpu {cpu:5.2f}s  ({extra})"
                )
                times.setdefault(name, []).append(seconds)

        assert memory_log is not None
        got = log_rows(memory_log)
        if got != args.rows:
            raise SystemExit(f"the pysync log holds {got} rows, expected {args.rows}")
        say(f"checked: the memory log holds {got:,} rows")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(pysync_rows(url, shape, ShapeLog(MemoryStorage()), 2))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)

    say("\nsummary: median (best) of the rounds; ratio = COPY / pysync per round")
    copy = times["COPY"]
    for name in order:
        each = times[name]
        ratios = [c / t for c, t in zip(copy, each, strict=True)]
        say(
            f"  {name:<16} {statistics.median(each):6.2f}s ({min(each):.2f}s)"
            f"  {args.rows / statistics.median(each):>10,.0f} rows/s"
            + ("" if name == "COPY" else f"  ratios {', '.join(f'{x:.2f}' for x in ratios)}")
        )
    ratios = [c / t for c, t in zip(copy, times["pysync memory"], strict=True)]
    say(f"snapshot ratio pysync/COPY: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
