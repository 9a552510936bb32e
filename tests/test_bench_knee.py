"""``pysync bench --find-knee``: the search's arithmetic on made-up steps, then a real
run with tiny steps (a private Postgres, pgbench, ``pg_recvlogical``, ``pysync serve``)
whose report must hold together: no speed assertions, only the search's invariants."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench_support import TINY as BENCH_TINY
from bench_support import bench
from pysync.bench import knee

TINY = ["--find-knee", *BENCH_TINY]

HEADLINE = re.compile(
    r"^bench knee (\S+) row-changes/s pg_recvlogical (\S+) row-changes/s ratio (\S+) "
    r"\(lag <= (\S+) s, p99 <= (\S+) ms\)$"
)


def fake_step(rate: float, kind: str, *, ceiling: float, limit: float) -> dict[str, Any]:
    """A step of a machine where pgbench reaches at most ``ceiling`` TPS and the server
    keeps within the limits up to ``limit`` TPS (4 row changes per transaction)."""
    tps = min(rate, ceiling)
    return {
        "rate": rate,
        "kind": kind,
        "tps": tps,
        "committed_per_s": 4 * tps,
        "passed": tps <= limit,
        "caught_up": True,
    }


def test_the_search_climbs_to_the_first_failure_then_bisects_between() -> None:
    plan = knee.Plan(start=100, factor=2, steps=6, bisect=3)
    steps = knee.search(plan, lambda r, k: fake_step(r, k, ceiling=10_000, limit=700))
    rates = [s["rate"] for s in steps]
    assert [s["kind"] for s in steps] == ["ladder"] * 4 + ["bisect"] * 3
    assert rates[:4] == [100, 200, 400, 800]  # 800 breaks the limit: the ladder stops
    # Geometric midpoints of the bracket, which narrows on each verdict.
    assert rates[4] == pytest.approx(math.sqrt(400 * 800), abs=0.1)  # passes
    assert rates[5] == pytest.approx(math.sqrt(rates[4] * 800), abs=0.1)  # passes
    assert rates[6] == pytest.approx(math.sqrt(rates[5] * 800), abs=0.1)  # fails
    assert [s["passed"] for s in steps[4:]] == [True, True, False]
    found = knee.summary([], steps, knee.Limits(1, 100))
    assert found["knee_rate"] == rates[5] and found["knee_per_s"] == 4 * rates[5]
    assert found["lowest_failing_rate"] == rates[6]
    assert found["bounded_by"].startswith("the limits")
    assert found["ratio"] is None  # no baseline


def test_the_ladder_stops_where_pgbench_no_longer_follows() -> None:
    plan = knee.Plan(start=100, factor=2, steps=8, bisect=3)
    run = lambda r, k: fake_step(r, k, ceiling=300, limit=10_000)  # noqa: E731
    # 400 reaches 300 TPS (more than 200's), 800 reaches 300 again: saturated.
    baseline = knee.climb(plan, run)
    assert [s["rate"] for s in baseline] == [100, 200, 400, 800]
    sync = knee.search(plan, run)
    assert [s["rate"] for s in sync] == [100, 200, 400, 800]  # nothing failed: no bisection
    found = knee.summary(baseline, sync, knee.Limits(1, 100))
    assert found["knee_per_s"] == found["baseline_per_s"] == 1200 and found["ratio"] == 1.0
    assert found["bounded_by"].startswith("the load pgbench reached")
    # Nothing passes: down the ladder (as many steps as up), no knee.
    none = knee.search(plan, lambda r, k: fake_step(r, k, ceiling=300, limit=0))
    assert [s["rate"] for s in none] == [100, 50, 25, 12.5, 6.2, 3.1, 1.6]
    assert [s["kind"] for s in none] == ["ladder"] + ["down"] * 6
    assert knee.summary(baseline, none, knee.Limits(1, 100))["knee_per_s"] is None


def test_a_first_step_beyond_the_limits_steps_down_then_bisects() -> None:
    plan = knee.Plan(start=100, factor=2, steps=8, bisect=2)
    steps = knee.search(plan, lambda r, k: fake_step(r, k, ceiling=10_000, limit=30))
    assert [(s["rate"], s["kind"]) for s in steps[:3]] == [
        (100, "ladder"),
        (50, "down"),
        (25, "down"),  # passes: the bracket is 25..50
    ]
    bisect = steps[3:]
    assert [s["kind"] for s in bisect] == ["bisect", "bisect"]
    assert bisect[0]["rate"] == pytest.approx(math.sqrt(25 * 50), abs=0.1)  # 35.4 fails
    assert bisect[1]["rate"] == pytest.approx(math.sqrt(25 * bisect[0]["rate"]), abs=0.1)
    found = knee.summary([], steps, knee.Limits(1, 100))
    assert found["knee_rate"] == 29.7 and found["bounded_by"].startswith("the limits")


def test_a_step_without_a_measure_or_behind_fails() -> None:
    limits = knee.Limits(lag_s=1.0, p99_ms=100.0)
    good = {"lag_max_s": 0.5, "p99_ms": 50.0, "caught_up": True}
    assert knee.verdict(good, limits) == []
    assert knee.verdict({**good, "lag_max_s": 1.5}, limits) == ["lag"]
    assert knee.verdict({**good, "p99_ms": None}, limits) == ["p99"]
    assert knee.verdict({**good, "caught_up": False}, limits) == ["caught up"]


@pytest.mark.postgres  # a Postgres of its own
def test_find_knee_on_private_postgres(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    result = bench(
        *TINY,
        "--knee-start",
        "40",
        "--knee-factor",
        "3",
        "--knee-steps",
        "3",
        "--knee-bisect",
        "2",
        "--max-p99",
        "30",
        "--out",
        str(out),
        tmp=scratch,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    match = HEADLINE.match(last)
    assert match, last
    report = json.loads((out / "bench.json").read_text())
    found = report["knee"]
    summary, base, sync = found["summary"], found["baseline_steps"], found["sync_steps"]
    assert summary["limits"] == {"lag_s": 1.0, "p99_ms": 30.0}
    assert match[4] == "1" and match[5] == "30"
    assert report["target"]["server"].startswith("pysync/")

    # The baseline ran, on the ladder's rates, from the first.
    assert base and [s["rate"] for s in base] == [40, 120, 360][: len(base)]
    assert all(s["attached"] == "pg_recvlogical" and s["kind"] == "ladder" for s in base)
    for step in base + sync:
        assert step["tps"] > 0 and step["row_changes"] > 0
        # TPC-B writes 4 row changes per transaction (and the marker 20 a second).
        assert step["row_changes"] >= 4 * step["transactions"]
        assert step["committed_per_s"] == pytest.approx(
            step["tps"] * step["row_changes"] / step["transactions"]
        )
        assert step["lag_max_s"] is not None
    # The server's ladder climbs (strictly) and stops at its first failure; bisection
    # only follows a failure, between the last rate that passed and it.
    ladder = [s for s in sync if s["kind"] == "ladder"]
    down = [s for s in sync if s["kind"] == "down"]
    bisect = [s for s in sync if s["kind"] == "bisect"]
    assert sync == ladder + down + bisect
    rates = [s["rate"] for s in ladder]
    assert rates == sorted(set(rates)) and rates == [40, 120, 360][: len(rates)]
    assert all(s["passed"] for s in ladder[:-1])
    # Down the ladder only when its first step failed, each lower, until one passes.
    if down:
        assert len(ladder) == 1 and not ladder[0]["passed"]
        assert [s["rate"] for s in down] == [round(40 / 3**k, 1) for k in range(1, len(down) + 1)]
        assert all(not s["passed"] for s in down[:-1])
    for step in sync:
        assert step["passed"] == (not step["broken"])
        assert (
            step["passed"]
            == (step["lag_max_s"] <= 1.0 and step["p99_ms"] is not None and step["p99_ms"] <= 30.0)
            and step["caught_up"]
            and step["latency_samples"] == step["expected_samples"] > 0
        )
        assert step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
    if bisect:
        assert len(bisect) <= 2
        if down:
            assert down[-1]["passed"]
            low = down[-1]["rate"]
            high = down[-2]["rate"] if len(down) > 1 else ladder[0]["rate"]
        else:
            assert not ladder[-1]["passed"] and len(ladder) >= 2
            low, high = ladder[-2]["rate"], ladder[-1]["rate"]
        for step in bisect:
            assert low < step["rate"] < high
            low, high = (step["rate"], high) if step["passed"] else (low, step["rate"])

    # The knee: the best passing step, never above what was tried.
    passed = [s for s in sync if s["passed"]]
    tried = max(s["committed_per_s"] for s in sync)
    if passed:
        assert summary["knee_per_s"] == max(s["committed_per_s"] for s in passed) <= tried
        assert summary["knee_rate"] <= summary["highest_rate_tried"] == max(s["rate"] for s in sync)
        assert match[1] == f"{summary['knee_per_s']:.0f}"
    else:
        assert summary["knee_per_s"] is None and match[1] == "n/a"
    assert summary["baseline_per_s"] == max(s["committed_per_s"] for s in base) > 0
    assert match[2] == f"{summary['baseline_per_s']:.0f}"
    if summary["ratio"] is not None:
        assert summary["ratio"] == pytest.approx(summary["knee_per_s"] / summary["baseline_per_s"])

    # The plot: SVG that parses, one point per step with a value.
    root = ET.parse(out / "knee.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    points = [e for e in root.iter("{http://www.w3.org/2000/svg}circle")]
    series = [p.get("data-series") for p in points]
    server = report["target"]["server"]
    assert series.count("pg_recvlogical") == len(base)
    assert series.count(server) == len(sync) + sum(1 for s in sync if s["p99_ms"] is not None)
    limits = [e for e in root.iter("{http://www.w3.org/2000/svg}line") if e.get("class") == "limit"]
    assert len(limits) == 2

    # The table on the terminal and in report.md: one row per step.
    markdown = (out / "report.md").read_text()
    assert len(re.findall(r"^\| pg_recvlogical \|", markdown, re.MULTILINE)) == len(base)
    assert len(re.findall(rf"^\| {re.escape(server)} \|", markdown, re.MULTILINE)) == len(sync)
    assert "](knee.svg)" in markdown and last in markdown
    assert "pysync bench --find-knee: the steps" in result.stdout
    assert list(scratch.iterdir()) == [], "temporary files left behind"

    # --compare draws runs of the phases; a knee's report gets a one-line answer.
    result = bench("--compare", str(out / "bench.json"), str(out / "bench.json"), tmp=scratch)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"pysync bench: --compare: {out / 'bench.json'} is a --find-knee report: --compare "
        "draws runs of the phases (a knee's steps are in its report.md and knee.svg)"
    ]


def test_find_knee_option_errors(scratch: Path) -> None:
    for args, pattern in (
        (
            ["--server", "http://127.0.0.1:1", "--database-url", "postgresql://x/y"],
            r"--find-knee runs the server itself .*drop --server",
        ),
        (["-R", "100"], r"--find-knee chooses -R itself: drop --rate"),
        (["--profile"], r"--profile samples the sync phase, which --find-knee does not run"),
        (["--knee-factor", "1"], r"--knee-factor must be > 1, not 1"),
        (["--max-p99", "0"], r"--max-p99 must be > 0, not 0"),
        (["--knee-bisect", "-1"], r"--knee-bisect must be >= 0, not -1"),
    ):
        result = bench("--find-knee", *args, tmp=scratch)
        assert result.returncode == 2, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and re.fullmatch(r"pysync bench: .+", lines[0]), lines
        assert re.search(pattern, lines[0]), lines[0]
    assert list(scratch.iterdir()) == []
