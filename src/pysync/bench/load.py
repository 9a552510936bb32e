"""One timed pgbench phase with the marker writer and the sampler running, and what the
report keeps of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pysync.bench import stats
from pysync.bench.context import RunContext
from pysync.bench.database import wal_lsn
from pysync.bench.errors import BenchError
from pysync.bench.marker import MarkerWriter
from pysync.bench.progress import fmt
from pysync.bench.sampler import Sampler
from pysync.bench.workload import Pgbench, PgbenchResult


class Load:
    """One timed pgbench phase with the marker writer and the sampler running."""

    def __init__(
        self,
        ctx: RunContext,
        name: str,
        seconds: float,
        *,
        slot: str | None,
        processes: dict[str, int | None],
        probes: dict[str, Callable[[], Any]] | None = None,
        marker: bool = True,
        rate: float | None = None,
    ) -> None:
        self.ctx = ctx
        # pgbench -R for this phase (the knee's steps); otherwise the run's own --rate.
        self.opts = ctx.opts if rate is None else replace(ctx.opts, rate=rate)
        self.name = name
        self.seconds = seconds
        self.pgbench: Pgbench | None = None
        self.sampler = Sampler(
            ctx.url,
            slot,
            ctx.opts.sample_interval,
            processes={**processes, "postgres": ctx.postgres_pid},
            probes={
                "tps": lambda: self.pgbench.latest_tps if self.pgbench else None,
                **(probes or {}),
            },
        )
        self.marker = (
            MarkerWriter(ctx.url, ctx.names.marker_table, ctx.opts.marker_interval, ctx.seq)
            if marker
            else None
        )
        self.result: PgbenchResult | None = None
        self.load_end = 0.0
        self.wal_at_end = 0

    def run(
        self, status: Callable[[], str], failure: Callable[[], str | None] = lambda: None
    ) -> PgbenchResult:
        self.sampler.start()
        if self.marker is not None:
            self.marker.start()
        try:
            self.pgbench = Pgbench(self.ctx.pgbench, self.ctx.url, self.opts, self.seconds)
            with self.ctx.display.phase(self.name, self.seconds, status):
                while self.pgbench.running():
                    time.sleep(0.25)
                    self.ctx.display.tick(time.monotonic() - self.pgbench.started)
                    problem = failure() or self._failure()
                    if problem:
                        raise BenchError(problem)
                self.result = self.pgbench.wait()
        except BaseException:
            self.sampler.stop()
            raise
        finally:
            if self.pgbench is not None:
                self.pgbench.stop()
            if self.marker is not None:
                self.marker.stop()
                self.ctx.seq = self.marker.seq
        self.load_end = time.monotonic() - self.sampler.started
        self.wal_at_end = wal_lsn(self.ctx.conn)
        return self.result

    def _failure(self) -> str | None:
        if self.sampler.error is not None:
            return f"sampling failed: {self.sampler.error}"
        if self.marker is not None and self.marker.error is not None:
            return f"the marker writer failed: {self.marker.error}"
        return None

    def samples(self) -> list[dict[str, Any]]:
        samples = self.sampler.stop()
        for sample, lag in zip(samples, stats.lag_seconds(samples), strict=True):
            sample["lag_s"] = lag
        return samples

    def status(self) -> str:
        progress = self.pgbench.progress if self.pgbench else []
        parts = [f"tps {fmt(stats.mean_tps(progress), ',.0f')}"]
        latest = self.sampler.latest
        if latest is not None and latest.get("lag_bytes") is not None:
            lag = stats.lag_seconds(self.sampler.samples[-240:])[-1]
            parts.append(f"lag {fmt(lag, '.2f', ' s')} {latest['lag_bytes'] / 1e6:.1f} MB")
        return "  ".join(parts)

    def summary(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.result is not None
        during = [s for s in samples if s["t"] <= self.load_end + 0.01]
        lag_s = [s["lag_s"] for s in during if s.get("lag_s") is not None]
        lag_b = [s["lag_bytes"] for s in during if s.get("lag_bytes") is not None]
        flush = [s["flush_lag_s"] for s in during if s.get("flush_lag_s") is not None]
        return {
            "tps": stats.mean_tps(self.result.progress),
            "transactions": self.result.transactions,
            "failed": self.result.failed,
            "pgbench_latency_ms": self.result.latency_ms,
            "seconds": self.seconds,
            "load_end_s": round(self.load_end, 3),
            "lag_max_s": max(lag_s) if lag_s else None,
            "lag_p99_s": stats.percentile(lag_s, 99),
            "lag_max_bytes": max(lag_b) if lag_b else None,
            "flush_lag_max_s": max(flush) if flush else None,
            "wal_bytes": during[-1]["wal_lsn"] - during[0]["wal_lsn"] if len(during) >= 2 else None,
            "machine_cpu_s": stats.delta(during, "machine_cpu_s"),
            "postgres_cpu_s": stats.delta(during, "postgres_cpu_s"),
        }

    def record(self, attached: str) -> dict[str, Any]:
        """Stop sampling and enter the phase in the report (``attached``: what was
        attached to the database meanwhile); the report's entry."""
        samples = self.samples()
        phase = {
            "attached": attached,
            "summary": self.summary(samples),
            "samples": samples,
            "pgbench_progress": self.result.progress if self.result else [],
        }
        self.ctx.report["phases"][self.name] = phase
        return phase
