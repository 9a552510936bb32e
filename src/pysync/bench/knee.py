"""``pysync bench --find-knee``: the search for the highest load the engine sustains.

A *step* is one pgbench phase at a fixed ``-R`` (transactions per second). The search
runs the same ladder of rates twice: first with only ``pg_recvlogical`` attached (the
baseline: the rate pgbench reaches with the cheapest logical consumer), then with the
sync server and its subscribers attached. A sync step *passes* when the replication
lag and the marker's p99 commit-to-client latency stay within the limits during it.
The sync ladder climbs until a step fails (or pgbench no longer reaches its ``-R``:
more cannot be asked; if the very first step fails, it steps down instead until one
passes), then bisects between the last rate that passed and the first that failed. The knee is the highest committed row-change rate of a passing step.

This module is the arithmetic (which rate next, what a step's verdict is, the
summary); ``knee_phase.py`` runs the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REACHED = 0.9
"""A step reached its ``-R`` when pgbench ran at least this fraction of it; below,
pgbench (or the machine) is the limit and a higher ``-R`` would not add load."""


MIN_RATE = 1.0
"""The lowest ``-R`` the search steps down to."""


@dataclass(frozen=True)
class Limits:
    lag_s: float
    p99_ms: float


@dataclass(frozen=True)
class Plan:
    start: float
    """The first step's ``-R``."""
    factor: float
    """Each ladder step's ``-R`` over the one before."""
    steps: int
    """At most this many ladder steps."""
    bisect: int
    """Steps of bisection between the last passing and the first failing rate."""

    def ladder(self) -> list[float]:
        return [round(self.start * self.factor**k, 1) for k in range(self.steps)]


Step = dict[str, Any]
RunStep = Callable[[float, str], Step]
"""Runs one step at a rate (``kind``: "ladder", "down" or "bisect"); its measures."""


def reached(step: Step) -> bool:
    tps = step.get("tps")
    return tps is not None and tps >= REACHED * step["rate"]


def saturated(step: Step, previous: Step | None) -> bool:
    """pgbench no longer follows the ladder: it fell short of this step's ``-R`` and
    ran hardly more than at the step before (a higher ``-R`` adds no load). A short
    step's TPS is noisy (``-R`` schedules transactions at random), hence the second
    condition; a first step is saturated below half its ``-R``."""
    if reached(step):
        return False
    tps = float(step.get("tps") or 0.0)
    if previous is None:
        return tps < 0.5 * float(step["rate"])
    return tps < float(previous.get("tps") or 0.0) * (2 - REACHED)


def climb(plan: Plan, run: RunStep) -> list[Step]:
    """The ladder up to saturation: the baseline's steps."""
    steps: list[Step] = []
    for rate in plan.ladder():
        steps.append(run(rate, "ladder"))
        if saturated(steps[-1], steps[-2] if len(steps) > 1 else None):
            break
    return steps


def search(plan: Plan, run: RunStep) -> list[Step]:
    """The ladder up to the first step that breaks a limit (or saturation); if that is
    the first step, down the ladder to one that passes; then the bisection between the
    last rate that passed and the first that failed. Steps carry ``passed``; a step
    with ``caught_up`` false ends the search (its backlog would be the next step's)."""
    steps: list[Step] = []
    low: float | None = None
    high: float | None = None
    for rate in plan.ladder():
        step = run(rate, "ladder")
        steps.append(step)
        if not step["passed"]:
            high = rate
            break
        low = rate
        if saturated(step, steps[-2] if len(steps) > 1 else None):
            break
    if not steps[-1].get("caught_up", True):
        return steps
    if low is None and high is not None:
        # The first rate already broke a limit: down the ladder (as many steps) to a
        # rate that passes, then bisect above it.
        rate = high
        for _ in range(plan.steps - 1):
            rate = round(rate / plan.factor, 1)
            if rate < MIN_RATE:
                break
            step = run(rate, "down")
            steps.append(step)
            if not step.get("caught_up", True):
                return steps
            if step["passed"]:
                low = rate
                break
            high = rate
    if low is None or high is None:
        return steps
    for _ in range(plan.bisect):
        rate = midpoint(low, high)
        if not low < rate < high:
            break
        step = run(rate, "bisect")
        steps.append(step)
        if not step.get("caught_up", True):
            break
        if step["passed"]:
            low = rate
        else:
            high = rate
    return steps


def verdict(step: Step, limits: Limits) -> list[str]:
    """The limits a sync step broke (empty: it passed). A step without a measure (no
    lag sample, no marker arrived) fails: nothing shows it was within the limit."""
    broken = []
    lag = step.get("lag_max_s")
    if lag is None or lag > limits.lag_s:
        broken.append("lag")
    p99 = step.get("p99_ms")
    if p99 is None or p99 > limits.p99_ms:
        broken.append("p99")
    if not step.get("caught_up", True):
        broken.append("caught up")
    return broken


def midpoint(low: float, high: float) -> float:
    """The geometric middle (rates are searched on a log scale, as the ladder steps)."""
    return round(math.sqrt(low * high), 1)


def summary(baseline: list[Step], sync: list[Step], limits: Limits) -> dict[str, Any]:
    """The knee, the baseline's rate and their ratio, from the steps run."""
    passed = [s for s in sync if s["passed"]]
    knee = max(passed, key=lambda s: s["committed_per_s"]) if passed else None
    base = max(baseline, key=lambda s: s["committed_per_s"]) if baseline else None
    failed = [s["rate"] for s in sync if not s["passed"]]
    knee_rate = knee["committed_per_s"] if knee else None
    base_rate = base["committed_per_s"] if base else None
    if knee is None:
        bound = "no step passed, down to the lowest rate tried"
    elif failed and min(failed) > knee["rate"]:
        bound = "the limits (the next rate tried broke them)"
    else:
        bound = "the load pgbench reached (no rate tried broke the limits)"
    return {
        "limits": {"lag_s": limits.lag_s, "p99_ms": limits.p99_ms},
        "knee_per_s": knee_rate,
        "knee_rate": knee["rate"] if knee else None,
        "knee_tps": knee["tps"] if knee else None,
        "baseline_per_s": base_rate,
        "baseline_rate": base["rate"] if base else None,
        "baseline_tps": base["tps"] if base else None,
        "ratio": knee_rate / base_rate if knee_rate is not None and base_rate else None,
        "highest_rate_tried": max((s["rate"] for s in sync), default=None),
        "lowest_failing_rate": min(failed) if failed else None,
        "bounded_by": bound,
    }
