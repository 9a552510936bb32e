"""The ``sync`` phase: the sync server with ``--shapes`` shapes and ``--subscribers`` live
subscribers; pgbench, the marker writer and the sampler run; then the subscribers must
converge to ``SELECT`` of their shapes, and their deliveries are compared with the
changes decoded from a ``test_decoding`` slot."""

from __future__ import annotations

import time
from typing import Any

from pysync.bench import expected as expected_changes
from pysync.bench import profile, stats
from pysync.bench.context import RunContext
from pysync.bench.database import (
    PGBENCH_TABLES,
    create_slot,
    drop_slot,
    reset_tables,
    slot_state,
    wal_lsn,
)
from pysync.bench.fleet import Fleet
from pysync.bench.load import Load
from pysync.bench.progress import fmt
from pysync.bench.sampler import peak_rss
from pysync.bench.server import ManagedServer, probe_shape
from pysync.bench.shapes import Matcher, ShapeSpec, assign, plan


def run_sync(ctx: RunContext) -> None:
    opts, names = ctx.opts, ctx.names
    reset_tables(ctx.conn)
    slot: str | None
    if opts.managed_server:
        ctx.server = ManagedServer(
            ctx.url,
            ctx.tmp / "storage",
            ctx.tmp / "server.log",
            slot=names.engine_slot,
            publication=names.engine_publication,
            long_poll_timeout=opts.long_poll_timeout,
        )
        ctx.stack.callback(ctx.server.stop)
        ctx.display.note("starting pysync serve")
        ctx.server.start()
        base, slot, engine_pid = ctx.server.url, names.engine_slot, ctx.server.pid
    else:
        assert opts.server is not None
        base, slot, engine_pid = opts.server, opts.server_slot, None
    if not opts.managed_server and slot is not None:
        # A server still behind the TRUNCATE above could apply it to the new shapes
        # on pgbench_history: let it pass that point first.
        catch_up(ctx, slot, wal_lsn(ctx.conn), 10, quiet=True)
    server_name = probe_shape(base, names.marker_table, opts.secret)
    ctx.report["target"] = {
        "server": server_name,
        "url": base,
        "managed": opts.managed_server,
        "slot": slot,
        "live": opts.live,
    }
    shapes = plan(opts.shapes, ctx.scale, names.marker_table)
    subscribers = assign(shapes, opts.subscribers, opts.marker_subscribers)
    ctx.display.note(
        f"creating {len(shapes):,} shapes on {server_name}, "
        f"{len(subscribers):,} subscribers ({opts.live})"
    )
    fleet = Fleet(
        server=base,
        secret=opts.secret,
        live=opts.live,
        database_url=ctx.url,
        shapes=shapes,
        subscribers=subscribers,
        workdir=ctx.tmp,
    )
    ctx.stack.callback(fleet.stop)
    ready = fleet.wait_ready(600 + len(shapes) * 0.1)
    ctx.display.note(
        f"  synced in {ready['seconds']:.1f} s "
        f"({ready['subscribed_rows']:,} rows held by subscribers)"
    )
    create_slot(ctx.conn, names.verify_slot, "test_decoding")
    probes = {
        "deliveries": lambda: fleet.stats.get("deliveries"),
        "responses": lambda: fleet.stats.get("responses"),
    }
    load = Load(
        ctx,
        "sync",
        opts.duration,
        slot=slot,
        processes={"engine": engine_pid, "subscribers": fleet.pid},
        probes=probes,
    )
    latencies: list[tuple[float, float]] = []
    matcher = ArrivalMatcher()

    def collect() -> None:
        commits = load.marker.commits if load.marker else {}
        latencies.extend(matcher.match(fleet.take_arrivals(), commits, load.sampler.started))

    def status() -> str:
        collect()
        recent = [ms for t, ms in latencies[-2000:]]
        latest = load.sampler.latest or {}
        messages = (
            stats.rates(load.sampler.samples[-2:], "deliveries")[-1]
            if len(load.sampler.samples) >= 2
            else None
        )
        cpu = (
            stats.rates(load.sampler.samples[-3:], "engine_cpu_s")[-1]
            if len(load.sampler.samples) >= 2
            else None
        )
        text = (
            f"{load.status()}  p99 {fmt(stats.percentile(recent, 99), '.1f', ' ms')}"
            f"  msgs {fmt(messages, ',.0f', '/s')}"
        )
        if latest.get("engine_cpu_s") is not None:
            text += f"  engine CPU {fmt(None if cpu is None else cpu * 100, '.0f', '%')}"
        return text

    recordings = (
        profile.start(
            {"engine": engine_pid, "subscribers": fleet.pid},
            opts.duration,
            opts.profile_rate,
            opts.out / "profile",
        )
        if opts.profile
        else []
    )
    load.run(status, fleet.failure)
    caught_up = None
    if slot is not None:
        limit = opts.check_timeout + 10 * opts.duration
        caught_up = catch_up(ctx, slot, load.wal_at_end, limit)
        ctx.display.note(
            f"  caught up in {caught_up:.2f} s"
            if caught_up is not None
            else f"  [yellow]the server did not catch up (within {limit:g} s, or it "
            "stopped moving for 30 s); the check below will likely fail"
        )
    ctx.display.note(
        f"  waiting for the subscribers to match SELECT of their shapes "
        f"(at most {opts.check_timeout:g} s)"
    )
    check = fleet.check(opts.check_timeout)
    collect()
    engine_peak = peak_rss(engine_pid) if engine_pid is not None else None
    phase = load.record(server_name)
    ctx.display.note("  counting the changes each shape had to deliver (test_decoding)")
    distinct = list({s.id: s for s in subscribers}.values())
    published = {*PGBENCH_TABLES, names.marker_table}
    counted = expected_changes.count(ctx.url, names.verify_slot, Matcher(distinct), published)
    drop_slot(ctx.conn, names.verify_slot)
    final = fleet.stop()
    _summarise(ctx, phase, load, subscribers, check, counted, latencies, ready, final, engine_peak)
    phase["summary"]["caught_up_after_s"] = caught_up
    if recordings:
        phase["profile"] = profile.finish(recordings, phase["summary"], timeout=30)


