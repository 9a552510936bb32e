#!/usr/bin/env python
"""Latency benchmark: commit-to-client latency of live long-poll shape requests.

Run from the repository root::

    python benchmarks/latency.py [--levels 1,100,1000] [--commits 100] [--interval 0.1]
                                 [--profile DIR]

Starts a private Postgres (``temporary_cluster``) and ``pysync serve`` as a
*subprocess* (``python -m pysync.cli serve --database-url ... --port <free>
--storage-dir <tmp>``), so the clients' CPU is not spent in the server's process. Server,
clients, writer and Postgres share the machine's cores (2 on the reference box).

A table ``items(id int primary key, seq bigint, note text)`` holds one row. For each
client count N (1, 100, 1,000), N clients each open one keep-alive HTTP/1.1 connection,
sync the shape ``table=items`` (``offset=-1``, following ``electric-offset`` /
``electric-handle`` until ``electric-up-to-date``), then loop on live requests
(``live=true&cursor=<electric-cursor>&offset=..&handle=..``), re-issuing the next one as
soon as a response arrives. The clients are a minimal HTTP/1.1 client over asyncio
streams (httpx costs several times more client CPU per request, which on 2 cores is
taken from the server). Once every client has a live request outstanding, one writer
thread commits single-row transactions ``UPDATE items SET seq = <k> WHERE id = 1``
(autocommit) every ``--interval`` seconds, ``--warmup`` unmeasured ones then
``--commits`` measured ones. The latency of commit k at client c is the time from the
writer's ``execute`` returning (``time.perf_counter`` in this process) to client c having
read the whole response that carries ``"seq":"k"`` (a response that batches several
commits counts for each). p50/p95/p99 over all (commit, client) pairs are reported.

CPU: server CPU (``/proc/<pid>/stat``) and this process's CPU (clients + writer)
during each measured phase, per delivered response, show where the time goes.

Memory per waiting request: server RSS (``VmRSS``) with 1,000 live requests waiting
(after 1 s of quiet) minus its RSS just before those clients connected, divided by 1,000
(includes the connection's own state; the shape already exists).

``--profile DIR`` attaches ``py-spy record`` to the server for each measured phase
(``DIR/server-<N>.speedscope.json``); latencies are then inflated by sampling.

The last line printed is::

    latency 100 clients: p50 X.X ms p99 Y.Y ms
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from hot_path import hot_path
from pysync.postgres.cluster import free_port, temporary_cluster

DBNAME = "bench"
HOST = "127.0.0.1"
SEQ = re.compile(rb'"seq":"(\d+)"')
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text: str = "") -> None:
    print(text, flush=True)


# -- the server -------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]
    except OSError:
        return []


class Server:
    """``pysync serve`` in a subprocess."""

    def __init__(
        self, database_url: str, storage: Path, log: Path, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
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
            *extra,
        ]
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pysync serve exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                conn = await Conn.open(self.port)
                try:
                    status, _, _ = await conn.get("/v1/health")
                finally:
                    conn.close()
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"pysync serve not healthy after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            # uvicorn shuts down on SIGINT but first waits for open long-polls (up to the
            # long-poll timeout, even after their clients left); a second SIGINT forces it.
            for sig, wait in ((signal.SIGINT, 3), (signal.SIGINT, 5), (signal.SIGKILL, 10)):
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log_file.close()


class Profiler:
    """``py-spy record`` attached to the server for one measured phase."""

    def __init__(self, pid: int, out: Path) -> None:
        self.proc = subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(pid),
                "--rate",
                "250",
                "--idle",
                "--format",
                "speedscope",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- a minimal HTTP/1.1 client ----------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection; GET only, Content-Length or chunked bodies."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = f"{HOST}:{port}".encode()

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 22)
        return cls(reader, writer, port)

    def send(self, path: str) -> None:
        self.writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + self.host + b"\r\n\r\n"
        )

    async def receive(self) -> tuple[int, dict[bytes, bytes], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length")
        if length is not None:
            body = await self.reader.readexactly(int(length))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts)
        else:
            body = b""
        return status, headers, body

    async def get(self, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        self.send(path)
        return await self.receive()

    def close(self) -> None:
        self.writer.close()


# -- clients ----------------------------------------------------------------------------


@dataclass
class Level:
    clients: int
    synced: int = 0
    waiting: int = 0
    responses: int = 0
    last_seq: list[int] = field(default_factory=list)
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    all_synced: asyncio.Event = field(default_factory=asyncio.Event)


async def client(index: int, port: int, level: Level, measure_from: list[int]) -> None:
    conn = await Conn.open(port)
    try:
        offset, handle = "-1", ""
        while True:
            path = f"/v1/shape?table=items&offset={offset}" + (
                f"&handle={handle}" if handle else ""
            )
            status, headers, _ = await conn.get(path)
            if status != 200:
                raise RuntimeError(f"sync: HTTP {status}")
            offset = headers[b"electric-offset"].decode()
            handle = headers[b"electric-handle"].decode()
            if b"electric-up-to-date" in headers:
                break
        level.synced += 1
        if level.synced == level.clients:
            level.all_synced.set()
        cursor = ""
        arrivals = level.arrivals
        while True:
            conn.send(
                f"/v1/shape?table=items&live=true&offset={offset}&handle={handle}"
                + (f"&cursor={cursor}" if cursor else "")
            )
            level.waiting += 1
            status, headers, body = await conn.receive()
            now = time.perf_counter()
            level.waiting -= 1
            level.responses += 1
            if status != 200:
                raise RuntimeError(f"live: HTTP {status} {body[:200]!r}")
            offset = headers[b"electric-offset"].decode()
            cursor = headers[b"electric-cursor"].decode()
            for match in SEQ.finditer(body):
                seq = int(match.group(1))
                if seq >= measure_from[0]:
                    arrivals.append((seq, now))
                if seq > level.last_seq[index]:
                    level.last_seq[index] = seq
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported by the level
        level.errors.append(f"client {index}: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


# -- the writer -------------------------------------------------------------------------


def write(url: str, first_seq: int, count: int, interval: float, commits: dict[int, float]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        start = time.perf_counter()
        for i in range(count):
            seq = first_seq + i
            conn.execute("UPDATE items SET seq = %s WHERE id = 1", (seq,), prepare=True)
            commits[seq] = time.perf_counter()
            pause = start + (i + 1) * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Result:
    clients: int
    p50: float
    p95: float
    p99: float
    max: float
    samples: int
    expected: int
    server_cpu: float
    client_cpu: float
    responses: int
    sync_seconds: float
    seconds: float
    rss_idle: int = 0
    rss_waiting: int = 0


async def run_level(
    n: int, server: Server, server_pid: int, url: str, seq: list[int], args: argparse.Namespace
) -> Result:
    level = Level(n, last_seq=[0] * n)
    measure_from = [1 << 62]
    rss_idle = rss_kib(server_pid)
    profiler: Profiler | None = None
    began = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    # Connect in batches so the listen backlog is never overrun.
    for start in range(0, n, 200):
        for i in range(start, min(n, start + 200)):
            tasks.append(asyncio.create_task(client(i, server.port, level, measure_from)))
        await asyncio.sleep(0.05)
    try:
        try:
            await asyncio.wait_for(level.all_synced.wait(), 60)
        except TimeoutError:
            raise RuntimeError(
                f"{n} clients: only {level.synced} synced; {level.errors[:3]}"
            ) from None
        sync_seconds = time.perf_counter() - began
        deadline = time.monotonic() + 20
        while level.waiting < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # let the server take every live request
        rss_waiting = rss_kib(server_pid)
        if level.errors:
            raise RuntimeError("; ".join(level.errors[:3]))

        commits: dict[int, float] = {}
        # Warm-up commits: not measured.
        await asyncio.to_thread(write, url, seq[0], args.warmup, args.interval, commits)
        seq[0] += args.warmup
        await asyncio.sleep(0.3)
        measure_from[0] = seq[0]
        level.arrivals.clear()
        responses0 = level.responses
        cpu_server0, cpu_client0 = cpu_seconds(server_pid), time.process_time()
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler = Profiler(server_pid, args.profile / f"server-{n}.speedscope.json")
            await asyncio.sleep(0.5)
            cpu_server0 = cpu_seconds(server_pid)
        t0 = time.perf_counter()
        writer = asyncio.create_task(
            asyncio.to_thread(write, url, seq[0], args.commits, args.interval, commits)
        )
        await writer
        last = seq[0] + args.commits - 1
        seq[0] += args.commits
        deadline = time.monotonic() + 15
        while min(level.last_seq) < last and time.monotonic() < deadline and not level.errors:
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - t0
        cpu_server = cpu_seconds(server_pid) - cpu_server0
        cpu_client = time.process_time() - cpu_client0
        if profiler is not None:
            profiler.stop()
        responses = level.responses - responses0
        if level.errors:
            raise RuntimeError("; ".join(level.errors[:3]))
    finally:
        if profiler is not None:
            profiler.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.3)

    latencies = [(t - commits[s]) * 1000 for s, t in level.arrivals if s in commits]
    return Result(
        clients=n,
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        p99=percentile(latencies, 99),
        max=max(latencies, default=float("nan")),
        samples=len(latencies),
        expected=n * args.commits,
        server_cpu=cpu_server,
        client_cpu=cpu_client,
        responses=responses,
        sync_seconds=sync_seconds,
        seconds=seconds,
        rss_idle=rss_idle,
        rss_waiting=rss_waiting,
    )


# -- main -------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> list[Result]:
    levels = [int(x) for x in args.levels.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="pysync-latency-"))
    results: list[Result] = []
    server: Server | None = None
    try:
        with temporary_cluster() as cluster:
            with psycopg.connect(cluster.url(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {DBNAME}")
            url = cluster.url(DBNAME)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE items (id int PRIMARY KEY, seq bigint NOT NULL, note text)"
                )
                conn.execute("INSERT INTO items VALUES (1, 0, 'latency benchmark row')")
            server = Server(url, tmp / "storage", tmp / "server.log")
            await server.wait_healthy()
            server_pid = server.pid
            say(f"pysync serve pid {server_pid} on port {server.port}")
            seq = [1]
            try:
                for n in levels:
                    result = await run_level(n, server, server_pid, url, seq, args)
                    results.append(result)
                    report(result, args)
            finally:
                stop_server(server)  # before Postgres goes away
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def stop_server(server: Server) -> None:
    if server.proc.poll() is not None and server._log_file.closed:
        return
    server.stop()
    if server.proc.returncode not in (0, 1, -signal.SIGINT):
        say(f"(server exit code {server.proc.returncode}; log tail:)\n{server.tail(10)}")


def report(r: Result, args: argparse.Namespace) -> None:
    say(
        f"\n{r.clients} client(s): synced in {r.sync_seconds:.2f} s; "
        f"{args.commits} commits every {args.interval * 1000:.0f} ms"
    )
    say(
        f"  latency  p50 {r.p50:.1f} ms  p95 {r.p95:.1f} ms  p99 {r.p99:.1f} ms  max {r.max:.1f} ms"
        f"  ({r.samples}/{r.expected} deliveries)"
    )
    per = 1e6 / r.responses if r.responses else float("nan")
    say(
        f"  {r.responses} live responses in {r.seconds:.1f} s ({r.responses / r.seconds:.0f}/s); "
        f"CPU server {r.server_cpu:.2f} s ({r.server_cpu * per:.0f} us/response), "
        f"clients+writer {r.client_cpu:.2f} s ({r.client_cpu * per:.0f} us/response)"
    )
    if r.clients >= 100:
        per_req = (r.rss_waiting - r.rss_idle) * 1024 / r.clients
        say(
            f"  server RSS {r.rss_idle / 1024:.1f} MiB idle -> {r.rss_waiting / 1024:.1f} MiB with "
            f"{r.clients} waiting: {per_req / 1024:.1f} KiB per waiting request"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,100,1000", help="client counts (default 1,100,1000)")
    parser.add_argument("--commits", type=int, default=100, help="measured commits per level")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured commits per level")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between commits")
    parser.add_argument(
        "--profile",
        type=Path,
        help="attach py-spy record to the server while measuring; output here",
    )
    args = parser.parse_args()
    print(hot_path(), flush=True)

    say(
        f"latency benchmark, {datetime.date.today()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores shared by server, clients, writer "
        f"and Postgres"
    )
    say("server: pysync serve subprocess; clients: asyncio-streams HTTP/1.1, one connection each")
    started = time.perf_counter()
    results = asyncio.run(bench(args))
    say(f"\ntotal {time.perf_counter() - started:.0f} s")
    by_n = {r.clients: r for r in results}
    if 1000 in by_n:
        r = by_n[1000]
        say(
            f"memory per waiting request (1,000 clients): "
            f"{(r.rss_waiting - r.rss_idle) / 1000:.1f} KiB"
        )
    if 100 in by_n:
        r = by_n[100]
        say(f"latency 100 clients: p50 {r.p50:.1f} ms p99 {r.p99:.1f} ms")


if __name__ == "__main__":
    main()
