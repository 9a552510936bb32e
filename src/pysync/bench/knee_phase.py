"""The steps of ``pysync bench --find-knee`` (``knee.py`` decides the rates).

1. The baseline ladder: with only ``pg_recvlogical`` attached (its own slot and
   publication), pgbench at each ladder rate until it no longer reaches its ``-R``.
2. The sync server starts with ``--shapes`` shapes and ``--subscribers`` live
   subscribers (as in the ``sync`` phase), and runs the same ladder until a step
   breaks a limit or pgbench no longer reaches its ``-R`` (if the first step already
   breaks one, down the ladder to a rate that passes); then ``--knee-bisect`` steps
   between the last passing and the first failing rate.

Every step measures its committed row changes from a ``test_decoding`` slot created
right before it (row changes in the WAL over the seconds pgbench ran), its lag from the
sampler, and (sync steps) the marker's commit-to-client latency. After a sync step the
server must confirm the step's last WAL position before the next begins, so one
step's backlog never counts against the next; a server that does not within
``--check-timeout`` ends the search.
"""

from __future__ import annotations

import time
from typing import Any

from pysync.bench import expected as expected_changes
from pysync.bench import knee, stats
from pysync.bench.baseline import RecvLogical
from pysync.bench.context import RunContext
from pysync.bench.database import (
    PGBENCH_TABLES,
    create_publication,
    create_slot,
    drop_slot,
    reset_tables,
)
from pysync.bench.errors import BenchError
from pysync.bench.fleet import Fleet
from pysync.bench.load import Load
from pysync.bench.progress import fmt
from pysync.bench.server import ManagedServer, probe_shape
from pysync.bench.shapes import Matcher, assign, plan
from pysync.bench.sync_phase import ArrivalMatcher, catch_up


def run_knee(ctx: RunContext, search: knee.Plan, limits: knee.Limits) -> dict[str, Any]:
    """Both ladders and the bisection; the report's ``knee`` entry."""
    names = ctx.names
    published = {*PGBENCH_TABLES, names.marker_table}
    create_publication(ctx.conn, names.recv_publication, sorted(published))
    baseline = knee.climb(search, lambda rate, kind: _baseline_step(ctx, rate, kind, published))
    runner = _SyncSteps(ctx, published, limits)
    runner.start()
    sync = knee.search(search, runner.step)
    ctx.report["target"] = runner.target
    return {
        "plan": {
            "start": search.start,
            "factor": search.factor,
            "steps": search.steps,
            "bisect": search.bisect,
        },
        "baseline_steps": baseline,
        "sync_steps": sync,
        "summary": knee.summary(baseline, sync, limits),
    }


def _committed(counted: expected_changes.Expected, load: Load) -> dict[str, Any]:
    """The step's rate in row changes: pgbench's TPS (its per-second reports) times the
    row changes per transaction in the step's WAL (the marker's included). The WAL's
    count over the whole phase would be divided by pgbench's start-up too."""
    assert load.result is not None
    tps = stats.mean_tps(load.result.progress)
    per_transaction = counted.row_changes / max(1, load.result.transactions)
    return {
        "tps": tps,
        "transactions": load.result.transactions,
        "row_changes": counted.row_changes,
        "row_changes_per_transaction": round(per_transaction, 3),
        "committed_per_s": (tps or 0.0) * per_transaction,
    }


def _baseline_step(ctx: RunContext, rate: float, kind: str, published: set[str]) -> dict[str, Any]:
    names = ctx.names
    reset_tables(ctx.conn)
    create_slot(ctx.conn, names.recv_slot)
    create_slot(ctx.conn, names.verify_slot, "test_decoding")
    recv = RecvLogical(ctx.recv_binary, ctx.url, names.recv_slot, names.recv_publication)
    try:
        recv.wait_attached(ctx.conn)
        load = Load(
            ctx,
            f"recv -R {rate:g}",
            ctx.opts.duration,
            slot=names.recv_slot,
            processes={"consumer": recv.pid},
            rate=rate,
        )
        result = load.run(load.status)
    finally:
        recv.stop()
        drop_slot(ctx.conn, names.recv_slot)
    samples = load.samples()
    summary = load.summary(samples)
    counted = expected_changes.count(ctx.url, names.verify_slot, Matcher([]), published)
    drop_slot(ctx.conn, names.verify_slot)
    step = {
        "rate": rate,
        "kind": kind,
        "attached": "pg_recvlogical",
        **_committed(counted, load),
        "lag_max_s": summary["lag_max_s"],
        "lag_max_bytes": summary["lag_max_bytes"],
        "failed_transactions": result.failed,
    }
    step["reached"] = knee.reached(step)
    ctx.display.note(
        f"  pg_recvlogical -R {rate:g}: {fmt(step['tps'], ',.0f')} TPS, "
        f"{step['committed_per_s']:,.0f} row changes/s, lag max "
        f"{fmt(step['lag_max_s'], '.2f', ' s')}"
    )
    return step


