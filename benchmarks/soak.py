#!/usr/bin/env python
"""Soak benchmark: does the engine's memory (and its storage) grow with history?

Run from the repository root::

    python benchmarks/soak.py [--minutes 10] [--rate 400] [--shapes 200] [--subscribers 20]
                              [--rows 2000] [--warmup 0.2] [--compact-min-bytes 65536]

Starts a private Postgres (``temporary_cluster``) and ``pysync serve`` as a subprocess
(storage directory in a temporary folder, as in production). A table ``items(id int
primary key, owner int, seq bigint, note text)`` holds ``--rows`` rows spread over
``--shapes`` owners; each shape is ``owner = k``, plus one shape on the whole table.
``--subscribers`` live long-poll clients follow shapes (one of them the whole-table
shape), so the engine serves while it ingests. A writer thread commits ``--rate``
transactions per second, each updating one random row (``seq = seq + 1``, so the same
rows are updated again and again: the history of a row grows, the table does not).

Every 5 s it samples the engine's RSS (``VmRSS``, the process and its children but not
Postgres) and the bytes in the storage directory, against the row changes committed so
far. After the warm-up (the first ``--warmup`` fraction of the run) it fits a line to
each and prints the slopes: RSS in MB per million row changes (target: about 0), and
storage in MB per million row changes (bounded once logs are compacted).

For hours instead of minutes: ``--minutes 240`` (the samples are printed as they come,
so a run can be watched and stopped; the slope is printed at the end).

The last line printed is::

    soak: rss slope X.XX MB per million changes, storage slope Y.Y MB per million changes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hot_path import hot_path
from latency import Conn, Server, child_pids, rss_kib  # noqa: E402  - the same server and client
from pysync.postgres.cluster import temporary_cluster  # noqa: E402

DBNAME = "soak"
SAMPLE_SECONDS = 5.0


def say(text: str = "") -> None:
    print(text, flush=True)


def engine_rss_bytes(pid: int) -> int:
    """RSS of ``pysync serve`` and its children (HTTP workers), not of Postgres."""
    kib: int = sum(rss_kib(p) for p in [pid, *child_pids(pid)])
    return kib * 1024


def storage_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


class Writer(threading.Thread):
    """Commits ``rate`` single-row updates a second until stopped."""

    def __init__(self, url: str, rate: float, rows: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.rows = url, rate, rows
        self.committed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        rng = random.Random(1)
        with psycopg.connect(self.url, autocommit=True) as conn:
            start = time.monotonic()
            while not self.stopping.is_set():
                due = start + self.committed / self.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                conn.execute(
                    "UPDATE items SET seq = seq + 1 WHERE id = %s", (rng.randrange(self.rows),)
                )
                self.committed += 1


async def follow(port: int, where: str | None, stop: asyncio.Event, errors: list[str]) -> None:
    """A client syncing one shape, then long-polling until ``stop``."""
    conn = await Conn.open(port)
    query = "table=items" + (f"&where={where}" if where else "")
    offset, handle, cursor = "-1", "", ""
    try:
        while not stop.is_set():
            live = offset != "-1" and cursor != ""
            path = f"/v1/shape?{query}&offset={offset}"
            if handle:
                path += f"&handle={handle}"
            if live:
                path += f"&live=true&cursor={cursor}"
            status, headers, _ = await conn.get(path)
            if status == 409:
                offset, handle, cursor = "-1", "", ""
                continue
            if status >= 400:
                errors.append(f"{status} for {path}")
                await asyncio.sleep(1)
                continue
            offset = headers[b"electric-offset"].decode()
            handle = headers[b"electric-handle"].decode()
            if b"electric-up-to-date" in headers:
                cursor = headers.get(b"electric-cursor", b"0").decode()
    finally:
        conn.close()


async def soak(args: argparse.Namespace) -> None:
    with temporary_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        url = cluster.url(DBNAME)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE items (id int PRIMARY KEY, owner int NOT NULL, seq bigint NOT"
                " NULL DEFAULT 0, note text NOT NULL DEFAULT repeat('x', 60))"
            )
            conn.execute(
                "INSERT INTO items (id, owner) SELECT i, i %% %s FROM generate_series(0, %s) i",
                (args.shapes, args.rows - 1),
            )
        storage = Path(tmp) / "storage"
        extra = ("--compact-min-bytes", str(args.compact_min_bytes))
        server = Server(url, storage, Path(tmp) / "serve.log", extra)
        stop = asyncio.Event()
        errors: list[str] = []
        try:
            await server.wait_healthy()
            # Every shape made (and its snapshot taken) before the clock starts.
            for owner in range(args.shapes):
                conn = await Conn.open(server.port)
                status, _, _ = await conn.get(
                    f"/v1/shape?table=items&where=owner={owner}&offset=-1"
                )
                conn.close()
                if status != 200:
                    raise RuntimeError(f"shape owner={owner}: {status}\n{server.tail()}")
            clients = [asyncio.create_task(follow(server.port, None, stop, errors))]
            clients += [
                asyncio.create_task(follow(server.port, f"owner={k % args.shapes}", stop, errors))
                for k in range(args.subscribers - 1)
            ]
            writer = Writer(url, args.rate, args.rows)
            writer.start()
            say(f"{'s':>6} {'changes':>10} {'rss MB':>8} {'storage MB':>11}")
            samples: list[tuple[float, int, int, int]] = []
            started = time.monotonic()
            duration = args.minutes * 60
            while time.monotonic() - started < duration:
                await asyncio.sleep(SAMPLE_SECONDS)
                if server.proc.poll() is not None:
                    raise RuntimeError(f"pysync serve exited:\n{server.tail()}")
                sample = (
                    time.monotonic() - started,
                    writer.committed,
                    engine_rss_bytes(server.pid),
                    storage_bytes(storage),
                )
                samples.append(sample)
                say(
                    f"{sample[0]:6.0f} {sample[1]:10,} {sample[2] / 1e6:8.1f} {sample[3] / 1e6:11.1f}"
                )
            writer.stopping.set()
            writer.join()
            stop.set()
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
        finally:
            server.stop()
    measured = [s for s in samples if s[0] >= duration * args.warmup]
    if len(measured) < 3:
        raise SystemExit("too few samples after the warm-up: run longer")
    # Bytes per change is MB per million changes.
    rss = slope([(c, r) for _, c, r, _ in measured])
    disk = slope([(c, d) for _, c, _, d in measured])
    changes = measured[-1][1] - measured[0][1]
    seconds = measured[-1][0] - measured[0][0]
    say()
    say(
        f"after the warm-up: {changes:,} row changes in {seconds:.0f} s ({changes / seconds:,.0f}/s)"
    )
    say(f"rss {measured[0][2] / 1e6:.1f} -> {measured[-1][2] / 1e6:.1f} MB")
    say(f"storage {measured[0][3] / 1e6:.1f} -> {measured[-1][3] / 1e6:.1f} MB")
    if errors:
        say(f"client errors: {len(errors)} (first: {errors[0]})")
    say(
        f"soak: rss slope {rss:.2f} MB per million changes,"
        f" storage slope {disk:.1f} MB per million changes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=400, help="transactions per second")
    parser.add_argument("--shapes", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run")
    parser.add_argument(
        "--compact-min-bytes",
        type=int,
        default=64 * 1024,
        help="the server's --compact-min-bytes (default 65536, so that the logs of a short "
        "run compact; the server's own default is 1 MiB)",
    )
    print(hot_path(), flush=True)
    asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
