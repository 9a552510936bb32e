#!/usr/bin/env python
"""Fan-out benchmark: thousands of live long-poll clients of one shape, in other processes.

Run from the repository root::

    python benchmarks/fanout.py [--levels 1000,5000,10000] [--commits 100] [--interval 0.1]
                                [--workers 0,2] [--nginx 5000] [--client-procs 2]

Starts a private Postgres (``temporary_cluster``), a table ``items(id, seq, note)`` with
one row, and for each client count a fresh ``pysync serve`` as a subprocess
(``--workers N`` for each N in ``--workers``; 0 is the single-process server; with
``--asgi-server``, also the plain ASGI app of ``benchmarks/asgi_app.py`` under uvicorn,
granian or hypercorn, without pysync's live path). For each client count, the clients run
in ``--client-procs`` separate processes (uvloop, one keep-alive HTTP/1.1 connection
each, a minimal client on asyncio protocols): each syncs ``table=items`` from
``offset=-1`` and then loops on live requests. Once every client waits, a writer commits
``UPDATE items SET seq = k`` every ``--interval`` s (``--warmup`` unmeasured, then
``--commits`` measured). The latency of commit k at client c is from the writer's
``execute`` returning to client c having read the response carrying ``"seq":"k"``
(``time.perf_counter`` is CLOCK_MONOTONIC, shared by all processes); p50/p99 are over all
(commit, client) pairs. Clients that lag get several commits in one response, as real
clients do.

Server CPU per response: CPU of the server's processes (the supervisor, replicator and
workers, and nginx when in front) during the measured phase over live responses
delivered. Memory per waiting request: the server processes' RSS with every client
waiting, minus before the clients connected, over the client count (the shape exists;
includes each connection's state in the server).

``--nginx N``: also run N clients through nginx (``docker/nginx.conf``, rendered for
127.0.0.1 and a temporary directory; needs the ``nginx`` binary) in front of the
single-process server, with commits every ``--interval`` and then every
``--nginx-interval`` s, and count origin requests per commit from pysync's ``/metrics``.

``--restart N``: N clients wait, the server stops (SIGTERM) and starts again on the same
storage and port; the clients reconnect with their offsets after a random pause of up to
1 s. Reported: the time until all wait again, 409s, 503s, snapshots taken, server CPU,
and the next commit's p99.

The machine has 2 cores shared by server, clients, writer and Postgres: client CPU is
taken from the server, so at 10,000 clients the figures measure the whole machine.

The parts: ``fanout_server.py`` (the server under test in a subprocess, its processes'
CPU and memory), ``fanout_clients.py`` (the clients, in child processes driven through a
pipe); this file runs the levels, nginx and the restart, and reports.

The last line printed is::

    fanout 1000 clients: p50 X.X ms p99 Y.Y ms; 10000 clients p99 Z ms; W.W KiB per waiting request
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from fanout_clients import ask, spawn_clients, stop_clients
from fanout_server import (
    ROOT,
    Server,
    cpu_seconds,
    descendants,
    http_get,
    metric,
    origin_live_responses,
    rss_kib,
)
from hot_path import hot_path
from pysync.postgres.cluster import temporary_cluster

DBNAME = "bench"
sys.path.insert(0, str(ROOT / "tests"))
from latency import percentile, write  # noqa: E402  - the same writer and percentiles
from nginx_process import Nginx  # noqa: E402  - the test's nginx, docker/nginx.conf rendered


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Result:
    label: str
    clients: int
    p50: float
    p99: float
    max: float
    delivered: int
    expected: int
    responses: int
    server_cpu: float
    kib_per_waiting: float
    origin_per_commit: float | None = None


@dataclass
class Restart:
    clients: int
    seconds: float
    """From the new server's start until every client waits again."""
    ready_seconds: float
    """Of which the server's own start (until /v1/health answers)."""
    refetches: int
    retries: int
    snapshots: int
    server_cpu: float
    p99: float
    delivered: int


