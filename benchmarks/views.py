#!/usr/bin/env python
"""In-process views: memory per idle ``Sync.materialise`` view, and the time a change
takes to reach all of them.

Run from the repository root::

    python benchmarks/views.py [--views N]

Starts a private Postgres (``temporary_cluster``) and an embedded ``pysync.Sync``
(in-memory shape logs). A table ``items(id int primary key, n int, note text)`` holds
one row per view. Two rounds, each opening ``--views`` views (default 1,000) in this
process and waiting until every one is up to date:

* one shape: every view on ``items WHERE id = 1`` (one row). The figure is the cost of a
  view alone (its rows, the Shape that keeps them, the log reader and its task).
* a shape each: view i on ``items WHERE id = i`` (one row each). The figure adds the
  engine's cost of a shape (its log, consumer, index entries).

Memory: tracemalloc's traced bytes over opening the views (after a gc), divided by the
view count (and the allocation sites that grew most), and RSS growth. Then one update of row 1 (every view of the first round
holds it) and the time until all views have applied it (``wait_for_txid``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import time
import tracemalloc
from typing import Any

import psycopg

import pysync
from hot_path import hot_path
from pysync.app.view import View
from pysync.postgres.cluster import temporary_cluster

DBNAME = "bench"
BATCH = 50
TOP_SITES = 8


def say(text: str = "") -> None:
    print(text, flush=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def open_views(
    sync: pysync.Sync, stack: contextlib.AsyncExitStack, shapes: list[int]
) -> list[View]:
    """A view per entry of ``shapes`` (the row id its shape selects), all up to date;
    opened ``BATCH`` at a time (new shapes of one table are published one by one)."""
    views: list[View] = []
    for start in range(0, len(shapes), BATCH):
        opening = [
            stack.enter_async_context(
                sync.materialise("items", where="id = $1", params=[str(i)], timeout=120)
            )
            for i in shapes[start : start + BATCH]
        ]
        views.extend(await asyncio.gather(*opening))
    return views


async def measure(
    sync: pysync.Sync, stack: contextlib.AsyncExitStack, label: str, shapes: list[int]
) -> list[View]:
    gc.collect()
    rss_before = rss_bytes()
    traced_before = tracemalloc.get_traced_memory()[0]
    snapshot_before = tracemalloc.take_snapshot()
    started = time.perf_counter()
    views = await open_views(sync, stack, shapes)
    opened = time.perf_counter() - started
    await asyncio.sleep(0.5)  # every view waiting on its log: idle
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    growth = tracemalloc.take_snapshot().compare_to(snapshot_before, "lineno")
    rss = rss_bytes() - rss_before
    count = len(views)
    say(
        f"{label}: {count} views opened in {opened:.2f} s; per idle view "
        f"{traced / count / 1024:.1f} KiB traced, {rss / count / 1024:.1f} KiB RSS"
    )
    for stat in growth[:TOP_SITES]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        say(f"    {stat.size_diff / count:8.0f} B/view  {where}")
    return views


async def fan_out(conn: psycopg.Connection[Any], views: list[View]) -> None:
    with conn.transaction():
        conn.execute("UPDATE items SET n = n + 1 WHERE id = 1")
        txid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
    started = time.perf_counter()
    await asyncio.gather(*(view.wait_for_txid(txid, 60) for view in views))
    say(
        f"one update of row 1 applied by all {len(views)} views in "
        f"{(time.perf_counter() - started) * 1000:.0f} ms"
    )


async def run(count: int) -> None:
    with temporary_cluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DBNAME}")
        url = cluster.url(DBNAME)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, note text)")
            conn.execute(
                "INSERT INTO items SELECT g, 0, 'row ' || g FROM generate_series(1, %s) g",
                (count,),
            )
            async with (
                pysync.Sync(url, in_memory=True, env=False, max_shapes=count + 10) as sync,
                contextlib.AsyncExitStack() as stack,
            ):
                tracemalloc.start()
                shared = await measure(sync, stack, "one shape", [1] * count)
                await fan_out(conn, shared)
                await measure(sync, stack, "a shape each", list(range(1, count + 1)))
                tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", type=int, default=1_000)
    args = parser.parse_args()
    print(hot_path(), flush=True)
    asyncio.run(run(args.views))


if __name__ == "__main__":
    main()
