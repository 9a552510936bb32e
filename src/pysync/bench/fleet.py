"""The bench's side of the subscriber process (``pysync.bench.subscribers``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pysync.bench.errors import BenchError
from pysync.bench.shapes import ShapeSpec


class Fleet:
    def __init__(
        self,
        *,
        server: str,
        secret: str | None,
        live: str,
        database_url: str,
        shapes: list[ShapeSpec],
        subscribers: list[ShapeSpec],
        workdir: Path,
    ) -> None:
        config = {
            "server": server,
            "secret": secret,
            "live": live,
            "database_url": database_url,
            "shapes": [
                {"id": s.id, "kind": s.kind, "table": s.table, "params": list(s.params)}
                for s in shapes
            ],
            "subscribers": [s.id for s in subscribers],
            "marker_shape": shapes[0].id,
        }
        path = workdir / "subscribers.json"
        # It holds the database URL (with its password): readable by us only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        self.log = workdir / "subscribers.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pysync.bench.subscribers", str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.stats: dict[str, Any] = {}
        self.arrivals: list[tuple[int, float]] = []
        self.events: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="fleet", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.pop("event", None)
            with self._changed:
                if kind == "stats":
                    self.arrivals.extend((int(s), float(t)) for s, t in event.pop("arrivals"))
                    self.stats = event
                else:
                    self.events[str(kind)] = event
                self._changed.notify_all()
        with self._changed:
            self.events.setdefault("exit", {})
            self._changed.notify_all()

    def _wait(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while kind not in self.events:
                if "error" in self.events:
                    raise BenchError(f"subscribers failed: {self.events['error']['message']}")
                if "exit" in self.events:
                    raise BenchError(f"the subscriber process ended: {self._tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"the subscribers sent no {kind!r} within {timeout:.0f} s")
                self._changed.wait(min(left, 1.0))
            return self.events.pop(kind)

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or f"exit {self.proc.poll()}"

    def _send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(command) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"the subscriber process ended: {self._tail()}") from exc

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        return self._wait("ready", timeout)

    def failure(self) -> str | None:
        """The first subscriber error while running, if any."""
        if "error" in self.events:
            return str(self.events["error"]["message"])
        if "exit" in self.events:
            return f"the subscriber process ended: {self._tail()}"
        error = self.stats.get("error")
        return str(error) if error else None

    def take_arrivals(self) -> list[tuple[int, float]]:
        with self._changed:
            arrivals, self.arrivals = self.arrivals, []
        return arrivals

    def check(self, timeout: float) -> dict[str, Any]:
        self._send({"cmd": "check", "timeout": timeout})
        return self._wait("check", timeout + 120)

    def stop(self) -> dict[str, Any] | None:
        """Ends the subscribers; their final counters, or None if it had to be killed."""
        final: dict[str, Any] | None = None
        if self.proc.poll() is None:
            try:
                self._send({"cmd": "stop"})
                final = self._wait("final", 30)
            except BenchError:
                final = None
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._reader.join(5)
        return final