def catch_up(
    ctx: RunContext, slot: str, target: int, timeout: float, *, quiet: bool = False
) -> float | None:
    """Seconds until the slot confirms ``target`` (the WAL position when the load
    ended); None if it did not within ``timeout`` or stopped moving for 30 s."""
    started = moved = time.monotonic()
    last = -1
    if not quiet:
        ctx.display.note("  load done; waiting for the server to catch up")
    while time.monotonic() - started < timeout and time.monotonic() - moved < 30:
        confirmed = slot_state(ctx.conn, slot)[1]
        if confirmed is not None and confirmed >= target:
            return round(time.monotonic() - started, 3)
        if confirmed is not None and confirmed > last:
            last, moved = confirmed, time.monotonic()
        time.sleep(0.01)
    return None


def _summarise(
    ctx: RunContext,
    phase: dict[str, Any],
    load: Load,
    subscribers: list[ShapeSpec],
    check: dict[str, Any],
    counted: expected_changes.Expected,
    latencies: list[tuple[float, float]],
    ready: dict[str, Any],
    final: dict[str, Any] | None,
    engine_peak: int | None,
) -> None:
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
    wrong = [
        {"subscriber": i, "shape": s.describe(), "delivered": d, "expected": w}
        for i, (s, d, w) in enumerate(zip(subscribers, delivered, wanted, strict=True))
        if d != w
    ]
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
    summary.update(
        {
            "shapes": ctx.opts.shapes,
            "subscribers": len(subscribers),
            "sync_seconds": round(ready["seconds"], 2),
            "latency": {
                "p50_ms": stats.percentile(ms, 50),
                "p95_ms": stats.percentile(ms, 95),
                "p99_ms": stats.percentile(ms, 99),
                "max_ms": max(ms) if ms else None,
                "samples": len(ms),
                "expected_samples": markers * ctx.opts.marker_subscribers,
                "markers": markers,
            },
            "deliveries": {
                "delivered": sum(delivered),
                "expected": sum(wanted),
                "ok": not wrong and not counted.truncated,
                "mismatched": wrong[:10],
                "mismatched_count": len(wrong),
                "by_kind": by_kind,
                "truncated_tables": sorted(counted.truncated),
            },
            "consistency": {
                k: check[k]
                for k in ("ok", "seconds", "mismatched", "mismatched_count", "rows_checked")
            },
            "messages_per_s": stats.summary([s.get("deliveries_per_s") for s in during]),
            "row_changes": counted.row_changes,
            "transactions_decoded": counted.transactions,
            "ingested_per_s": stats.summary([s.get("ingested_per_s") for s in during]),
            "committed_per_s": stats.summary([s.get("committed_per_s") for s in during]),
            "engine_cpu_s": engine_cpu,
            "ingested_during_load": ingested,
            # Per row change it ingested meanwhile (not per change committed: a server
            # that falls behind would look cheap).
            "engine_cpu_us_per_change": (
                engine_cpu / ingested * 1e6 if engine_cpu is not None and ingested else None
            ),
            "engine_peak_rss": engine_peak,
            "subscribers_cpu_s": stats.delta(during, "subscribers_cpu_s"),
            "subscriber_errors": (final or {}).get("errors", []),
            "refetches": (final or {}).get("refetches"),
        }
    )
    phase["latency_windows"] = stats.latency_windows(latencies)


class ArrivalMatcher:
    """Marker arrivals joined with their commit times: (seconds into the phase, ms)."""

    def __init__(self) -> None:
        # Arrivals whose commit time the marker thread has not noted yet: a subscriber can
        # read a marker change before the thread that committed it runs again.
        self.unmatched: list[tuple[int, float]] = []

    def match(
        self, arrivals: list[tuple[int, float]], commits: dict[int, float], started: float
    ) -> list[tuple[float, float]]:
        pending, self.unmatched = self.unmatched + arrivals, []
        matched = []
        for seq, arrived in pending:
            committed = commits.get(seq)
            if committed is None:
                self.unmatched.append((seq, arrived))
            else:
                matched.append((committed - started, (arrived - committed) * 1000))
        return matched