def run_restart(
    n: int, url: str, storage: Path, tmp: Path, seq: list[int], args: argparse.Namespace
) -> Restart:
    """``n`` clients waiting; the server stops (SIGTERM) and starts again on the same
    storage and port; the clients reconnect with their offsets, each after a random
    pause of up to 1 s (a herd: the TS client retries about as fast)."""
    server = Server(url, storage, tmp / "restart-1.log", 0)
    try:
        server.wait_healthy()
        http_get(server.port, "/v1/shape?table=items&offset=-1")
        children = spawn_clients("restart", n, server.port, args)
    except BaseException:
        server.stop()
        raise
    try:
        ask(children, "reconnect")
        server.stop()
        started = time.perf_counter()
        server = Server(url, storage, tmp / "restart-2.log", 0, port=server.port)
        server.wait_healthy(timeout=120)
        ready = time.perf_counter() - started
        deadline = time.monotonic() + 120
        while True:
            herd = ask(children, "herd")
            if sum(int(h[0]) for h in herd) >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"restart: only {sum(int(h[0]) for h in herd)} of {n} waiting again"
                )
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(server.pids())
        snapshots = int(metric(server.port, "pysync_snapshot_duration_seconds_count"))
        for _, pipe in children:
            pipe.send(("measure", seq[0]))
            pipe.recv()
        commits: dict[int, float] = {}
        write(url, seq[0], 1, args.interval, commits)
        deadline = time.monotonic() + 30
        while (
            min(int(p[0]) for p in ask(children, "progress")) < seq[0]
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        latencies = []
        for _, pipe in children:
            pipe.send(("results",))
            raw_seqs, raw_times, _, _ = pipe.recv()
            seqs, times = array("q"), array("d")
            seqs.frombytes(raw_seqs)
            times.frombytes(raw_times)
            latencies += [
                (t - commits[q]) * 1000 for q, t in zip(seqs, times, strict=True) if q in commits
            ]
        seq[0] += 1
        return Restart(
            clients=n,
            seconds=seconds,
            ready_seconds=ready,
            refetches=sum(int(h[1]) for h in herd),
            retries=sum(int(h[2]) for h in herd),
            snapshots=snapshots,
            server_cpu=cpu,
            p99=percentile(latencies, 99),
            delivered=len(latencies),
        )
    finally:
        stop_clients(children)
        server.stop()


def run_level(
    label: str,
    n: int,
    port: int,
    server_pids: Callable[[], list[int]],
    url: str,
    seq: list[int],
    args: argparse.Namespace,
    origin_port: int | None = None,
) -> Result:
    http_get(port, "/v1/shape?table=items&offset=-1")  # the shape exists before the clients come
    time.sleep(0.5)
    rss_before = rss_kib(server_pids())
    children = spawn_clients(label, n, port, args)
    try:
        time.sleep(1.0)
        pids = server_pids()
        rss_waiting = rss_kib(pids)
        commits: dict[int, float] = {}
        write(url, seq[0], args.warmup, args.interval, commits)
        seq[0] += args.warmup
        time.sleep(0.5)
        for _, pipe in children:
            pipe.send(("measure", seq[0]))
            pipe.recv()
        origin0 = origin_live_responses(origin_port) if origin_port else 0
        cpu0 = cpu_seconds(pids)
        first = seq[0]
        write(url, first, args.commits, args.interval, commits)
        last = first + args.commits - 1
        seq[0] += args.commits
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            progress = []
            for _, pipe in children:
                pipe.send(("progress",))
                progress.append(pipe.recv())
            if any(p[2] for p in progress):
                raise RuntimeError(f"{label}: {[p[2] for p in progress]}")
            if all(p[0] >= last for p in progress):
                break
            time.sleep(0.02)
        cpu = cpu_seconds(pids) - cpu0
        origin = origin_live_responses(origin_port) - origin0 if origin_port else 0
        latencies: list[float] = []
        responses = 0
        for _, pipe in children:
            pipe.send(("results",))
            raw_seqs, raw_times, count, errors = pipe.recv()
            responses += count
            seqs, times = array("q"), array("d")
            seqs.frombytes(raw_seqs)
            times.frombytes(raw_times)
            latencies += [
                (t - commits[s]) * 1000 for s, t in zip(seqs, times, strict=True) if s in commits
            ]
    finally:
        stop_clients(children)
    return Result(
        label=label,
        clients=n,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        max=max(latencies, default=float("nan")),
        delivered=len(latencies),
        expected=n * args.commits,
        responses=responses,
        server_cpu=cpu,
        kib_per_waiting=(rss_waiting - rss_before) / n,
        origin_per_commit=origin / args.commits if origin_port else None,
    )


def report(r: Result) -> None:
    per = r.server_cpu * 1e6 / r.responses if r.responses else float("nan")
    line = (
        f"{r.label:>10} {r.clients:>6} clients: p50 {r.p50:7.1f} ms  p99 {r.p99:7.1f} ms  max {r.max:7.1f} ms"
        f"  delivered {r.delivered}/{r.expected}  {r.responses} responses, server CPU {per:.0f} us/response"
        f"  {r.kib_per_waiting:.1f} KiB/waiting"
    )
    if r.origin_per_commit is not None:
        line += f"  origin requests per commit {r.origin_per_commit:.2f}"
    say(line)


def joined(*sources: Callable[[], list[int]]) -> Callable[[], list[int]]:
    return lambda: [pid for source in sources for pid in source()]


def bench(args: argparse.Namespace) -> list[Result]:
    levels = [int(x) for x in args.levels.split(",") if x]
    worker_counts = [int(x) for x in args.workers.split(",") if x]
    tmp = Path(tempfile.mkdtemp(prefix="pysync-fanout-"))
    results: list[Result] = []
    try:
        with temporary_cluster() as cluster:
            with psycopg.connect(cluster.url(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {DBNAME}")
            url = cluster.url(DBNAME)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE items (id int PRIMARY KEY, seq bigint NOT NULL, note text)"
                )
                conn.execute("INSERT INTO items VALUES (1, 0, 'fanout benchmark row')")
            seq = [1]
            runs = [(f"asgi:{name}", 0, name) for name in args.asgi_server.split(",") if name]
            runs += [("single" if w == 0 else f"workers={w}", w, None) for w in worker_counts]
            count = 0
            for label, workers, asgi in runs:
                for n in levels:
                    # A fresh server per level: memory and CPU are that level's alone.
                    count += 1
                    server = Server(
                        url,
                        tmp / f"storage-{count}",
                        tmp / f"server-{count}.log",
                        workers,
                        asgi=asgi,
                    )
                    try:
                        server.wait_healthy()
                        result = run_level(label, n, server.port, server.pids, url, seq, args)
                    finally:
                        server.stop()
                    results.append(result)
                    report(result)
            if args.nginx:
                for interval in (args.interval, args.nginx_interval):
                    # Fresh nginx and server per run: a steady population of clients. (Clients
                    # that join later, on URLs whose cached responses expired, start groups
                    # of their own: each origin response picks a new jittered cursor.)
                    server = Server(
                        url,
                        tmp / f"storage-nginx-{interval}",
                        tmp / f"server-nginx-{interval}.log",
                        0,
                    )
                    try:
                        server.wait_healthy()
                        nginx = Nginx(server.port, tmp / f"nginx-{interval}")
                        try:
                            server.wait_healthy(nginx.port)
                            # The slow run needs fewer commits to show the same thing.
                            commits = (
                                args.commits if interval == args.interval else min(args.commits, 30)
                            )
                            nginx_args = argparse.Namespace(
                                **{**vars(args), "interval": interval, "commits": commits}
                            )
                            result = run_level(
                                f"nginx@{interval * 1000:.0f}ms",
                                args.nginx,
                                nginx.port,
                                joined(server.pids, functools.partial(descendants, nginx.pid)),
                                url,
                                seq,
                                nginx_args,
                                origin_port=server.port,
                            )
                            results.append(result)
                            report(result)
                        finally:
                            nginx.stop()
                    finally:
                        server.stop()
            if args.restart:
                r = run_restart(args.restart, url, tmp / "storage-restart", tmp, seq, args)
                say(
                    f"   restart {r.clients:>6} clients: all waiting again {r.seconds:.1f} s after the restart "
                    f"(server up in {r.ready_seconds:.1f} s); {r.refetches} refetches (409), {r.retries} "
                    f"retries (503), {r.snapshots} snapshots; server CPU {r.server_cpu:.1f} s in all; "
                    f"next commit p99 {r.p99:.0f} ms ({r.delivered}/{r.clients} delivered)"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1000,5000,10000", help="client counts")
    parser.add_argument(
        "--workers", default="0,2", help="--workers values to run (0: single process)"
    )
    parser.add_argument("--nginx", type=int, default=0, help="clients through nginx (0: skip)")
    parser.add_argument(
        "--asgi-server",
        default="",
        help="also run the plain ASGI app under these servers "
        "(uvicorn,granian,hypercorn) at each level",
    )
    parser.add_argument(
        "--nginx-interval",
        type=float,
        default=1.0,
        help="seconds between commits of the second nginx run (the first uses --interval)",
    )
    parser.add_argument(
        "--restart", type=int, default=0, help="clients through a server restart (0: skip)"
    )
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--client-procs", type=int, default=2)
    args = parser.parse_args()
    print(hot_path(), flush=True)
    say(
        f"fanout benchmark, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores shared "
        f"by server, clients, writer and Postgres; load average {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    results = bench(args)
    say(f"total {time.perf_counter() - started:.0f} s")
    single = {r.clients: r for r in results if r.label == "single"}
    first = single.get(1000) or (results[0] if results else None)
    big = single.get(10000)
    if first is not None:
        largest = single[max(single)] if single else first
        say(
            f"fanout 1000 clients: p50 {first.p50:.1f} ms p99 {first.p99:.1f} ms; "
            f"10000 clients p99 {big.p99 if big else float('nan'):.0f} ms; "
            f"{largest.kib_per_waiting:.1f} KiB per waiting request"
        )


if __name__ == "__main__":
    main()
