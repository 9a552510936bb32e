"""One benchmark run, phase by phase.

1. Setup (``context.py``): the database (a private throwaway Postgres unless
   ``--database-url``), ``pgbench -i``, full replica identity on the pgbench tables, the
   marker table.
2. Warm-up: pgbench for ``--warmup`` seconds, not measured.
3. ``none``: pgbench with nothing attached (managed server only).
4. ``recvlogical``: pgbench with ``pg_recvlogical`` attached to its own slot.
5. ``sync`` (``sync_phase.py``): the sync server with ``--shapes`` shapes and
   ``--subscribers`` live subscribers; pgbench, the marker writer and the sampler run;
   then the subscribers must converge to ``SELECT`` of their shapes, and their
   deliveries are compared with the changes decoded from a ``test_decoding`` slot.
6. ``drain`` (``drain.py``): with the server stopped, pgbench writes a backlog;
   ``pg_recvlogical`` and then pysync (restarted on its slot, every shape still there)
   drain it, each timed from attaching to its slot to confirming the end of the backlog.

Each timed phase is a ``Load`` (``load.py``). Phases 3, 4 and 6 need the managed server;
with ``--server`` only the HTTP-side measures (latency, deliveries, consistency) and the
run's TPS apply.
Every process, slot, publication, table and directory the run creates is removed on
the way out, also after an error or Ctrl-C (an ExitStack unwinds in reverse order:
subscribers, server, then its slot, then the Postgres, then the directory).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pysync._compiled import describe, implementation
from pysync._version import __version__
from pysync.bench import stats
from pysync.bench.baseline import RecvLogical
from pysync.bench.context import RunContext
from pysync.bench.database import (
    PGBENCH_TABLES,
    create_publication,
    create_slot,
    drop_slot,
    reset_tables,
)
from pysync.bench.drain import run_drain
from pysync.bench.load import Load
from pysync.bench.options import Options
from pysync.bench.progress import Display, fmt
from pysync.bench.sync_phase import run_sync
from pysync.bench.workload import Pgbench


class Bench:
    """A run: its phases in order, then the headline of its report."""

    def __init__(self, opts: Options, display: Display, command: str) -> None:
        self.ctx = RunContext(
            opts,
            display,
            {
                "version": 1,
                "command": command,
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "pysync": __version__,
                    # The bench's own and, managed, its server's (same install, same env).
                    "implementation": implementation(),
                    "implementation_detail": describe(),
                    "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                },
                "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
                "phases": {},
            },
        )

    def run(self) -> dict[str, Any]:
        ctx = self.ctx
        with ctx.stack:
            started = time.monotonic()
            ctx.set_up()
            if ctx.opts.warmup > 0:
                self._warm_up()
            if ctx.opts.find_knee:
                ctx.report["knee"] = self._knee()
                ctx.report["seconds"] = round(time.monotonic() - started, 1)
                return ctx.report
            if ctx.opts.managed_server:
                self._alone()
                self._recvlogical()
            run_sync(ctx)
            if ctx.opts.managed_server and ctx.opts.backlog > 0:
                run_drain(ctx)
            ctx.report["seconds"] = round(time.monotonic() - started, 1)
        ctx.report["summary"] = self._headline()
        return ctx.report

    def _warm_up(self) -> None:
        ctx = self.ctx
        reset_tables(ctx.conn)
        warm = Pgbench(ctx.pgbench, ctx.url, ctx.opts, ctx.opts.warmup)
        try:
            with ctx.display.phase("warm-up", ctx.opts.warmup, lambda: ""):
                while warm.running():
                    time.sleep(0.25)
                    ctx.display.tick(time.monotonic() - warm.started)
                warm.wait()
        finally:
            warm.stop()

    def _knee(self) -> dict[str, Any]:
        from pysync.bench import knee
        from pysync.bench.knee_phase import run_knee

        opts = self.ctx.opts
        search = knee.Plan(opts.knee_start, opts.knee_factor, opts.knee_steps, opts.knee_bisect)
        return run_knee(self.ctx, search, knee.Limits(opts.max_lag, opts.max_p99))

    def _alone(self) -> None:
        reset_tables(self.ctx.conn)
        load = Load(self.ctx, "none", self.ctx.opts.duration, slot=None, processes={})
        load.run(load.status)
        load.record("nothing")

    def _recvlogical(self) -> None:
        ctx = self.ctx
        names = ctx.names
        create_publication(ctx.conn, names.recv_publication, [*PGBENCH_TABLES, names.marker_table])
        reset_tables(ctx.conn)
        create_slot(ctx.conn, names.recv_slot)
        recv = RecvLogical(ctx.recv_binary, ctx.url, names.recv_slot, names.recv_publication)
        try:
            recv.wait_attached(ctx.conn)
            load = Load(
                ctx,
                "recvlogical",
                ctx.opts.duration,
                slot=names.recv_slot,
                processes={"consumer": recv.pid},
            )
            load.run(load.status)
        finally:
            recv.stop()
            drop_slot(ctx.conn, names.recv_slot)
        load.record("pg_recvlogical")

    def _headline(self) -> dict[str, Any]:
        report = self.ctx.report
        phases = report["phases"]
        sync = phases.get("sync", {}).get("summary", {})
        none = phases.get("none", {}).get("summary", {})
        recv = phases.get("recvlogical", {}).get("summary", {})
        latency = sync.get("latency", {})
        return {
            "server": report.get("target", {}).get("server"),
            # Of the pysync serve the bench started; a --server's own is not known here.
            "implementation": implementation() if self.ctx.opts.managed_server else "unknown",
            "tps_none": none.get("tps"),
            "tps_recvlogical": recv.get("tps"),
            "tps_sync": sync.get("tps"),
            "tps_ratio": stats.ratio(sync.get("tps"), recv.get("tps")),
            "tps_ratio_none": stats.ratio(sync.get("tps"), none.get("tps")),
            "recvlogical_ratio_none": stats.ratio(recv.get("tps"), none.get("tps")),
            "lag_max_s": sync.get("lag_max_s"),
            "lag_max_bytes": sync.get("lag_max_bytes"),
            "p50_ms": latency.get("p50_ms"),
            "p99_ms": latency.get("p99_ms"),
            "max_ms": latency.get("max_ms"),
            "drain_ratio": report.get("drain", {}).get("ratio"),
            "consistent": sync.get("consistency", {}).get("ok"),
            "deliveries_ok": sync.get("deliveries", {}).get("ok"),
        }


def headline_line(summary: dict[str, Any]) -> str:
    """The last line of every run."""
    return (
        f"bench overhead tps-ratio {fmt(summary.get('tps_ratio'), '.2f')} "
        f"lag-max {fmt(summary.get('lag_max_s'), '.2f')} s "
        f"p99 {fmt(summary.get('p99_ms'), '.1f')} ms "
        f"impl {summary.get('implementation')}"
    )


def command_line() -> str:
    return shlex.join(["pysync", *sys.argv[1:]])
