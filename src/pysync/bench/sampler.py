"""Samples taken every ``--sample-interval`` while a phase runs.

Postgres side: ``pg_current_wal_lsn()``, the measured slot's ``confirmed_flush_lsn``
and its walsender's ``write_lag`` / ``flush_lag`` (``pg_stat_replication``). Process
side: CPU seconds and RSS of the engine (the managed ``pysync serve``), of the
subscriber process and of Postgres (its postmaster and children, when the bench runs
it), and the machine's busy CPU seconds. Load side: whatever the ``probes`` return
(pgbench's latest per-second TPS, the subscribers' counters).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from pysync.bench.database import connect

_QUERY = """
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint,
       s.active, (s.confirmed_flush_lsn - '0/0'::pg_lsn)::bigint,
       extract(epoch FROM r.write_lag)::float8, extract(epoch FROM r.flush_lag)::float8
FROM (SELECT 1) AS one
LEFT JOIN pg_replication_slots s ON s.slot_name = %s
LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
"""

Sample = dict[str, Any]


def process_tree_usage(pid: int | None) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of a process and its children; None if it is gone."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        cpu, rss = 0.0, 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss
    except psutil.Error:
        return None


def peak_rss(pid: int) -> int | None:
    """The kernel's high-water mark of a process's RSS (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Sampler:
    def __init__(
        self,
        url: str,
        slot: str | None,
        interval: float,
        *,
        processes: dict[str, int | None],
        probes: dict[str, Callable[[], Any]],
    ) -> None:
        self.url = url
        self.slot = slot
        self.interval = interval
        self.processes = processes
        self.probes = probes
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.error: BaseException | None = None

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with connect(self.url) as conn:
                tick = 0
                while not self._stop.is_set():
                    self.samples.append(self._sample(conn))
                    tick += 1
                    self._stop.wait(
                        max(0.0, self.started + tick * self.interval - time.monotonic())
                    )
        except BaseException as exc:  # noqa: BLE001 - the run reports it
            self.error = exc

    def _sample(self, conn: Any) -> Sample:
        now = time.monotonic()
        wal, active, confirmed, write_lag, flush_lag = conn.execute(
            _QUERY, (self.slot or "",)
        ).fetchone()
        sample: Sample = {
            "t": round(now - self.started, 3),
            "wal_lsn": wal,
            "slot_active": bool(active) if self.slot else None,
            "confirmed_lsn": confirmed,
            "lag_bytes": None if confirmed is None else max(0, wal - confirmed),
            "write_lag_s": write_lag,
            "flush_lag_s": flush_lag,
            "machine_cpu_s": machine_busy(),
        }
        for name, pid in self.processes.items():
            usage = process_tree_usage(pid)
            sample[f"{name}_cpu_s"] = None if usage is None else round(usage[0], 3)
            sample[f"{name}_rss"] = None if usage is None else usage[1]
            if usage is not None:
                self.peak[name] = max(self.peak.get(name, 0), usage[1])
        for name, probe in self.probes.items():
            sample[name] = probe()
        return sample

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        return self.samples
