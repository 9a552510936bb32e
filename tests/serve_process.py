"""``pysync serve`` as a subprocess for tests: started, read, stopped (or killed)."""

from __future__ import annotations

import contextlib
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pysync.postgres.cluster import PostgresCluster

READY_LINE = "pysync is serving shapes at"
_alive: set[ServeProcess] = set()


def running() -> set[ServeProcess]:
    return set(_alive)


def kill_leftovers(keep: set[ServeProcess]) -> None:
    """Kill every ``pysync serve`` a test started and did not stop (it failed midway):
    it would otherwise retry its gone database forever, using the CPU of later tests.
    ``keep``: those that were running before the test (a module's shared server)."""
    for server in list(_alive - keep):
        server.kill()


class ServeProcess:
    """``python -m pysync.cli serve ARGS``; its output is collected for failure reports."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, *, open_files: int | None = None
    ) -> None:
        """``open_files``: start it as under ``ulimit -n open_files`` (soft and hard)."""
        self.args = args
        self.lines: list[str] = []
        self._ready: queue.Queue[bool] = queue.Queue()

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "pysync.cli", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=limit,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        _alive.add(self)

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:  # closed at EOF (else a ResourceWarning, later)
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                if READY_LINE in line:
                    self._ready.put(True)
        self._ready.put(False)  # EOF: the process ended

    @classmethod
    def on(
        cls,
        database_url: str,
        port: int,
        storage: Path,
        *extra: str,
        long_poll_timeout: float = 2,
        env: dict[str, str] | None = None,
    ) -> ServeProcess:
        """A started ``pysync serve`` on 127.0.0.1:``port`` (quiet logs unless ``extra``
        says otherwise: a later flag wins), ready to serve."""
        server = cls(
            [
                "--database-url",
                database_url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-dir",
                str(storage),
                "--long-poll-timeout",
                str(long_poll_timeout),
                "--log-level",
                "warning",
                *extra,
            ],
            env,
        )
        server.wait_ready()
        return server

    def wait_ready(self, timeout: float = 60.0) -> None:
        try:
            ready = self._ready.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"pysync serve not ready after {timeout} s:\n{self.output()}")
        if not ready:
            self.process.wait(timeout=10)
            pytest.fail(f"pysync serve exited with {self.process.returncode}:\n{self.output()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit status of a process expected to end by itself."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        _alive.discard(self)
        return code

    def output(self) -> str:
        return "\n".join(self.lines[-300:])

    @property
    def database_url(self) -> str:
        urls = [line.split("=", 1)[1] for line in self.lines if line.startswith("DATABASE_URL=")]
        assert urls, self.output()
        return urls[-1]

    def stop(self) -> bool:
        """SIGTERM; True if it shut down cleanly. uvicorn re-raises the signal once its
        shutdown is complete, so the exit status is SIGTERM's, as process managers expect."""
        if self.process.poll() is not None:
            _alive.discard(self)
            return False
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        self._reader.join(10)  # stdout ends with the process: all lines are in
        _alive.discard(self)
        return code in (0, -signal.SIGTERM) and any(
            "shutdown complete" in line for line in self.lines
        )

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        _alive.discard(self)


def stop_leftover_postgres(data_dir: Path) -> None:
    """A failed test must not leave a private Postgres running, nor (as root) its files
    outside the test's directory (``cluster.RELOCATED``)."""
    cluster = PostgresCluster(data_dir / "postgres")
    pid = cluster.pid
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while cluster.pid is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    if cluster.server_dir != cluster.root:
        shutil.rmtree(cluster.server_dir, ignore_errors=True)
