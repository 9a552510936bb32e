#!/usr/bin/env python
"""Micro-benchmark: the CPU of taking one live long-poll on ``pysync serve``'s live path.

Run from the repository root::

    python benchmarks/live_take.py [--shapes 200] [--rounds 20] [--profile]

Starts a private Postgres (``temporary_cluster``) and an in-process engine, a table
``items(id int primary key, n int)`` with ``--shapes`` rows and one shape per row, as
``pysync bench`` spells them (``where=id = $1&params[1]=<id>``), each synced through the
ASGI app. Then, ``--rounds`` times, each shape gets one live request
(``table=..&where=..&params[1]=..&offset=..&handle=..&live=true&cursor=..``) through
``LivePolls.take`` (nothing new: every one parks) and every parked request is dropped
again (a client leaving): the per-request time is that of ``take`` plus ``drop``, as CPU
time of the thread (``time.thread_time``: on a loaded machine, wall time measures the
other processes).
``--profile`` prints cProfile's top functions by cumulative time.

The last line printed is ``live take: X.X us per request (best of N rounds; median Y.Y)``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

from hot_path import hot_path
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.http.parking import LivePolls
from pysync.postgres.cluster import temporary_cluster


class Recorder:
    """The connection side of the live path: records, sends nothing."""

    def __init__(self) -> None:
        self.parked: Any = None
        self.sent: list[Any] = []

    def respond(self, response: Any) -> None:
        self.sent.append(response)

    def replay(self, query: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        raise AssertionError("replayed")


async def run(url: str, shapes: int, rounds: int, profile: bool) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        db.execute("INSERT INTO items SELECT g, 0 FROM generate_series(1, %s) g", (shapes,))
    engine = Engine(url, flush_interval=0.02)
    await engine.start()
    try:
        api = ShapeAPI(engine, long_poll_timeout=20.0)
        polls = LivePolls(api)
        queries: list[bytes] = []
        transport = httpx.ASGITransport(api.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for i in range(1, shapes + 1):
                shape = {"table": "items", "where": "id = $1", "params[1]": str(i)}
                r = await http.get("/v1/shape", params={**shape, "offset": "-1"})
                live = {
                    **shape,
                    "offset": r.headers["electric-offset"],
                    "handle": r.headers["electric-handle"],
                    "live": "true",
                    "cursor": "12345",
                }
                queries.append(urlencode(live).encode())
        headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
        conns = [Recorder() for _ in queries]
        profiler = cProfile.Profile() if profile else None
        times: list[float] = []
        for _ in range(rounds):
            if profiler is not None:
                profiler.enable()
            started = time.thread_time()
            for conn, query in zip(conns, queries, strict=True):
                assert polls.take(conn, query, headers)
            for conn in conns:
                polls.drop(conn.parked)
            elapsed = time.thread_time() - started
            if profiler is not None:
                profiler.disable()
            times.append(elapsed / len(queries) * 1e6)
            await asyncio.sleep(0)
        assert not any(c.sent for c in conns)
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
        best, median = min(times), statistics.median(times)
        print(
            f"live take: {best:.1f} us per request (best of {rounds} rounds; median {median:.1f})"
        )
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(hot_path(), flush=True)
    with temporary_cluster() as cluster:
        asyncio.run(run(cluster.url(), args.shapes, args.rounds, args.profile))


if __name__ == "__main__":
    main()
