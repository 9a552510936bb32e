"""The ``drain`` phase: with the server stopped, pgbench writes a backlog;
``pg_recvlogical`` and then pysync (restarted on its slot, every shape still there) drain
it, each timed from attaching to its slot to confirming the end of the backlog."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pysync.bench import expected as expected_changes
from pysync.bench import stats
from pysync.bench.baseline import RecvLogical
from pysync.bench.context import RunContext
from pysync.bench.database import (
    PGBENCH_TABLES,
    create_slot,
    drop_slot,
    end_backlog,
    slot_state,
    wal_lsn,
)
from pysync.bench.errors import BenchError
from pysync.bench.load import Load
from pysync.bench.progress import fmt
from pysync.bench.shapes import Matcher


def run_drain(ctx: RunContext) -> None:
    assert ctx.server is not None
    names, conn, opts = ctx.names, ctx.conn, ctx.opts
    ctx.server.stop()
    create_slot(conn, names.drain_slot)
    create_slot(conn, names.verify_slot, "test_decoding")
    start = wal_lsn(conn)
    load = Load(ctx, "backlog", opts.backlog, slot=None, processes={}, marker=False)
    load.run(load.status)
    load.record("nothing (the server is stopped)")
    end = end_backlog(conn)
    backlog = expected_changes.count(
        ctx.url, names.verify_slot, Matcher([]), {*PGBENCH_TABLES, names.marker_table}
    )
    drop_slot(conn, names.verify_slot)
    rows = backlog.row_changes
    ctx.display.note(f"  backlog: {rows:,} row changes, {(end - start) / 1e6:.1f} MB of WAL")
    recv = RecvLogical(
        ctx.recv_binary, ctx.url, names.drain_slot, names.recv_publication, endpos=end
    )
    try:
        recv_drain = _time_drain(
            ctx, names.drain_slot, end, recv.proc.poll, "pg_recvlogical", opts.drain_timeout
        )
    finally:
        recv.stop()
    ctx.server.launch()
    try:
        pysync_drain = _time_drain(
            ctx, names.engine_slot, end, ctx.server.proc_poll, "pysync serve", opts.drain_timeout
        )
    finally:
        ctx.server.stop()
    result: dict[str, Any] = {
        "backlog_seconds": opts.backlog,
        "row_changes": rows,
        "wal_bytes": end - start,
        "backlog_tps": stats.mean_tps(load.result.progress) if load.result else None,
    }
    for who, (seconds, confirmed) in (("recvlogical", recv_drain), ("pysync", pysync_drain)):
        drained = rows if confirmed >= end else backlog.changes_at(confirmed)
        result[f"{who}_s"] = round(seconds, 3)
        result[f"{who}_complete"] = confirmed >= end
        result[f"{who}_drained"] = drained
        result[f"{who}_per_s"] = drained / seconds if seconds > 0 else None
    result["ratio"] = stats.ratio(result["pysync_per_s"], result["recvlogical_per_s"])
    ctx.report["drain"] = result
    parts = []
    for who, name in (("recvlogical", "pg_recvlogical"), ("pysync", "pysync")):
        done = (
            "" if result[f"{who}_complete"] else f" (stopped at {result[f'{who}_drained']:,} rows)"
        )
        parts.append(f"{name} {result[f'{who}_s']:.2f} s{done}")
    ctx.display.note(f"  drained by {', '.join(parts)}: ratio {fmt(result['ratio'], '.2f')}")


def _time_drain(
    ctx: RunContext, slot: str, end: int, exited: Callable[[], int | None], who: str, timeout: float
) -> tuple[float, int]:
    """Drain time from the slot becoming active to it confirming ``end``, and the
    position confirmed then; at most ``timeout`` seconds after attaching."""
    attach_deadline = time.monotonic() + 120
    attached: float | None = None
    confirmed = 0
    while True:
        active, position = slot_state(ctx.conn, slot)
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
