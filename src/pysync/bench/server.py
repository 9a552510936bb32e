"""The sync server under test: a ``pysync serve`` the bench manages, or any server
speaking Electric's HTTP Shape API at ``--server``.

The managed server is a child process (``python -m pysync.cli serve``), not an engine in
the bench's own process: its CPU seconds and peak RSS are then its own (psutil), the
simulated clients do not share its GIL, and it is used only through its public seams
(the CLI and the HTTP protocol), as a user would run it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from pysync.bench.errors import BenchError
from pysync.postgres.cluster import free_port


def _get(base: str, path: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(base)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def probe_health(base: str) -> None:
    """The server answers ``GET /v1/health`` as Electric's does; BenchError otherwise."""
    try:
        status, _, body = _get(base, "/v1/health", 10)
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(
            f"--server {base} does not answer ({exc}): start the server or fix the URL"
        ) from exc
    try:
        health = json.loads(body)
    except ValueError:
        health = None
    if status not in (200, 202) or not isinstance(health, dict) or "status" not in health:
        raise BenchError(
            f"--server {base} does not speak Electric's HTTP Shape API "
            f'(GET /v1/health answered {status}, not {{"status": ...}})'
        )


def probe_shape(base: str, table: str, secret: str | None) -> str:
    """A first shape request on ``table``; returns the server's name (``electric-server``)."""
    query = {"table": table, "offset": "-1", **({"secret": secret} if secret else {})}
    try:
        status, headers, body = _get(base, "/v1/shape?" + urlencode(query), 60)
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"--server {base}: shape request failed ({exc})") from exc
    if status == 401:
        raise BenchError(f"--server {base} refused the shape request (401): give its --secret")
    if status != 200 or "electric-handle" not in headers or "electric-offset" not in headers:
        detail = body[:200].decode(errors="replace")
        raise BenchError(
            f"--server {base} does not speak Electric's HTTP Shape API "
            f"(GET /v1/shape answered {status} {detail!r} without electric-handle)"
        )
    return headers.get("electric-server", "unknown (no electric-server header)")


class ManagedServer:
    """``pysync serve`` on the bench's database, with the run's own slot and publication."""

    def __init__(
        self,
        database_url: str,
        storage: Path,
        log: Path,
        *,
        slot: str,
        publication: str,
        long_poll_timeout: float,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log = log
        self.command = [
            sys.executable,
            "-m",
            "pysync.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-dir",
            str(storage),
            "--slot",
            slot,
            "--publication",
            publication,
            "--long-poll-timeout",
            f"{long_poll_timeout:g}",
            "--log-level",
            "warning",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> None:
        """Start it without waiting (the backlog drain times it from here)."""
        with open(self.log, "ab") as log:
            # Its own session: a Ctrl-C reaches the bench only, which stops the server in
            # order (before dropping its slot).
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # Not on its command line, which every local user can read.
                env={**os.environ, "DATABASE_URL": self.database_url},
            )

    def proc_poll(self) -> int | None:
        """Its exit status, None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until ``/v1/health`` says it is active."""
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"pysync serve exited ({self.proc.returncode}): {self.tail()}")
            try:
                status, _, _ = _get(self.url, "/v1/health", 2)
                if status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise BenchError(f"pysync serve was not healthy within {timeout:.0f} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """SIGTERM (the slot is kept, logs flushed); SIGKILL if it does not exit."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
