"""Turning samples into series and summaries: percentiles, lag in seconds, rates."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

Sample = dict[str, Any]


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def mean_tps(progress: Sequence[tuple[float, ...]]) -> float | None:
    """pgbench's transactions per second over a phase so far: the transactions its
    per-second progress reports (seconds since start, tps, ...) count, over the seconds
    they cover. The one figure the live status line and the report's table show (pgbench's
    own final ``tps =`` counts other seconds: the last partial one, not the connecting)."""
    transactions, covered = 0.0, 0.0
    for t, tps, *_ in progress:
        transactions += tps * (t - covered)
        covered = t
    return transactions / covered if covered > 0 else None


def lag_seconds(samples: list[Sample]) -> list[float | None]:
    """For each sample, how long ago ``pg_current_wal_lsn()`` was where the slot's
    confirmed position is now (linear between samples): seconds behind the database."""
    times = [s["t"] for s in samples]
    wal = [s["wal_lsn"] for s in samples]
    result: list[float | None] = []
    for i, sample in enumerate(samples):
        confirmed = sample.get("confirmed_lsn")
        if confirmed is None:
            result.append(None)
            continue
        if confirmed >= wal[i]:
            result.append(0.0)
            continue
        j = bisect.bisect_left(wal, confirmed, 0, i + 1)
        if j == 0:
            reached = times[0]  # before the first sample: at least this far behind
        else:
            span = wal[j] - wal[j - 1]
            fraction = (confirmed - wal[j - 1]) / span if span else 1.0
            reached = times[j - 1] + fraction * (times[j] - times[j - 1])
        result.append(round(max(0.0, times[i] - reached), 4))
    return result


def rates(samples: list[Sample], field: str) -> list[float | None]:
    """Per-second rate of a cumulative field between consecutive samples."""
    result: list[float | None] = [None]
    for before, after in zip(samples, samples[1:], strict=False):
        a, b = before.get(field), after.get(field)
        dt = after["t"] - before["t"]
        result.append(None if a is None or b is None or dt <= 0 else round((b - a) / dt, 2))
    return result


def latency_windows(
    latencies: list[tuple[float, float]], width: float = 1.0
) -> list[dict[str, Any]]:
    """p50/p95/p99/max per window of commit time; ``latencies`` are (commit t, ms).
    A window's ``t`` is the mean commit time of its samples: a point lies among the
    commits it stands for (a last, partial second's is not drawn past the load)."""
    buckets: dict[int, list[tuple[float, float]]] = {}
    for t, ms in latencies:
        buckets.setdefault(int(t // width), []).append((t, ms))
    return [
        {
            "t": round(sum(t for t, _ in window) / len(window), 3),
            "count": len(window),
            "p50_ms": percentile(v, 50),
            "p95_ms": percentile(v, 95),
            "p99_ms": percentile(v, 99),
            "max_ms": max(v),
        }
        for _, window in sorted(buckets.items())
        for v in [[ms for _, ms in window]]
    ]


def summary(values: Sequence[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    return {
        "mean": sum(present) / len(present) if present else None,
        "p50": percentile(present, 50),
        "p99": percentile(present, 99),
        "max": max(present) if present else None,
    }


def delta(samples: list[Sample], field: str) -> float | None:
    """The growth of a cumulative field over the samples."""
    values = [s[field] for s in samples if s.get(field) is not None]
    return values[-1] - values[0] if len(values) >= 2 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
