"""pgbench: initialising the tables and running a timed workload with progress samples."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pysync.bench.errors import BenchError
from pysync.bench.options import Options
from pysync.postgres.cluster import ClusterError, binary_dir

_PROGRESS = re.compile(r"progress: ([\d.]+) s, ([\d.]+) tps, lat ([\d.]+) ms")
_TRANSACTIONS = re.compile(r"number of transactions actually processed: (\d+)")
_FAILED = re.compile(r"number of failed transactions: (\d+)")
_LATENCY = re.compile(r"latency average = ([\d.]+) ms")


def pgbench_binary(opts: Options) -> Path:
    if opts.pgbench is not None:
        return opts.pgbench
    try:
        path = binary_dir() / "pgbench"
    except ClusterError as exc:
        raise BenchError(f"{exc} (or give --pgbench PATH)") from exc
    if not path.exists():
        raise BenchError(f"no pgbench in {path.parent}: give --pgbench PATH")
    return path


def _environment() -> dict[str, str]:
    # The URL says where to connect; a PGHOST/PGPORT/... of the caller must not.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "fatal" in line.lower() or "could not" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def initialise(pgbench: Path, url: str, scale: int) -> float:
    """``pgbench -i -s scale``; returns the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        [str(pgbench), "-i", "-q", "-s", str(scale), url],
        capture_output=True,
        text=True,
        env=_environment(),
        start_new_session=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"pgbench -i failed: {_first_error(result.stderr + result.stdout)}")
    return time.monotonic() - started


@dataclass
class PgbenchResult:
    transactions: int
    failed: int
    latency_ms: float
    progress: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds since start, tps, average latency ms) from ``-P 1``."""


class Pgbench:
    """One timed pgbench run in a child process; progress is read as it arrives."""

    def __init__(self, pgbench: Path, url: str, opts: Options, seconds: float) -> None:
        args = [
            str(pgbench),
            "-n",
            "-c",
            str(opts.clients),
            "-j",
            str(opts.jobs),
            "-T",
            str(max(1, round(seconds))),
            "-P",
            "1",
        ]
        if opts.rate is not None:
            args += ["-R", f"{opts.rate:g}"]
        args += ["-f", str(opts.script)] if opts.script is not None else ["-b", opts.workload]
        self.progress: list[tuple[float, float, float]] = []
        self.started = time.monotonic()
        self.seconds = seconds
        self.proc = subprocess.Popen(
            [*args, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(),
            start_new_session=True,
        )
        self._stderr: list[str] = []
        self._reader = threading.Thread(target=self._read_progress, daemon=True)
        self._reader.start()

    def _read_progress(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            match = _PROGRESS.search(line)
            if match:
                self.progress.append((float(match[1]), float(match[2]), float(match[3])))
            else:
                self._stderr.append(line)

    @property
    def latest_tps(self) -> float | None:
        return self.progress[-1][1] if self.progress else None

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self) -> PgbenchResult:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait()
        self._reader.join(5)
        if code != 0:
            raise BenchError(f"pgbench failed: {_first_error(''.join(self._stderr) + out)}")
        transactions = _TRANSACTIONS.search(out)
        if transactions is None:
            raise BenchError(f"pgbench printed no result: {_first_error(out)}")
        failed, latency = _FAILED.search(out), _LATENCY.search(out)
        return PgbenchResult(
            transactions=int(transactions[1]),
            failed=int(failed[1]) if failed else 0,
            latency_ms=float(latency[1]) if latency else 0.0,
            progress=list(self.progress),
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
