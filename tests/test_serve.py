"""``pysync serve`` on its private Postgres: the README's main command, end to end.

Starts it with no database URL, creates a table through the printed DATABASE_URL,
syncs a shape over HTTP, stops it with SIGTERM (slot kept, logs flushed, Postgres
stopped), starts it again and resumes with the same handle and offset.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pysync.postgres.cluster import free_port


class Server:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pysync.cli", "serve", "--data-dir", str(data_dir),
             "--port", str(port), "--long-poll-timeout", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(60):
            self.stop()
            pytest.fail("pysync serve did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "pysync is serving shapes" in line:
                self.ready.set()

    @property
    def database_url(self) -> str:
        urls = [line.split("=", 1)[1] for line in self.lines if line.startswith("DATABASE_URL=")]
        assert urls, self.lines
        return urls[-1]

    def stop(self) -> bool:
        """SIGTERM; True if it shut down cleanly. uvicorn re-raises the signal once its
        shutdown is complete, so the exit status is SIGTERM's, as process managers expect."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return False
        self.reader.join(10)  # stdout ends with the process: all lines are in
        return code in (0, -signal.SIGTERM) and any("shutdown complete" in line for line in self.lines)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "pysync"
    pid_file = tmp_path / "pysync" / "postgres" / "pgdata" / "postmaster.pid"
    if pid_file.exists():  # a failed test must not leave its Postgres running
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)


def follow(base: str, params: dict[str, str]) -> tuple[str, str, list[dict[str, object]]]:
    """Catch up from offset -1 as a client does; (handle, offset, messages)."""
    messages: list[dict[str, object]] = []
    response = httpx.get(base, params={**params, "offset": "-1"})
    handle = response.headers["electric-handle"]
    while True:
        assert response.status_code == 200, response.text
        messages += response.json()
        offset = response.headers["electric-offset"]
        if "electric-up-to-date" in response.headers:
            return handle, offset, messages
        response = httpx.get(base, params={**params, "offset": offset, "handle": handle})


def test_serve_on_private_postgres_survives_restart(data_dir: Path) -> None:
    port = free_port()
    server = Server(data_dir, port)
    base = f"http://127.0.0.1:{port}/v1/shape"
    try:
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE todos (id int PRIMARY KEY, title text)")
            conn.execute("INSERT INTO todos VALUES (1, 'first')")
        handle, offset, messages = follow(base, {"table": "todos"})
        assert [m["value"] for m in messages if "key" in m] == [{"id": "1", "title": "first"}]
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO todos VALUES (2, 'second')")
        live = httpx.get(base, params={"table": "todos", "offset": offset, "handle": handle, "live": "true"})
        assert [m["value"]["id"] for m in live.json() if "key" in m] == ["2"]  # type: ignore[index]
        offset = live.headers["electric-offset"]
    finally:
        assert server.stop(), "\n".join(server.lines)
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists(), "Postgres left running"

    # Written while pysync is down: the kept slot delivers it after the restart.
    again = Server(data_dir, port)
    try:
        with psycopg.connect(again.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO todos VALUES (3, 'while down')")
        deadline = time.monotonic() + 30
        ids: list[str] = []
        while "3" not in ids:
            assert time.monotonic() < deadline, "change written while down never arrived"
            response = httpx.get(base, params={"table": "todos", "offset": offset, "handle": handle, "live": "true"})
            assert response.status_code == 200, response.text  # same handle: not a 409
            ids += [m["value"]["id"] for m in response.json() if "key" in m]  # type: ignore[index]
            offset = response.headers["electric-offset"]
        assert ids == ["3"]
    finally:
        assert again.stop(), "\n".join(again.lines)
