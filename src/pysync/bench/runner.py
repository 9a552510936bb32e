"""One benchmark run, phase by phase.

1. Setup: the database (a private throwaway Postgres unless ``--database-url``),
   ``pgbench -i``, full replica identity on the pgbench tables, the marker table.
2. Warm-up: pgbench for ``--warmup`` seconds, not measured.
3. ``none``: pgbench with nothing attached (managed server only).
4. ``recvlogical``: pgbench with ``pg_recvlogical`` attached to its own slot.
5. ``sync``: the sync server with ``--shapes`` shapes and ``--subscribers`` live
   subscribers; pgbench, the marker writer and the sampler run; then the subscribers
   must converge to ``SELECT`` of their shapes, and their deliveries are compared with
   the changes decoded from a ``test_decoding`` slot.
6. ``drain``: with the server stopped, pgbench writes a backlog; ``pg_recvlogical`` and
   then pysync (restarted on its slot, every shape still there) drain it, each timed
   from attaching to its slot to confirming the end of the backlog.

Phases 3, 4 and 6 need the managed server; with ``--server`` only the HTTP-side
measures (latency, deliveries, consistency) and the run's TPS apply.
Every process, slot, publication, table and directory the run creates is removed on
the way out, also after an error or Ctrl-C (an ExitStack unwinds in reverse order:
subscribers, server, then its slot, then the Postgres, then the directory).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysync import __version__
from pysync.bench import expected as expected_changes
from pysync.bench import stats
from pysync.bench.baseline import RecvLogical, recvlogical_binary
from pysync.bench.database import (
    PGBENCH_TABLES,
    Conn,
    Names,
    check_logical,
    cleanup,
    connect,
    create_publication,
    create_slot,
    drop_slot,
    end_backlog,
    pgbench_scale,
    prepare_tables,
    reset_tables,
    scalar,
    slot_state,
    wal_lsn,
)
from pysync.bench.errors import BenchError
from pysync.bench.fleet import Fleet
from pysync.bench.marker import MarkerWriter
from pysync.bench.options import Options
from pysync.bench.progress import Display
from pysync.bench.sampler import Sampler, peak_rss
from pysync.bench.server import ManagedServer, probe_health, probe_shape
from pysync.bench.shapes import Matcher, ShapeSpec, assign, plan
from pysync.bench.workload import Pgbench, PgbenchResult, initialise, pgbench_binary
from pysync.postgres.cluster import ClusterError, PostgresCluster


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


class Load:
    """One timed pgbench phase with the marker writer and the sampler running."""

    def __init__(self, bench: Bench, name: str, seconds: float, *, slot: str | None,
                 processes: dict[str, int | None], probes: dict[str, Callable[[], Any]] | None = None,
                 marker: bool = True) -> None:
        self.bench = bench
        self.name = name
        self.seconds = seconds
        self.pgbench: Pgbench | None = None
        self.sampler = Sampler(
            bench.url, slot, bench.opts.sample_interval,
            processes={**processes, "postgres": bench.postgres_pid},
            probes={"tps": lambda: self.pgbench.latest_tps if self.pgbench else None, **(probes or {})},
        )
        self.marker = MarkerWriter(bench.url, bench.names.marker_table, bench.opts.marker_interval,
                                   bench.seq) if marker else None
        self.result: PgbenchResult | None = None
        self.load_end = 0.0
        self.wal_at_end = 0

    def run(self, status: Callable[[], str], failure: Callable[[], str | None] = lambda: None) -> PgbenchResult:
        self.sampler.start()
        if self.marker is not None:
            self.marker.start()
        try:
            self.pgbench = Pgbench(self.bench.pgbench, self.bench.url, self.bench.opts, self.seconds)
            with self.bench.display.phase(self.name, self.seconds, status):
                while self.pgbench.running():
                    time.sleep(0.25)
                    self.bench.display.tick(time.monotonic() - self.pgbench.started)
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
                self.bench.seq = self.marker.seq
        self.load_end = time.monotonic() - self.sampler.started
        self.wal_at_end = wal_lsn(self.bench.conn)
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
        parts = [f"tps {_fmt(self.pgbench.latest_tps if self.pgbench else None, ',.0f')}"]
        latest = self.sampler.latest
        if latest is not None and latest.get("lag_bytes") is not None:
            lag = stats.lag_seconds(self.sampler.samples[-240:])[-1]
            parts.append(f"lag {_fmt(lag, '.2f', ' s')} {latest['lag_bytes'] / 1e6:.1f} MB")
        return "  ".join(parts)

    def summary(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.result is not None
        during = [s for s in samples if s["t"] <= self.load_end + 0.01]
        lag_s = [s["lag_s"] for s in during if s.get("lag_s") is not None]
        lag_b = [s["lag_bytes"] for s in during if s.get("lag_bytes") is not None]
        flush = [s["flush_lag_s"] for s in during if s.get("flush_lag_s") is not None]
        return {
            "tps": self.result.tps, "transactions": self.result.transactions,
            "failed": self.result.failed, "pgbench_latency_ms": self.result.latency_ms,
            "seconds": self.seconds, "load_end_s": round(self.load_end, 3),
            "lag_max_s": max(lag_s) if lag_s else None,
            "lag_p99_s": stats.percentile(lag_s, 99),
            "lag_max_bytes": max(lag_b) if lag_b else None,
            "flush_lag_max_s": max(flush) if flush else None,
            "wal_bytes": during[-1]["wal_lsn"] - during[0]["wal_lsn"] if len(during) >= 2 else None,
            "machine_cpu_s": stats.delta(during, "machine_cpu_s"),
            "postgres_cpu_s": stats.delta(during, "postgres_cpu_s"),
        }


class Bench:
    def __init__(self, opts: Options, display: Display, command: str) -> None:
        self.opts = opts
        self.display = display
        self.names = Names(opts.run_id)
        self.stack = contextlib.ExitStack()
        self.seq = 0
        self.url = ""
        self.postgres_pid: int | None = None
        self.pgbench = pgbench_binary(opts)
        self.report: dict[str, Any] = {
            "version": 1, "command": command,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(), "python": platform.python_version(),
                "pysync": __version__,
                "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            },
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
            "phases": {},
        }

    # -- the run ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        with self.stack:
            started = time.monotonic()
            self._setup()
            if self.opts.warmup > 0:
                reset_tables(self.conn)
                warm = Pgbench(self.pgbench, self.url, self.opts, self.opts.warmup)
                try:
                    with self.display.phase("warm-up", self.opts.warmup, lambda: ""):
                        while warm.running():
                            time.sleep(0.25)
                            self.display.tick(time.monotonic() - warm.started)
                        warm.wait()
                finally:
                    warm.stop()
            if self.opts.managed_server:
                self._alone()
                self._recvlogical()
            self._sync()
            if self.opts.managed_server and self.opts.backlog > 0:
                self._drain()
            self.report["seconds"] = round(time.monotonic() - started, 1)
        self.report["summary"] = self._headline()
        return self.report

    def _setup(self) -> None:
        opts = self.opts
        tmp = Path(tempfile.mkdtemp(prefix="pysync-bench-"))
        self.stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        self.tmp = tmp
        if opts.server is not None:
            probe_health(opts.server)  # before anything expensive
        if opts.managed_server:
            self.recv_binary = recvlogical_binary(opts.pgbench)
        if opts.database_url is None:
            self.display.note("starting a private Postgres (wal_level=logical)")
            root = tmp
            if len(str(tmp)) > 60:
                # Its Unix socket lives in the directory, and socket paths are limited to
                # about 100 bytes: a long TMPDIR gets a short directory in /tmp instead.
                root = Path(tempfile.mkdtemp(prefix="pysync-bench-pg-", dir="/tmp"))
                self.stack.callback(shutil.rmtree, root, ignore_errors=True)
            cluster = PostgresCluster(root / "postgres", fast=True)
            self.stack.callback(cluster.destroy)
            try:
                cluster.start()
            except ClusterError as exc:
                lines = [line for line in str(exc).splitlines() if line.strip()]
                raise BenchError(f"the private Postgres did not start: {lines[0]} ({lines[-1].strip()})") from exc
            self.url = cluster.url()
            self.postgres_pid = cluster.pid
            database = "private (throwaway, fsync off)"
        else:
            self.url = opts.database_url
            database = "--database-url"
        self.conn: Conn = connect(self.url)
        self.stack.callback(self.conn.close)
        check_logical(self.conn)
        if opts.init:
            self.display.note(f"pgbench -i -s {opts.scale}")
            self.report["init_seconds"] = round(initialise(self.pgbench, self.url, opts.scale), 2)
        self.scale = pgbench_scale(self.conn)
        if opts.database_url is not None:
            self.stack.callback(self._cleanup_database)
        prepare_tables(self.conn, self.names.marker_table)
        self.report["database"] = {
            "kind": database, "server_version": scalar(self.conn, "SHOW server_version"),
            "scale": self.scale,
        }

    def _cleanup_database(self) -> None:
        for problem in cleanup(self.url, self.names, marker=True):
            self.display.note(f"[yellow]cleanup: {problem}")

    def _phase(self, load: Load, attached: str) -> dict[str, Any]:
        samples = load.samples()
        phase = {"attached": attached, "summary": load.summary(samples), "samples": samples,
                 "pgbench_progress": load.result.progress if load.result else []}
        self.report["phases"][load.name] = phase
        return phase

    def _alone(self) -> None:
        reset_tables(self.conn)
        load = Load(self, "none", self.opts.duration, slot=None, processes={})
        load.run(load.status)
        self._phase(load, "nothing")

    def _recvlogical(self) -> None:
        names = self.names
        create_publication(self.conn, names.recv_publication, [*PGBENCH_TABLES, names.marker_table])
        reset_tables(self.conn)
        create_slot(self.conn, names.recv_slot)
        recv = RecvLogical(self.recv_binary, self.url, names.recv_slot, names.recv_publication)
        try:
            recv.wait_attached(self.conn)
            load = Load(self, "recvlogical", self.opts.duration, slot=names.recv_slot,
                        processes={"consumer": recv.pid})
            load.run(load.status)
        finally:
            recv.stop()
            drop_slot(self.conn, names.recv_slot)
        self._phase(load, "pg_recvlogical")

    # -- the sync phase ---------------------------------------------------------------

    def _sync(self) -> None:
        opts, names = self.opts, self.names
        reset_tables(self.conn)
        self.server: ManagedServer | None = None
        slot: str | None
        if opts.managed_server:
            self.server = ManagedServer(
                self.url, self.tmp / "storage", self.tmp / "server.log", slot=names.engine_slot,
                publication=names.engine_publication, long_poll_timeout=opts.long_poll_timeout)
            self.stack.callback(self.server.stop)
            self.display.note("starting pysync serve")
            self.server.start()
            base, slot, engine_pid = self.server.url, names.engine_slot, self.server.pid
        else:
            assert opts.server is not None
            base, slot, engine_pid = opts.server, opts.server_slot, None
        if not opts.managed_server and slot is not None:
            # A server still behind the TRUNCATE above could apply it to the new shapes
            # on pgbench_history: let it pass that point first.
            self._catch_up(slot, wal_lsn(self.conn), 10, quiet=True)
        server_name = probe_shape(base, names.marker_table, opts.secret)
        self.report["target"] = {"server": server_name, "url": base, "managed": opts.managed_server,
                                 "slot": slot, "live": opts.live}
        shapes = plan(opts.shapes, self.scale, names.marker_table)
        subscribers = assign(shapes, opts.subscribers, opts.marker_subscribers)
        self.display.note(f"creating {len(shapes):,} shapes on {server_name}, "
                          f"{len(subscribers):,} subscribers ({opts.live})")
        fleet = Fleet(server=base, secret=opts.secret, live=opts.live, database_url=self.url,
                      shapes=shapes, subscribers=subscribers, workdir=self.tmp)
        self.stack.callback(fleet.stop)
        ready = fleet.wait_ready(600 + len(shapes) * 0.1)
        self.display.note(f"  synced in {ready['seconds']:.1f} s "
                          f"({ready['subscribed_rows']:,} rows held by subscribers)")
        create_slot(self.conn, names.verify_slot, "test_decoding")
        probes = {"deliveries": lambda: fleet.stats.get("deliveries"),
                  "responses": lambda: fleet.stats.get("responses")}
        load = Load(self, "sync", opts.duration, slot=slot,
                    processes={"engine": engine_pid, "subscribers": fleet.pid}, probes=probes)
        latencies: list[tuple[float, float]] = []

        def collect() -> None:
            commits = load.marker.commits if load.marker else {}
            for seq, arrived in fleet.take_arrivals():
                committed = commits.get(seq)
                if committed is not None:
                    latencies.append((committed - load.sampler.started, (arrived - committed) * 1000))

        def status() -> str:
            collect()
            recent = [ms for t, ms in latencies[-2000:]]
            latest = load.sampler.latest or {}
            messages = stats.rates(load.sampler.samples[-2:], "deliveries")[-1] if len(load.sampler.samples) >= 2 else None
            cpu = stats.rates(load.sampler.samples[-3:], "engine_cpu_s")[-1] if len(load.sampler.samples) >= 2 else None
            text = (f"{load.status()}  p99 {_fmt(stats.percentile(recent, 99), '.1f', ' ms')}"
                    f"  msgs {_fmt(messages, ',.0f', '/s')}")
            if latest.get("engine_cpu_s") is not None:
                text += f"  engine CPU {_fmt(None if cpu is None else cpu * 100, '.0f', '%')}"
            return text

        load.run(status, fleet.failure)
        caught_up = None
        if slot is not None:
            limit = opts.check_timeout + 10 * opts.duration
            caught_up = self._catch_up(slot, load.wal_at_end, limit)
            self.display.note(f"  caught up in {caught_up:.2f} s" if caught_up is not None else
                              f"  [yellow]the server did not catch up (within {limit:g} s, or it "
                              "stopped moving for 30 s); the check below will likely fail")
        self.display.note(f"  waiting for the subscribers to match SELECT of their shapes "
                          f"(at most {opts.check_timeout:g} s)")
        check = fleet.check(opts.check_timeout)
        collect()
        engine_peak = peak_rss(engine_pid) if engine_pid is not None else None
        phase = self._phase(load, server_name)
        self.display.note("  counting the changes each shape had to deliver (test_decoding)")
        distinct = list({s.id: s for s in subscribers}.values())
        published = {*PGBENCH_TABLES, names.marker_table}
        counted = expected_changes.count(self.url, names.verify_slot, Matcher(distinct), published)
        drop_slot(self.conn, names.verify_slot)
        final = fleet.stop()
        self._sync_summary(phase, load, subscribers, check, counted, latencies, ready, final, engine_peak)
        phase["summary"]["caught_up_after_s"] = caught_up

    def _catch_up(self, slot: str, target: int, timeout: float, *, quiet: bool = False) -> float | None:
        """Seconds until the slot confirms ``target`` (the WAL position when the load
        ended); None if it did not within ``timeout`` or stopped moving for 30 s."""
        started = moved = time.monotonic()
        last = -1
        if not quiet:
            self.display.note("  load done; waiting for the server to catch up")
        while time.monotonic() - started < timeout and time.monotonic() - moved < 30:
            confirmed = slot_state(self.conn, slot)[1]
            if confirmed is not None and confirmed >= target:
                return round(time.monotonic() - started, 3)
            if confirmed is not None and confirmed > last:
                last, moved = confirmed, time.monotonic()
            time.sleep(0.01)
        return None

    def _sync_summary(self, phase: dict[str, Any], load: Load, subscribers: list[ShapeSpec],
                      check: dict[str, Any], counted: expected_changes.Expected,
                      latencies: list[tuple[float, float]], ready: dict[str, Any],
                      final: dict[str, Any] | None, engine_peak: int | None) -> None:
        samples = phase["samples"]
        for sample in samples:
            if sample.get("confirmed_lsn") is not None:
                sample["ingested_changes"] = counted.changes_at(sample["confirmed_lsn"])
            sample["committed_changes"] = counted.changes_at(sample["wal_lsn"])
        for name in ("ingested_changes", "committed_changes", "deliveries"):
            for sample, rate in zip(samples, stats.rates(samples, name), strict=True):
                sample[name.replace("_changes", "") + "_per_s"] = rate
        during = [s for s in samples if s["t"] <= load.load_end + 0.01]
        delivered = check["deliveries"]
        wanted = [counted.per_shape.get(s.id, 0) for s in subscribers]
        wrong = [{"subscriber": i, "shape": s.describe(), "delivered": d, "expected": w}
                 for i, (s, d, w) in enumerate(zip(subscribers, delivered, wanted, strict=True)) if d != w]
        by_kind: dict[str, dict[str, int]] = {}
        for s, d, w in zip(subscribers, delivered, wanted, strict=True):
            entry = by_kind.setdefault(s.kind, {"subscribers": 0, "delivered": 0, "expected": 0})
            entry["subscribers"] += 1
            entry["delivered"] += d
            entry["expected"] += w
        ms = [m for _, m in latencies]
        markers = len(load.marker.commits) if load.marker else 0
        engine_cpu = stats.delta(during, "engine_cpu_s")
        ingested = stats.delta(during, "ingested_changes")
        summary = phase["summary"]
        summary.update({
            "shapes": self.opts.shapes, "subscribers": len(subscribers),
            "sync_seconds": round(ready["seconds"], 2),
            "latency": {
                "p50_ms": stats.percentile(ms, 50), "p95_ms": stats.percentile(ms, 95),
                "p99_ms": stats.percentile(ms, 99), "max_ms": max(ms) if ms else None,
                "samples": len(ms), "expected_samples": markers * self.opts.marker_subscribers,
                "markers": markers,
            },
            "deliveries": {
                "delivered": sum(delivered), "expected": sum(wanted), "ok": not wrong and not counted.truncated,
                "mismatched": wrong[:10], "mismatched_count": len(wrong), "by_kind": by_kind,
                "truncated_tables": sorted(counted.truncated),
            },
            "consistency": {k: check[k] for k in ("ok", "seconds", "mismatched", "mismatched_count", "rows_checked")},
            "messages_per_s": stats.summary([s.get("deliveries_per_s") for s in during]),
            "row_changes": counted.row_changes, "transactions_decoded": counted.transactions,
            "ingested_per_s": stats.summary([s.get("ingested_per_s") for s in during]),
            "committed_per_s": stats.summary([s.get("committed_per_s") for s in during]),
            "engine_cpu_s": engine_cpu,
            "ingested_during_load": ingested,
            # Per row change it ingested meanwhile (not per change committed: a server
            # that falls behind would look cheap).
            "engine_cpu_us_per_change": (engine_cpu / ingested * 1e6 if engine_cpu is not None and ingested else None),
            "engine_peak_rss": engine_peak,
            "subscribers_cpu_s": stats.delta(during, "subscribers_cpu_s"),
            "subscriber_errors": (final or {}).get("errors", []),
            "refetches": (final or {}).get("refetches"),
        })
        phase["latency_windows"] = stats.latency_windows(latencies)

    # -- the backlog drain -----------------------------------------------------------

    def _drain(self) -> None:
        assert self.server is not None
        names, conn, opts = self.names, self.conn, self.opts
        self.server.stop()
        create_slot(conn, names.drain_slot)
        create_slot(conn, names.verify_slot, "test_decoding")
        start = wal_lsn(conn)
        load = Load(self, "backlog", opts.backlog, slot=None, processes={}, marker=False)
        load.run(load.status)
        self._phase(load, "nothing (the server is stopped)")
        end = end_backlog(conn)
        backlog = expected_changes.count(self.url, names.verify_slot, Matcher([]),
                                         {*PGBENCH_TABLES, names.marker_table})
        drop_slot(conn, names.verify_slot)
        rows = backlog.row_changes
        self.display.note(f"  backlog: {rows:,} row changes, {(end - start) / 1e6:.1f} MB of WAL")
        recv = RecvLogical(self.recv_binary, self.url, names.drain_slot, names.recv_publication, endpos=end)
        try:
            recv_drain = self._time_drain(names.drain_slot, end, recv.proc.poll, "pg_recvlogical",
                                          opts.drain_timeout)
        finally:
            recv.stop()
        self.server.launch()
        try:
            pysync_drain = self._time_drain(names.engine_slot, end, self.server.proc_poll, "pysync serve",
                                            opts.drain_timeout)
        finally:
            self.server.stop()
        result: dict[str, Any] = {"backlog_seconds": opts.backlog, "row_changes": rows,
                                  "wal_bytes": end - start,
                                  "backlog_tps": load.result.tps if load.result else None}
        for who, (seconds, confirmed) in (("recvlogical", recv_drain), ("pysync", pysync_drain)):
            drained = rows if confirmed >= end else backlog.changes_at(confirmed)
            result[f"{who}_s"] = round(seconds, 3)
            result[f"{who}_complete"] = confirmed >= end
            result[f"{who}_drained"] = drained
            result[f"{who}_per_s"] = drained / seconds if seconds > 0 else None
        result["ratio"] = stats.ratio(result["pysync_per_s"], result["recvlogical_per_s"])
        self.report["drain"] = result
        parts = []
        for who, name in (("recvlogical", "pg_recvlogical"), ("pysync", "pysync")):
            done = "" if result[f"{who}_complete"] else f" (stopped at {result[f'{who}_drained']:,} rows)"
            parts.append(f"{name} {result[f'{who}_s']:.2f} s{done}")
        self.display.note(f"  drained by {', '.join(parts)}: ratio {_fmt(result['ratio'], '.2f')}")

    def _time_drain(self, slot: str, end: int, exited: Callable[[], int | None], who: str,
                    timeout: float) -> tuple[float, int]:
        """Drain time from the slot becoming active to it confirming ``end``, and the
        position confirmed then; at most ``timeout`` seconds after attaching."""
        attach_deadline = time.monotonic() + 120
        attached: float | None = None
        confirmed = 0
        while True:
            active, position = slot_state(self.conn, slot)
            now = time.monotonic()
            confirmed = position or 0
            if attached is None and active:
                attached = now
            if confirmed >= end:
                return now - (attached if attached is not None else now), confirmed
            if attached is not None and now - attached >= timeout:
                return now - attached, confirmed
            if exited() is not None and not active:
                raise BenchError(f"{who} ended before draining the backlog")
            if attached is None and now > attach_deadline:
                raise BenchError(f"{who} did not attach to its slot within 120 s")
            time.sleep(0.005)

    # -- the headline -----------------------------------------------------------------

    def _headline(self) -> dict[str, Any]:
        phases = self.report["phases"]
        sync = phases.get("sync", {}).get("summary", {})
        none = phases.get("none", {}).get("summary", {})
        recv = phases.get("recvlogical", {}).get("summary", {})
        latency = sync.get("latency", {})
        return {
            "server": self.report.get("target", {}).get("server"),
            "tps_none": none.get("tps"), "tps_recvlogical": recv.get("tps"), "tps_sync": sync.get("tps"),
            "tps_ratio": stats.ratio(sync.get("tps"), recv.get("tps")),
            "tps_ratio_none": stats.ratio(sync.get("tps"), none.get("tps")),
            "recvlogical_ratio_none": stats.ratio(recv.get("tps"), none.get("tps")),
            "lag_max_s": sync.get("lag_max_s"), "lag_max_bytes": sync.get("lag_max_bytes"),
            "p50_ms": latency.get("p50_ms"), "p99_ms": latency.get("p99_ms"),
            "max_ms": latency.get("max_ms"),
            "drain_ratio": self.report.get("drain", {}).get("ratio"),
            "consistent": sync.get("consistency", {}).get("ok"),
            "deliveries_ok": sync.get("deliveries", {}).get("ok"),
        }


def headline_line(summary: dict[str, Any]) -> str:
    """The last line of every run."""
    return (f"bench overhead tps-ratio {_fmt(summary.get('tps_ratio'), '.2f')} "
            f"lag-max {_fmt(summary.get('lag_max_s'), '.2f')} s "
            f"p99 {_fmt(summary.get('p99_ms'), '.1f')} ms")


def command_line() -> str:
    return shlex.join(["pysync", *sys.argv[1:]])
