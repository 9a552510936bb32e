"""``pysync bench`` end to end, as a user runs it: tiny workloads (seconds), the files
and fields of the report, a ``--server`` run against a ``pysync serve`` started here,
and every bad option's one-line message with nothing left behind. No speed assertions:
only that the figures are there and agree with each other.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from bench_support import TINY, bench
from pysync import implementation
from pysync.bench import stats
from pysync.bench.progress import Display
from pysync.postgres.cluster import free_port

HEADLINE = re.compile(
    r"^bench overhead tps-ratio (\S+) lag-max (\S+) s p99 (\S+) ms impl (compiled|python|unknown)$"
)


def leftovers(database_url: str) -> list[str]:
    """The bench's own objects still in the database (slots, publications, tables)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = [
            f"slot {r[0]}"
            for r in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE starts_with(slot_name::text, 'pysync_bench_')"
            )
        ]
        found += [
            f"publication {r[0]}"
            for r in conn.execute(
                "SELECT pubname FROM pg_publication WHERE starts_with(pubname::text, 'pysync_bench_')"
            )
        ]
        found += [
            f"table {r[0]}"
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE starts_with(relname::text, 'pysync_bench_')"
            )
        ]
    return found


def processes_under(path: Path) -> list[str]:
    """Processes whose command line mentions ``path`` (servers, Postgres, clients)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:120]}")
    return found


def headline(result: subprocess.CompletedProcess[str]) -> re.Match[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    match = HEADLINE.match(last)
    assert match, last
    return match


def check_report(out: Path, *, managed: bool) -> dict[str, Any]:
    """The files exist and the report's figures are present and consistent."""
    report = json.loads((out / "bench.json").read_text())
    for name in ("latency.png", "lag.png", "throughput.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    markdown = (out / "report.md").read_text()
    for name in ("latency.png", "lag.png", "throughput.png"):
        assert f"]({name})" in markdown
    assert report["command"].startswith("pysync bench ")
    # The subprocesses run what this process runs (same install, same PYSYNC_IMPL).
    assert report["summary"]["implementation"] == (implementation() if managed else "unknown")
    assert f"- hot modules: {implementation()} (" in markdown

    sync = report["phases"]["sync"]
    summary = sync["summary"]
    assert summary["transactions"] > 0 and summary["tps"] > 0
    # Every subscriber converged to SELECT of its shape, and received exactly the change
    # messages the decoded WAL says its shape had (marker and pgbench shapes alike).
    assert summary["consistency"]["ok"], summary["consistency"]
    deliveries = summary["deliveries"]
    assert deliveries["ok"], deliveries
    assert deliveries["delivered"] == deliveries["expected"] > 0
    by_kind = deliveries["by_kind"]
    assert sum(k["delivered"] for k in by_kind.values()) == deliveries["delivered"]
    assert sum(k["subscribers"] for k in by_kind.values()) == summary["subscribers"] == 5
    assert by_kind["marker"]["subscribers"] == 2
    assert (
        by_kind["history"]["expected"] == summary["transactions"]
    )  # one insert per TPC-B transaction
    latency = summary["latency"]
    assert latency["samples"] > 0 and latency["samples"] == by_kind["marker"]["delivered"]
    assert latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert (
        sync["latency_windows"]
        and sum(w["count"] for w in sync["latency_windows"]) == latency["samples"]
    )
    samples = sync["samples"]
    assert len(samples) >= 4 and all("wal_lsn" in s and "deliveries" in s for s in samples)
    assert summary["messages_per_s"]["mean"] is not None
    # The changes committed during the load: every row change of the decoded WAL.
    assert summary["row_changes"] >= summary["transactions"] * 4

    head = report["summary"]
    assert head["server"] == report["target"]["server"]
    if managed:
        assert set(report["phases"]) == {"none", "recvlogical", "sync", "backlog"}
        assert head["tps_ratio"] == pytest.approx(head["tps_sync"] / head["tps_recvlogical"])
        assert head["lag_max_s"] is not None and head["lag_max_s"] >= 0
        assert all(s["lag_bytes"] is not None for s in samples)
        assert summary["engine_cpu_s"] > 0 and summary["engine_peak_rss"] > 0
        drain = report["drain"]
        assert (
            drain["row_changes"] > 0 and drain["recvlogical_complete"] and drain["pysync_complete"]
        )
        assert drain["ratio"] == pytest.approx(drain["pysync_per_s"] / drain["recvlogical_per_s"])
        assert drain["pysync_per_s"] == pytest.approx(
            drain["row_changes"] / drain["pysync_s"], rel=0.01
        )
    assert isinstance(report, dict)
    return report


@pytest.mark.postgres  # a Postgres of its own
def test_bench_smoke_on_private_postgres(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    result = bench(*TINY, "--backlog", "1", "--out", str(out), tmp=scratch)
    match = headline(result)
    report = check_report(out, managed=True)
    head = report["summary"]
    assert match[1] == f"{head['tps_ratio']:.2f}"
    assert match[2] == f"{head['lag_max_s']:.2f}"
    assert match[3] == f"{head['p99_ms']:.1f}"
    assert report["target"]["server"].startswith("pysync/")
    assert match[0] in (out / "report.md").read_text()
    # Each phase's last status line shows the TPS of the table (both: stats.mean_tps).
    for phase, row in (
        ("none", "nothing attached"),
        ("recvlogical", "pg_recvlogical attached"),
        ("sync", f"{head['server']} attached"),
    ):
        live = re.search(rf"^{phase}: tps ([\d,]+)", result.stdout, re.MULTILINE)
        cell = re.search(rf"pgbench TPS, {re.escape(row)}.*?│ +([\d,]+)", result.stdout)
        assert live and cell, result.stdout
        assert live[1] == cell[1] == f"{report['phases'][phase]['summary']['tps']:,.0f}"
    assert list(scratch.iterdir()) == [], "temporary files left behind"
    assert processes_under(scratch) == []

    # --compare draws two runs side by side (here the same one twice: every ratio 1.00).
    compared = tmp_path / "compared"
    result = bench(
        "--compare",
        str(out / "bench.json"),
        str(out / "bench.json"),
        "--out",
        str(compared),
        tmp=scratch,
    )
    assert result.returncode == 0, result.stderr
    assert (compared / "compare.png").read_bytes()[:4] == b"\x89PNG"
    table = (compared / "compare.md").read_text()
    assert re.search(
        r"\| pgbench TPS, sync server attached \| [\d,]+ \| [\d,]+ \| 1\.00 \|", table
    ), table
    one_line_error(
        bench("--compare", str(out / "report.md"), str(out / "bench.json"), tmp=scratch),
        r"--compare: .*report.md is not JSON",
    )


@pytest.mark.postgres  # a Postgres of its own
def test_bench_sse_subscribers(tmp_path: Path, scratch: Path) -> None:
    out = tmp_path / "out"
    result = bench(*TINY, "--backlog", "0", "--live", "sse", "--out", str(out), tmp=scratch)
    headline(result)
    report = json.loads((out / "bench.json").read_text())
    summary = report["phases"]["sync"]["summary"]
    assert report["target"]["live"] == "sse"
    assert summary["consistency"]["ok"] and summary["deliveries"]["ok"], summary["deliveries"]
    assert "drain" not in report
    assert list(scratch.iterdir()) == []


class Serve:
    """``pysync serve`` on the test's database, as a user runs it."""

    def __init__(self, database_url: str, storage: Path) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pysync.cli",
                "serve",
                "--database-url",
                database_url,
                "--port",
                str(self.port),
                "--storage-dir",
                str(storage),
                "--slot",
                "served",
                "--publication",
                "served",
                "--long-poll-timeout",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(60):
            self.stop()
            pytest.fail("pysync serve did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "pysync is serving shapes" in line:
                self.ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)  # it has read to the end of the output: the pipe can close
        if not self.reader.is_alive():
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def test_bench_against_a_running_server(tmp_path: Path, scratch: Path, database_url: str) -> None:
    server = Serve(database_url, tmp_path / "storage")
    out = tmp_path / "out"
    try:
        result = bench(
            *TINY,
            "--server",
            f"http://127.0.0.1:{server.port}",
            "--database-url",
            database_url,
            "--server-slot",
            "served",
            "--out",
            str(out),
            tmp=scratch,
        )
        match = headline(result)
        assert server.proc.poll() is None, "the bench must leave a server it did not start running"
    finally:
        server.stop()
    report = check_report(out, managed=False)
    # Only the HTTP side (and the lag of the slot it was told about) applies.
    assert set(report["phases"]) == {"sync"} and "drain" not in report
    assert report["target"] == {
        "server": "pysync/0.1.0",
        "url": f"http://127.0.0.1:{server.port}",
        "managed": False,
        "slot": "served",
        "live": "long-poll",
    }
    assert match[1] == "n/a" and match[2] != "n/a" and match[3] != "n/a"
    assert "pysync/0.1.0" in (out / "report.md").read_text()
    assert leftovers(database_url) == []
    with psycopg.connect(database_url) as conn:  # the server's own slot is not the bench's
        assert conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'served'"
        ).fetchone() == (1,)
    assert list(scratch.iterdir()) == []


def one_line_error(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(r"pysync bench: .+", lines[0]), lines
    assert re.search(pattern, lines[0]), lines[0]
    assert not HEADLINE.search(result.stdout)


def test_bad_workload_and_script(scratch: Path) -> None:
    one_line_error(
        bench("--workload", "tpcc", tmp=scratch), r"unknown workload 'tpcc': use one of tpcb-like"
    )
    one_line_error(
        bench("--script", "/nonexistent/load.sql", tmp=scratch),
        r"script file /nonexistent/load.sql does not exist",
    )
    one_line_error(bench("--live", "websocket", tmp=scratch), r"unknown --live mode 'websocket'")
    one_line_error(
        bench("--server", "http://127.0.0.1:1", tmp=scratch), r"--server needs --database-url"
    )
    assert list(scratch.iterdir()) == []


def test_no_pgbench_tables_with_no_init(scratch: Path, database_url: str) -> None:
    result = bench("--database-url", database_url, "--no-init", tmp=scratch)
    one_line_error(
        result,
        r"the database has no pgbench tables \(pgbench_accounts, .* missing\): "
        r"drop --no-init to create them with pgbench -i",
    )
    assert leftovers(database_url) == []
    assert list(scratch.iterdir()) == []


@contextlib.contextmanager
def not_electric() -> Iterator[int]:
    """An HTTP server that answers, but not Electric's protocol (404 everywhere)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_server_that_does_not_answer_the_protocol(scratch: Path, database_url: str) -> None:
    port = free_port()
    result = bench(
        "--server", f"http://127.0.0.1:{port}", "--database-url", database_url, tmp=scratch
    )
    one_line_error(
        result,
        rf"--server http://127.0.0.1:{port} does not answer .*start the server or fix the URL",
    )
    with not_electric() as other:
        result = bench(
            "--server", f"http://127.0.0.1:{other}", "--database-url", database_url, tmp=scratch
        )
    one_line_error(
        result, rf"--server http://127.0.0.1:{other} does not speak Electric's HTTP Shape API"
    )
    assert leftovers(database_url) == []
    assert list(scratch.iterdir()) == []


def test_ctrl_c_leaves_nothing_behind(tmp_path: Path, scratch: Path, database_url: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pysync.cli",
            "bench",
            "--database-url",
            database_url,
            *TINY,
            "--duration",
            "6",
            "--out",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        # Interrupt once the sync phase runs (server, slots, subscribers, pgbench, all
        # there): it prints its first line as pgbench starts, and lasts 6 s.
        for line in proc.stdout:
            if line.startswith("sync"):
                break
        else:
            pytest.fail(f"no sync phase: {proc.stderr.read() if proc.stderr else ''}")
        with psycopg.connect(database_url) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_replication_slots "
                "WHERE starts_with(slot_name::text, 'pysync_bench_')"
            ).fetchone() != (0,)
        assert processes_under(scratch) != []
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        "pysync bench: interrupted; everything it started is stopped and removed"
    )
    assert leftovers(database_url) == []
    assert processes_under(scratch) == []
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_an_arrival_before_its_commit_time_is_noted_still_counts() -> None:
    """A subscriber can read a marker change before the marker thread, back from COMMIT,
    notes its time: the arrival waits for it instead of being lost (the latency sample
    count then falls short of the marker deliveries)."""
    from pysync.bench.sync_phase import ArrivalMatcher

    matcher = ArrivalMatcher()
    commits = {1: 10.0}
    first = matcher.match([(1, 10.002), (2, 10.052)], commits, 9.0)
    assert [(round(t, 3), round(ms, 3)) for t, ms in first] == [(1.0, 2.0)]
    commits[2] = 10.05
    later = matcher.match([], commits, 9.0)
    assert [(round(t, 3), round(ms, 3)) for t, ms in later] == [(1.05, 2.0)]
    assert matcher.unmatched == []


def test_mean_tps_counts_the_transactions_of_the_progress_reports() -> None:
    # (seconds since start, tps, latency ms): 100 + 300 + 0.5 * 200 transactions in 2.5 s.
    progress = [(1.0, 100.0, 5.0), (2.0, 300.0, 5.0), (2.5, 200.0, 5.0)]
    assert stats.mean_tps(progress) == pytest.approx(500 / 2.5)
    assert stats.mean_tps(progress[:1]) == 100.0
    assert stats.mean_tps([]) is None


def test_a_phase_with_nothing_to_say_prints_no_empty_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    display = Display()  # stdout is not a terminal here: lines, not a bar
    assert not display.console.is_terminal
    with display.phase("warm-up", 2, lambda: ""):
        display._last_print -= 10  # as if 10 s had passed since the last status line
        display.tick(1.0)
    with display.phase("none", 2, lambda: "tps 1,000"):
        pass
    assert capsys.readouterr().out.splitlines() == [
        "warm-up: 2 s",
        "warm-up 1 s",
        "none: 2 s",
        "none: tps 1,000",
    ]
