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

The last line printed is::

    fanout 1000 clients: p50 X.X ms p99 Y.Y ms; 10000 clients p99 Z ms; W.W KiB per waiting request
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg

from pysync.postgres.cluster import free_port, temporary_cluster

DBNAME = "bench"
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, str(ROOT / "tests"))
from latency import percentile, write  # noqa: E402  - the same writer and percentiles
from nginx_process import Nginx  # noqa: E402  - the test's nginx, docker/nginx.conf rendered

SEQ = re.compile(rb'"seq":"(\d+)"')
HEADER = re.compile(
    rb"\r\n(electric-offset|electric-handle|electric-cursor|content-length|"
    rb"transfer-encoding|electric-up-to-date): ?([^\r]*)",
    re.IGNORECASE,
)


def say(text: str = "") -> None:
    print(text, flush=True)


# -- processes --------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    found = [pid]
    for parent in found:
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    found += [int(p) for p in children.read().split()]
            except OSError:
                pass
    return found


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


ASGI_SERVERS = {
    # The same ASGI app (benchmarks/asgi_app.py) under each server, one process each.
    "uvicorn": [
        "-m",
        "uvicorn",
        "--host",
        HOST,
        "--port",
        "{port}",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
        "asgi_app:app",
    ],
    # granian admits 1,024 connections by default: raised to hold every client.
    "granian": [
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        HOST,
        "--port",
        "{port}",
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--backlog",
        "16384",
        "--backpressure",
        "16384",
        "--log-level",
        "warning",
        "asgi_app:app",
    ],
    "hypercorn": [
        "-m",
        "hypercorn",
        "--bind",
        f"{HOST}:{{port}}",
        "--worker-class",
        "uvloop",
        "--log-level",
        "warning",
        "asgi_app:app",
    ],
}


