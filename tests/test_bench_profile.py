"""``pysync bench --profile``: each sampled stack lands in its pipeline stage, and a
real run (tiny, a private Postgres) reports the server's time by stage and each
process's share of the cores, consistent with the run's own CPU figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pysync.bench import profile


def frames(*paths: str) -> list[str]:
    return [f"f{i} ({path}:{i})" for i, path in enumerate(paths)]


def test_each_stack_lands_in_its_stage() -> None:
    ingest = ("<frozen runpy>", "uvloop/__init__.py", "pysync/ingest.py")
    cases = {
        profile.RECEIVE: frames(*ingest, "pysync/postgres/replication.py", "psycopg/pq.py"),
        profile.DECODE: frames(
            *ingest, "pysync/postgres/replication.py", "pysync/postgres/pgoutput.py"
        ),
        profile.ASSEMBLE: frames(*ingest, "pysync/postgres/transactions.py"),
        profile.ROUTE: frames(*ingest, "pysync/shapes/collector.py", "pysync/where/_runtime.py"),
        profile.CONVERT: frames(*ingest, "pysync/shapes/collector.py", "pysync/shapes/changes.py"),
        profile.APPEND: frames(*ingest, "pysync/shapes/consumer.py", "pysync/log/frames.py"),
        # A response's log read is HTTP's, though the innermost frame is the log's.
        profile.HTTP: frames("uvloop/__init__.py", "pysync/http/server.py", "pysync/log/log.py"),
        profile.FLUSH: frames("threading.py", "pysync/shapes/store.py", "pysync/log/storage.py"),
        profile.OTHER: frames("<frozen runpy>", "asyncio/runners.py"),
    }
    for expected, stack in cases.items():
        assert profile.stage(stack) == expected, stack
    compaction = ["_worker (threading.py:1)", "CompactionJob.run (pysync/log/log.py:560)"]
    assert profile.stage([*compaction, "_parse (pysync/log/log.py:503)"]) == profile.COMPACTION


def test_breakdown_counts_the_samples_of_every_line() -> None:
    raw = "\n".join(
        [
            ";".join(frames("pysync/ingest.py", "pysync/postgres/pgoutput.py")) + " 7",
            ";".join(frames("pysync/ingest.py", "pysync/postgres/pgoutput.py")) + " 3",
            ";".join(frames("pysync/http/server.py")) + " 5",
            "",
        ]
    )
    samples = profile.breakdown(raw)
    assert list(samples) == list(profile.STAGES)
    assert samples[profile.DECODE] == 10 and samples[profile.HTTP] == 5
    assert sum(samples.values()) == 15
    assert profile.top_frames(raw, 1) == [("f1 (pysync/postgres/pgoutput.py:1)", 10)]


@pytest.mark.postgres  # a Postgres of its own
def test_profile_of_a_tiny_run(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pysync.cli", "bench", "--profile", "--profile-rate", "200"]
        + ["--scale", "1", "--duration", "3", "--warmup", "0", "--shapes", "12"]
        + ["--subscribers", "5", "--marker-subscribers", "2", "--backlog", "0"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "TMPDIR": str(scratch)},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    sync = report["phases"]["sync"]
    engine, summary = sync["profile"]["engine"], sync["summary"]
    samples = engine["samples"]
    assert list(samples) == list(profile.STAGES)
    total = sum(samples.values())
    # 3 s at 200 a second: some hundreds of samples, most of them the replication path
    # and HTTP (the server did work: it delivered every change).
    assert total > 50 and summary["deliveries"]["ok"]
    assert samples[profile.DECODE] + samples[profile.RECEIVE] > 0
    assert samples[profile.HTTP] > 0
    assert sum(engine["shares"].values()) == pytest.approx(1.0)
    assert sum(engine["us_per_change"].values()) == pytest.approx(
        summary["engine_cpu_us_per_change"]
    )
    assert (out / "profile" / engine["file"]).read_text().strip()
    assert sync["profile"]["subscribers"]["samples_total"] > 0
    # Both tables on the terminal and in report.md, a row per stage.
    markdown = (out / "report.md").read_text()
    for stage in profile.STAGES:
        assert re.search(rf"^\| {re.escape(stage)} \| [\d,]+ \| [\d.]+% \|", markdown, re.M), stage
        assert stage in result.stdout
    shares = re.findall(
        r"^\| (pysync serve|subscribers|Postgres|the rest|idle)[^|]*\| [-\d.]+ \| ([-\d.]+)% \|",
        markdown,
        re.M,
    )
    assert len(shares) == 5
    assert sum(float(s) for _, s in shares) == pytest.approx(100, abs=0.6)
    assert list(scratch.iterdir()) == []


def test_profile_needs_the_managed_server(scratch: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pysync.cli", "bench", "--profile", "--server", "http://x:1"]
        + ["--database-url", "postgresql://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(scratch)},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pysync bench: --profile samples the server the bench starts: drop --server"
    )