class _SyncSteps:
    """The managed server and its subscribers, started once, and one step at a time."""

    def __init__(self, ctx: RunContext, published: set[str], limits: knee.Limits) -> None:
        self.ctx = ctx
        self.published = published
        self.limits = limits
        self.target: dict[str, Any] = {}

    def start(self) -> None:
        ctx, opts, names = self.ctx, self.ctx.opts, self.ctx.names
        reset_tables(ctx.conn)  # the last TRUNCATE before shapes exist
        ctx.server = server = ManagedServer(
            ctx.url,
            ctx.tmp / "storage",
            ctx.tmp / "server.log",
            slot=names.engine_slot,
            publication=names.engine_publication,
            long_poll_timeout=opts.long_poll_timeout,
        )
        ctx.stack.callback(server.stop)
        ctx.display.note("starting pysync serve")
        server.start()
        name = probe_shape(server.url, names.marker_table, None)
        self.target = {
            "server": name,
            "url": server.url,
            "managed": True,
            "slot": names.engine_slot,
            "live": opts.live,
        }
        shapes = plan(opts.shapes, ctx.scale, names.marker_table)
        subscribers = assign(shapes, opts.subscribers, opts.marker_subscribers)
        ctx.display.note(
            f"creating {len(shapes):,} shapes on {name}, "
            f"{len(subscribers):,} subscribers ({opts.live})"
        )
        self.fleet = Fleet(
            server=server.url,
            secret=None,
            live=opts.live,
            database_url=ctx.url,
            shapes=shapes,
            subscribers=subscribers,
            workdir=ctx.tmp,
        )
        ctx.stack.callback(self.fleet.stop)
        ready = self.fleet.wait_ready(600 + len(shapes) * 0.1)
        ctx.display.note(f"  synced in {ready['seconds']:.1f} s")

    def step(self, rate: float, kind: str) -> dict[str, Any]:
        ctx, opts, names, fleet = self.ctx, self.ctx.opts, self.ctx.names, self.fleet
        assert ctx.server is not None
        # What pgbench does before a run, but the TRUNCATE: it would end the shapes.
        ctx.conn.execute("VACUUM pgbench_branches, pgbench_tellers")
        create_slot(ctx.conn, names.verify_slot, "test_decoding")
        fleet.take_arrivals()  # a marker of an earlier step must not count here
        load = Load(
            ctx,
            f"sync -R {rate:g}",
            opts.duration,
            slot=names.engine_slot,
            processes={"engine": ctx.server.pid, "subscribers": fleet.pid},
            rate=rate,
        )
        latencies: list[float] = []
        matcher = ArrivalMatcher()

        def collect() -> None:
            commits = load.marker.commits if load.marker else {}
            arrived = matcher.match(fleet.take_arrivals(), commits, load.sampler.started)
            latencies.extend(ms for _, ms in arrived)

        def status() -> str:
            collect()
            return f"{load.status()}  p99 {fmt(stats.percentile(latencies, 99), '.1f', ' ms')}"

        result = load.run(status, fleet.failure)
        caught_up = catch_up(
            ctx, names.engine_slot, load.wal_at_end, opts.check_timeout, quiet=True
        )
        markers = len(load.marker.commits) if load.marker else 0
        wanted = markers * opts.marker_subscribers
        # The last markers reach the subscribers just after the server confirmed them.
        deadline = time.monotonic() + 5
        collect()
        while caught_up is not None and len(latencies) < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
            collect()
        samples = load.samples()
        summary = load.summary(samples)
        counted = expected_changes.count(ctx.url, names.verify_slot, Matcher([]), self.published)
        drop_slot(ctx.conn, names.verify_slot)
        during = [s for s in samples if s["t"] <= load.load_end + 0.01]
        step: dict[str, Any] = {
            "rate": rate,
            "kind": kind,
            "attached": self.target["server"],
            **_committed(counted, load),
            "lag_max_s": summary["lag_max_s"],
            "lag_max_bytes": summary["lag_max_bytes"],
            "p50_ms": stats.percentile(latencies, 50),
            "p99_ms": stats.percentile(latencies, 99),
            "max_ms": max(latencies) if latencies else None,
            "latency_samples": len(latencies),
            "expected_samples": wanted,
            "caught_up": caught_up is not None,
            "caught_up_after_s": caught_up,
            "engine_cpu_s": stats.delta(during, "engine_cpu_s"),
            "subscribers_cpu_s": stats.delta(during, "subscribers_cpu_s"),
            "failed_transactions": result.failed,
        }
        broken = knee.verdict(step, self.limits)
        if len(latencies) < wanted:
            broken.append("markers missing")  # a marker never seen is later than any limit
        step["broken"] = broken
        step["passed"] = not broken
        step["reached"] = knee.reached(step)
        ctx.display.note(
            f"  {self.target['server']} -R {rate:g} ({kind}): {fmt(step['tps'], ',.0f')} TPS, "
            f"{step['committed_per_s']:,.0f} row changes/s, lag max "
            f"{fmt(step['lag_max_s'], '.2f', ' s')}, p99 {fmt(step['p99_ms'], '.1f', ' ms')}: "
            + ("within the limits" if not broken else "broke " + ", ".join(broken))
        )
        problem = fleet.failure()
        if problem:
            raise BenchError(problem)
        return step
