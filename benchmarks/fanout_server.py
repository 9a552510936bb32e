"""benchmarks/fanout.py's server under test: ``pysync serve`` (or the plain ASGI app under
another ASGI server) in a subprocess, and the CPU and memory of its processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from pysync.postgres.cluster import free_port

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