class Server:
    """``pysync serve`` (with ``--workers``), or the plain ASGI app under another ASGI
    server (``asgi``), in a subprocess."""

    def __init__(
        self,
        database_url: str,
        storage: Path,
        log: Path,
        workers: int,
        port: int | None = None,
        asgi: str | None = None,
    ) -> None:
        self.port = port or free_port()
        env = dict(os.environ)
        if asgi is not None:
            command = [sys.executable, *(a.format(port=self.port) for a in ASGI_SERVERS[asgi])]
            env.update(PYSYNC_BENCH_DATABASE_URL=database_url, PYSYNC_BENCH_STORAGE=str(storage))
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(ROOT / "benchmarks"), env.get("PYTHONPATH")])
            )
        else:
            command = [
                sys.executable,
                "-m",
                "pysync.cli",
                "serve",
                "--database-url",
                database_url,
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--storage-dir",
                str(storage),
                "--long-poll-timeout",
                "20",
                "--log-level",
                "warning",
            ]
            if workers:
                command += ["--workers", str(workers)]
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env
        )

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def wait_healthy(self, port: int | None = None, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pysync serve exited ({self.proc.returncode}):\n{self.tail()}")
            if http_get(port or self.port, "/v1/health")[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"pysync serve not healthy after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log_file.close()


def http_get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body
    except OSError:
        return 0, b""


def metric(port: int, name: str) -> float:
    """A sample of the server's ``/metrics`` (0 when absent)."""
    _, body = http_get(port, "/metrics")
    match = re.search(re.escape(name.encode()) + rb" ([0-9.e+]+)", body)
    return float(match.group(1)) if match else 0.0


def origin_live_responses(port: int) -> int:
    """``pysync_http_responses_total{status="200"}`` of the origin."""
    return int(metric(port, 'pysync_http_responses_total{status="200"}'))


# -- the clients (in child processes) ---------------------------------------------------


class Client(asyncio.Protocol):
    """One connection: sync the shape, then live requests, each sent when the previous
    response is read."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.buffer = bytearray()
        self.offset = "-1"
        self.handle = ""
        self.cursor = ""
        self.live = False
        self.transport: asyncio.Transport | None = None
        self.outstanding = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.buffer.clear()
        self.request()

    def request(self) -> None:
        path = f"/v1/shape?table=items&offset={self.offset}"
        if self.handle:
            path += f"&handle={self.handle}"
        if self.live:
            path += "&live=true"
            if self.cursor:
                path += f"&cursor={self.cursor}"
        assert self.transport is not None
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        self.outstanding = True
        if self.live:
            self.shared.waiting += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[: end + 2])
            headers = {m.group(1).lower(): m.group(2) for m in HEADER.finditer(head)}
            start = end + 4
            if b"content-length" in headers:
                stop = start + int(headers[b"content-length"])
                if len(self.buffer) < stop:
                    return
                body = bytes(self.buffer[start:stop])
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body, stop = self._chunked(start)
                if stop < 0:
                    return
            else:
                body, stop = b"", start
            del self.buffer[:stop]
            self.response(int(head[9:12]), headers, body)

    def _chunked(self, position: int) -> tuple[bytes, int]:
        parts: list[bytes] = []
        while True:
            line_end = self.buffer.find(b"\r\n", position)
            if line_end < 0:
                return b"", -1
            size = int(bytes(self.buffer[position:line_end]).split(b";")[0], 16)
            chunk_start = line_end + 2
            if len(self.buffer) < chunk_start + size + 2:
                return b"", -1
            if size == 0:
                return b"".join(parts), chunk_start + 2
            parts.append(bytes(self.buffer[chunk_start : chunk_start + size]))
            position = chunk_start + size + 2

    def response(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        shared = self.shared
        now = time.perf_counter()
        self.outstanding = False
        if status == 409:
            # The shape is gone: start again from the handle the 409 names.
            if self.live:
                shared.waiting -= 1
            shared.refetches += 1
            self.offset, self.live, self.cursor = "-1", False, ""
            self.handle = headers.get(b"electric-handle", b"").decode()
            self.request()
            return
        if status == 503:
            # Admission control (or a restart): retry later, as the TS client does.
            if self.live:
                shared.waiting -= 1
            shared.retries += 1
            asyncio.get_running_loop().call_later(0.2, self.request)
            return
        if status != 200:
            shared.errors.append(f"HTTP {status} {body[:200]!r}")
            return
        self.offset = headers[b"electric-offset"].decode()
        self.handle = headers[b"electric-handle"].decode()
        if self.live:
            shared.waiting -= 1
            shared.responses += 1
            self.cursor = headers[b"electric-cursor"].decode()
            for match in SEQ.finditer(body):
                seq = int(match.group(1))
                if seq >= shared.measure_from:
                    shared.seqs.append(seq)
                    shared.times.append(now)
                if seq > shared.last_seq[self]:
                    shared.last_seq[self] = seq
        elif b"electric-up-to-date" in headers:
            self.live = True
            shared.synced += 1
            shared.last_seq[self] = 0
        self.request()

    def connection_lost(self, exc: Exception | None) -> None:
        shared = self.shared
        if shared.stopping:
            return
        if not shared.reconnect:
            shared.errors.append(f"connection lost: {exc}")
            return
        if self.outstanding and self.live:
            shared.waiting -= 1
        self.outstanding = False
        shared.reconnects += 1
        self.reconnect()

    def reconnect(self) -> None:
        """As a client whose server restarts: again after a random pause (up to 1 s)."""
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: self, HOST, self.shared.port)
            except OSError:
                self.shared.refused += 1
                self.reconnect()

        loop.call_later(random.uniform(0.0, 1.0), lambda: loop.create_task(connect()))


@dataclass
class Shared:
    measure_from: int = 1 << 62
    synced: int = 0
    waiting: int = 0
    responses: int = 0
    retries: int = 0
    refetches: int = 0
    reconnects: int = 0
    refused: int = 0
    port: int = 0
    reconnect: bool = False
    stopping: bool = False

    def __post_init__(self) -> None:
        self.seqs = array("q")
        self.times = array("d")
        self.errors: list[str] = []
        self.last_seq: dict[Client, int] = {}


def client_main(pipe: Connection, port: int, count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.run(_clients(pipe, port, count))
    except ImportError:
        asyncio.run(_clients(pipe, port, count))


async def _clients(pipe: Connection, port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    shared = Shared(port=port)
    transports = []
    for start in range(0, count, 100):
        for _ in range(start, min(count, start + 100)):
            for attempt in range(20):
                try:
                    transport, _ = await loop.create_connection(lambda: Client(shared), HOST, port)
                    break
                except OSError:  # a full listen backlog: as a client would, again a bit later
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.5)
            transports.append(transport)
        await asyncio.sleep(0.02)
    deadline = time.monotonic() + 120
    while (
        (shared.synced < count or shared.waiting < count)
        and not shared.errors
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    pipe.send(("ready", shared.synced, shared.waiting, shared.errors[:3]))
    while True:
        while not pipe.poll():
            await asyncio.sleep(0.01)
        command, *args = pipe.recv()
        if command == "measure":
            shared.measure_from = args[0]
            del shared.seqs[:], shared.times[:]
            shared.responses = 0
            pipe.send(("ok",))
        elif command == "reconnect":
            shared.reconnect = True
            pipe.send(("ok",))
        elif command == "herd":
            pipe.send(
                (
                    shared.waiting,
                    shared.refetches,
                    shared.retries,
                    shared.refused,
                    shared.errors[:3],
                )
            )
        elif command == "progress":
            pipe.send(
                (min(shared.last_seq.values(), default=0), shared.responses, shared.errors[:3])
            )
        elif command == "results":
            pipe.send(
                (shared.seqs.tobytes(), shared.times.tobytes(), shared.responses, shared.errors[:3])
            )
        elif command == "stop":
            shared.stopping = True
            for transport in transports:
                transport.close()
            await asyncio.sleep(0.2)
            pipe.send(("stopped",))
            return


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


Children = list[tuple[multiprocessing.process.BaseProcess, Connection]]


def spawn_clients(label: str, n: int, port: int, args: argparse.Namespace) -> Children:
    """``n`` clients in ``--client-procs`` processes, each synced and waiting."""
    procs = max(1, min(args.client_procs, n // 100 or 1))
    ctx = multiprocessing.get_context("spawn")
    children: Children = []
    for k in range(procs):
        parent, child = ctx.Pipe()
        share = n // procs + (1 if k < n % procs else 0)
        proc = ctx.Process(target=client_main, args=(child, port, share), daemon=True)
        proc.start()
        children.append((proc, parent))
    for _, pipe in children:
        if not pipe.poll(180):
            stop_clients(children)
            raise RuntimeError(f"{label}: clients not ready")
        _, synced, waiting, errors = pipe.recv()
        if errors:
            stop_clients(children)
            raise RuntimeError(f"{label}: {errors}")
    return children


def stop_clients(children: Children) -> None:
    for proc, pipe in children:
        try:
            pipe.send(("stop",))
            if pipe.poll(10):
                pipe.recv()
        except (OSError, EOFError):
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    time.sleep(0.5)


def ask(children: Children, *command: object) -> list[Any]:
    answers = []
    for _, pipe in children:
        pipe.send(command)
        answers.append(pipe.recv())
    return answers


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
