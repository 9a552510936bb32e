"""``pysync serve``: the sync service, standalone (a drop-in for an Electric server);
``pysync psql``: psql on the private Postgres of a data directory; ``pysync uninstall``:
take pysync out of a database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import errno
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
from starlette.applications import Starlette

from pysync import bench, tracing, uninstall
from pysync._compiled import describe
from pysync._version import __version__
from pysync.config import (
    ENV,
    Settings,
    SettingsError,
    connection_from_env,
    env_origins,
    from_env,
    make_settings,
)
from pysync.electric_env import notices
from pysync.engine import Engine
from pysync.http import metrics_port
from pysync.http.api import SSE_TIMEOUT, ShapeAPI
from pysync.http.server import connection_budget, quiet_server_logs
from pysync.http.source import ShapeSource
from pysync.lockfile import DirectoryInUse
from pysync.log.storage import LogCorruptError, StorageError
from pysync.postgres.cluster import ClusterError, PostgresCluster, binary_dir
from pysync.postgres.connections import PooledUnusable
from pysync.postgres.conninfo import merge
from pysync.postgres.private import PrivateDatabase
from pysync.postgres.publication import check_name
from pysync.postgres.slot import ReplicationError
from pysync.serve.process import http_server, run_loop, tune_gc
from pysync.serve.rolling import RollingSource
from pysync.serve.supervisor import supervise

log = logging.getLogger("pysync")

STARTUP_ERRORS = (
    ClusterError,
    PooledUnusable,
    ReplicationError,
    DirectoryInUse,
    LogCorruptError,
    StorageError,
    OSError,
    psycopg.Error,
)
"""Failures to start that a message can explain: said in one line, no traceback."""


class StartupError(RuntimeError):
    pass


DESCRIPTION = (
    "pysync: Postgres sync, serving Electric's Shape API (a drop-in for an Electric server)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysync", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"pysync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    # No type= or choices= on its options: Settings checks the values, flags and
    # environment alike, and says what is wrong in one line (argparse adds its usage).
    serve = commands.add_parser(
        "serve", help="run the sync service", description="Run the sync service."
    )
    serve.add_argument(
        "--database-url",
        help="Postgres to replicate from (env DATABASE_URL); "
        "default: a private Postgres in --data-dir",
    )
    serve.add_argument(
        "--pooled-database-url",
        help="the same database through a transaction pooler such as PgBouncer, for "
        "catalog queries and snapshots (env PYSYNC_POOLED_DATABASE_URL or "
        "ELECTRIC_POOLED_DATABASE_URL); replication stays on --database-url",
    )
    serve.add_argument("--host", help="interface to listen on (env PYSYNC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", help="HTTP port (env PYSYNC_PORT, default 3000)")
    serve.add_argument(
        "--secret",
        help="required as ?secret= on shape requests (env PYSYNC_SECRET); on the command "
        "line every local user can read it: prefer --secret-file or the environment",
    )
    serve.add_argument(
        "--secret-file",
        help="a file holding the secret, its first line (env PYSYNC_SECRET_FILE)",
    )
    serve.add_argument(
        "--data-dir",
        help="private Postgres and shape logs (env PYSYNC_DATA_DIR, default ./.pysync)",
    )
    serve.add_argument(
        "--storage-dir",
        help="shape logs (env PYSYNC_STORAGE_DIR, default <data-dir>/storage)",
    )
    serve.add_argument(
        "--long-poll-timeout",
        help="seconds a live request waits (env PYSYNC_LONG_POLL_TIMEOUT, default 20)",
    )
    serve.add_argument(
        "--publication", help="publication name (env PYSYNC_PUBLICATION, default pysync)"
    )
    serve.add_argument("--slot", help="replication slot name (env PYSYNC_SLOT, default pysync)")
    serve.add_argument(
        "--log-level", help="debug, info, warning, error (env PYSYNC_LOG_LEVEL, default info)"
    )
    serve.add_argument(
        "--allow-delete",
        action="store_true",
        default=None,
        help="enable DELETE /v1/shape (env PYSYNC_ALLOW_DELETE)",
    )
    serve.add_argument(
        "--max-shapes",
        help="evict least recently used shapes beyond this (env PYSYNC_MAX_SHAPES)",
    )
    serve.add_argument(
        "--max-subquery-rows",
        help="rows the subqueries of all shapes may hold in "
        "memory, about 1 KiB each (env PYSYNC_MAX_SUBQUERY_ROWS, default 2000000)",
    )
    serve.add_argument(
        "--chunk-bytes",
        help="bytes per snapshot chunk and response "
        "(env PYSYNC_CHUNK_BYTES or ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD, default 10485760)",
    )
    serve.add_argument(
        "--cache-max-age",
        help="max-age of non-live responses in seconds "
        "(env PYSYNC_CACHE_MAX_AGE or ELECTRIC_CACHE_MAX_AGE, default 60)",
    )
    serve.add_argument(
        "--cache-stale-age",
        help="stale-while-revalidate of non-live responses "
        "in seconds (env PYSYNC_CACHE_STALE_AGE or ELECTRIC_CACHE_STALE_AGE, default 300)",
    )
    serve.add_argument(
        "--max-initial-requests",
        help="concurrent requests for new shapes "
        "(env PYSYNC_MAX_INITIAL_REQUESTS, or ELECTRIC_MAX_CONCURRENT_REQUESTS JSON; default 300)",
    )
    serve.add_argument(
        "--max-existing-requests",
        help="concurrent other shape requests "
        "(env PYSYNC_MAX_EXISTING_REQUESTS, or ELECTRIC_MAX_CONCURRENT_REQUESTS JSON; default 10000)",
    )
    serve.add_argument(
        "--max-connections",
        help="client connections at once "
        "(env PYSYNC_MAX_CONNECTIONS; default: what ulimit -n allows)",
    )
    serve.add_argument(
        "--header-timeout",
        help="seconds to send a request head (env PYSYNC_HEADER_TIMEOUT, default 10)",
    )
    serve.add_argument(
        "--workers",
        help="HTTP worker processes; 0 serves from the replicating "
        "process (env PYSYNC_WORKERS, default 0)",
    )
    serve.add_argument(
        "--compaction",
        metavar="{on,off}",
        help="merge each row's updates in shape logs so that storage and catch-up reads "
        "stay bounded (env PYSYNC_COMPACTION=true/false, default on)",
    )
    serve.add_argument(
        "--prometheus-port",
        help="also serve /metrics on this port "
        "(env PYSYNC_PROMETHEUS_PORT or ELECTRIC_PROMETHEUS_PORT; default: none)",
    )
    serve.add_argument(
        "--compact-min-bytes",
        help="compact a shape log once it grew by at least this many bytes, and doubled "
        "(env PYSYNC_COMPACT_MIN_BYTES, default 1048576)",
    )
    serve.add_argument(
        "--snapshot-connections",
        help="Postgres sessions for snapshots "
        "(env PYSYNC_SNAPSHOT_CONNECTIONS or ELECTRIC_DB_POOL_SIZE, default 5)",
    )
    serve.add_argument(
        "--schema-check-interval",
        help="seconds between checks of the shapes' tables in the catalog: dropped, "
        "recreated or altered ones make their clients refetch "
        "(env PYSYNC_SCHEMA_CHECK_INTERVAL, default 15; 0: none)",
    )
    serve.add_argument(
        "--manual-publishing",
        action="store_true",
        default=None,
        help="never alter the publication or a table's replica identity: a database owner "
        "adds each table and sets REPLICA IDENTITY FULL "
        "(env PYSYNC_MANUAL_PUBLISHING or ELECTRIC_MANUAL_TABLE_PUBLISHING)",
    )
    serve.add_argument(
        "--temporary-slot",
        action="store_true",
        default=None,
        help="replicate from a temporary slot, dropped by Postgres when pysync's "
        "connection ends: each start resyncs every shape "
        "(env PYSYNC_TEMPORARY_SLOT or CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN)",
    )
    serve.add_argument(
        "--random-slot-name",
        action="store_true",
        default=None,
        help="with --temporary-slot: name it <slot>_<16 random hex digits> (env "
        "PYSYNC_RANDOM_SLOT_NAME or ELECTRIC_TEMPORARY_REPLICATION_SLOT_USE_RANDOM_NAME)",
    )
    serve.add_argument(
        "--replication-idle-timeout",
        help="close every database connection after this long without a transaction or "
        "a shape request: seconds, or 500ms, 30s, 5min (env PYSYNC_REPLICATION_IDLE_TIMEOUT, "
        "or ELECTRIC_REPLICATION_IDLE_TIMEOUT in ms; default 0: never)",
    )
    serve.add_argument(
        "--otlp-endpoint",
        help="export OpenTelemetry traces to this collector URL, at <url>/v1/traces "
        "(env PYSYNC_OTLP_ENDPOINT or ELECTRIC_OTLP_ENDPOINT; needs pysync[otel])",
    )
    serve.add_argument(
        "--otel-debug",
        action="store_true",
        default=None,
        help="also print each trace span to stdout (env PYSYNC_OTEL_DEBUG or ELECTRIC_OTEL_DEBUG)",
    )
    _connection_arguments(serve)
    psql = commands.add_parser(
        "psql",
        help="psql on the private Postgres of a data directory (started by pysync serve)",
        description="Run psql (the one installed with pysync) on the private Postgres that "
        "pysync serve started in --data-dir; other arguments go to psql "
        "(pysync psql -c 'SELECT 1').",
    )
    psql.add_argument(
        "--data-dir",
        type=Path,
        help="as given to pysync serve (env PYSYNC_DATA_DIR, default ./.pysync)",
    )
    remove = commands.add_parser(
        "uninstall",
        help="drop pysync's slot and publication from a database, undo its REPLICA IDENTITY FULL",
        description="Drop pysync's replication slot and publication and set the tables pysync "
        "made REPLICA IDENTITY FULL back to their identity before; prints the statements and "
        "asks first. Stop pysync serve before.",
    )
    remove.add_argument("--database-url", help="the database (env DATABASE_URL)")
    remove.add_argument(
        "--publication", help="publication name (env PYSYNC_PUBLICATION, default pysync)"
    )
    remove.add_argument("--slot", help="replication slot name (env PYSYNC_SLOT, default pysync)")
    remove.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    bench.add_arguments(
        commands.add_parser(
            "bench", help="benchmark a sync server on a pgbench workload (needs pysync[bench])"
        )
    )
    return parser


def _connection_arguments(serve: argparse.ArgumentParser) -> None:
    """Settings of every connection to --database-url (``postgres/conninfo.py``); a
    duration takes a unit (30s, 500ms, 2min), a bare number is seconds."""
    serve.add_argument(
        "--database-ca-certificate-file",
        help="verify the database server's certificate and host name with these trusted "
        "root certificates: libpq sslrootcert with sslmode=verify-full "
        "(env PYSYNC_DATABASE_CA_CERTIFICATE_FILE or ELECTRIC_DATABASE_CA_CERTIFICATE_FILE)",
    )
    serve.add_argument(
        "--database-tcp-keepalive-idle",
        help="idle time of a database connection before TCP keepalive probes, e.g. 30s "
        "(env PYSYNC_DATABASE_TCP_KEEPALIVE_IDLE or ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE; "
        "default: the OS's)",
    )
    serve.add_argument(
        "--database-tcp-keepalive-interval",
        help="time between TCP keepalive probes, e.g. 10s (env "
        "PYSYNC_DATABASE_TCP_KEEPALIVE_INTERVAL or ELECTRIC_DATABASE_TCP_KEEPALIVE_INTERVAL; "
        "default: the OS's)",
    )
    serve.add_argument(
        "--database-tcp-keepalive-count",
        help="unanswered TCP keepalive probes before a database connection is dropped (env "
        "PYSYNC_DATABASE_TCP_KEEPALIVE_COUNT or ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT; "
        "default: the OS's)",
    )
    serve.add_argument(
        "--database-tcp-user-timeout",
        help="how long data sent to the database may stay unacknowledged before the "
        "connection is dropped, e.g. 60s (env PYSYNC_DATABASE_TCP_USER_TIMEOUT or "
        "ELECTRIC_DATABASE_TCP_USER_TIMEOUT; default: the OS's)",
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown option is reported with its command's usage (not the
    top level's), and the option it may be a typo of."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "psql":
        args.psql_args = unknown
    elif unknown:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command: argparse.ArgumentParser = commands.choices[args.command]
        known = [o for a in command._actions for o in a.option_strings]
        guesses = [
            f" (did you mean {match[0]}?)"
            for word in unknown
            if word.startswith("--")
            for match in [difflib.get_close_matches(word.split("=")[0], known, n=1)]
            if match
        ]
        command.error(f"unrecognized arguments: {' '.join(unknown)}{''.join(guesses[:1])}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    values: dict[str, object] = dict(from_env())
    origins = env_origins()
    for field in Settings.__struct_fields__:
        value = getattr(args, field, None)
        if value is not None:
            flag = "--" + field.replace("_", "-")
            if field == "compaction" and value not in ("on", "off"):
                raise SettingsError(f"invalid {flag} {value!r}: expected on or off")
            values[field] = {"on": True, "off": False}.get(value, value)
            origins[field] = flag
    return make_settings(values, origins)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.command == "bench":
        sys.exit(bench.run(args))
    if args.command == "psql":
        sys.exit(psql(args))
    if args.command == "uninstall":
        sys.exit(uninstall_command(args))
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"pysync: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _warn_of_visible_secrets(args)
    for notice in notices():
        log.warning("%s", notice)
    try:
        run_loop(serve(settings))
    except StartupError as exc:
        print(f"pysync: {exc}", file=sys.stderr)
        sys.exit(1)


def psql(args: argparse.Namespace) -> int:
    """Replace this process by the psql installed with pysync (the Postgres binaries'
    own), on the private Postgres of ``--data-dir``; it reads the password from the
    data directory's passfile."""
    data_dir: Path = args.data_dir or next(
        (Path(os.environ[name]) for name in ENV["data_dir"] if os.environ.get(name)),
        Settings().data_dir,
    )
    try:
        cluster = PostgresCluster(data_dir / "postgres")
        program = binary_dir() / "psql"
    except ClusterError as exc:
        print(f"pysync: {exc}", file=sys.stderr)
        return 1
    if not cluster.attach():
        print(
            f"pysync: no private Postgres is running in {data_dir}: start it with "
            f"pysync serve --data-dir {data_dir} (and keep that running)",
            file=sys.stderr,
        )
        return 1
    extra = args.psql_args[1:] if args.psql_args[:1] == ["--"] else args.psql_args
    sys.stdout.flush()
    os.execv(program, [str(program), cluster.shown_url(), *extra])


def uninstall_command(args: argparse.Namespace) -> int:
    def setting(field: str, default: str | None) -> str | None:
        value: str | None = getattr(args, field)
        if value is None:
            value = next((os.environ[n] for n in ENV[field] if os.environ.get(n)), default)
        return value

    url = setting("database_url", None)
    if url is None:
        print("pysync: give the database with --database-url or DATABASE_URL", file=sys.stderr)
        return 2
    try:
        publication = check_name("publication", setting("publication", "pysync") or "")
        slot = check_name("slot", setting("slot", "pysync") or "")
        url = merge(url, connection_from_env())
    except ValueError as exc:  # SettingsError too
        print(f"pysync: {exc}", file=sys.stderr)
        return 2
    try:
        return uninstall.run(url, publication, slot, yes=args.yes)
    except psycopg.Error as exc:
        print(f"pysync: {_explain(exc, url)}", file=sys.stderr)
        return 1


def _warn_of_visible_secrets(args: argparse.Namespace) -> None:
    """Once for each secret given as an argument: every local user can read them."""
    if args.secret is not None:
        log.warning(
            "--secret on the command line is readable by every local user (ps, "
            "/proc/<pid>/cmdline): give it with --secret-file or PYSYNC_SECRET instead"
        )
    for flag, url, variable in (
        ("--database-url", args.database_url, "DATABASE_URL"),
        ("--pooled-database-url", args.pooled_database_url, "PYSYNC_POOLED_DATABASE_URL"),
    ):
        if url is None:
            continue
        try:
            password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError:
            password = None  # said when it is used
        if password:
            log.warning(
                "the password in %s is readable by every local user (ps, "
                "/proc/<pid>/cmdline): give the URL in %s, or the password in "
                "a passfile (?passfile=...) or PGPASSWORD",
                flag,
                variable,
            )


def listen(host: str, port: int, flag: str = "--port") -> socket.socket:
    """The HTTP socket, bound and listening before anything else starts: a taken port
    fails fast."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (
            f"is another server using it? Choose another {flag}."
            if exc.errno == errno.EADDRINUSE
            else "check --host / PYSYNC_HOST."
        )
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    # Listening now, not when uvicorn starts serving (after the lifespan startup that
    # prints "serving"): a client that connects on that line is queued, not refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(settings: Settings) -> None:
    max_connections = connection_budget(settings.max_connections)
    quiet_server_logs()
    sock = listen(settings.host, settings.port)
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def shut_down() -> None:
        while cleanup:
            await cleanup.pop()()

    tracer = tracing.from_settings(settings)
    cleanup.append(_async(tracer.shutdown))  # last: after what makes spans

    try:
        database_url, cluster = await _database(settings, cleanup)
        engine = Engine.from_settings(database_url, settings, tracer=tracer)
        rolling = await _standby(engine, settings)
        source: ShapeSource = engine if rolling is None else rolling
        if rolling is not None:
            cleanup.append(rolling.stop)
        else:
            try:
                await engine.start()
            except STARTUP_ERRORS as exc:
                raise StartupError(_explain(exc, database_url)) from None
            cleanup.append(engine.stop)
        if settings.prometheus_port is not None:
            metrics_sock = listen(settings.host, settings.prometheus_port, "--prometheus-port")
            metrics_sock.set_inheritable(False)  # not the workers'
            cleanup.append(metrics_port.start(engine.metrics, metrics_sock))
        if settings.workers:
            await supervise(
                engine, settings, sock, database_url, lambda: announce(settings, cluster)
            )
            return
        api = ShapeAPI.from_settings(source, settings, tracer)
        engine.served_by(api.busy)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            tune_gc()
            announce(settings, cluster)
            yield
            # Here, not only after serve(): uvicorn re-raises a captured SIGTERM when
            # serve() returns, so code after it may never run.
            await shut_down()

        server = http_server(api, settings, max_connections, lifespan)
        if rolling is None:
            await server.serve(sockets=[sock])
        else:
            # A takeover that fails (the engine cannot start) stops the server.
            async def stop_on_failure() -> None:
                await rolling.failed.wait()
                server.should_exit = True

            watch = asyncio.create_task(stop_on_failure(), name="pysync-takeover-watch")
            try:
                await server.serve(sockets=[sock])
            finally:
                watch.cancel()
        if rolling is not None and rolling.failure is not None:
            raise StartupError(_explain(rolling.failure, database_url))
    finally:
        sock.close()
        await shut_down()


async def _standby(engine: Engine, settings: Settings) -> RollingSource | None:
    """A ``RollingSource`` if another pysync holds the storage directory: its shapes
    are served read-only until it stops, then this one takes over (a rolling deploy)."""
    try:
        engine.store.lock()
    except DirectoryInUse as exc:
        if settings.workers:
            # The hand-over from a standby's own server to workers after the takeover
            # left a client's request hanging in tests under load: not offered.
            holder = f"process {exc.pid}" if exc.pid else "another process"
            raise StartupError(
                f"storage directory {exc.directory} is held by {holder}: a second pysync "
                "serve on it serves its shapes read-only until it stops (a rolling deploy) "
                "with --workers 0 only; give this one --workers 0, or start it once the "
                "other one stopped"
            ) from None
        log.warning(
            "storage directory %s is held by %s: serving its shapes read-only until it "
            "stops, then taking over (a rolling deploy)",
            exc.directory,
            f"process {exc.pid}" if exc.pid else "another process",
        )
        try:
            return await RollingSource.start(
                engine,
                chunk_bytes=settings.chunk_bytes,
                hold_seconds=max(settings.long_poll_timeout, SSE_TIMEOUT) + 1,
            )
        except STARTUP_ERRORS as error:
            raise StartupError(_explain(error, engine.database_url)) from None
    except OSError as exc:
        raise StartupError(_explain(exc, engine.database_url)) from None
    return None


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await asyncio.to_thread(close)  # exporting may wait for the collector

    return run


def announce(settings: Settings, cluster: PostgresCluster | None) -> None:
    # Once started: a setting or database found bad at start stays one line of output.
    log.info("hot modules: %s", describe())
    base = f"http://{settings.host}:{settings.port}"
    print(f"pysync is serving shapes at {base}/v1/shape", flush=True)
    print(f"  try: curl '{base}/v1/shape?table=<your table>&offset=-1'", flush=True)
    if cluster is not None:
        print(
            f"  create tables with: pysync psql --data-dir {settings.data_dir} (psql on that URL)",
            flush=True,
        )


async def _database(
    settings: Settings, cleanup: list[Callable[[], Awaitable[None]]]
) -> tuple[str, PostgresCluster | None]:
    """The conninfo to sync from: the database URL with the connection settings; the
    private cluster is started (and its stop queued in ``cleanup``) when no URL is given
    or the given one is that cluster's (local, without TLS: its URL is used as it is)."""
    if settings.database_url is not None and not PrivateDatabase.wanted(
        settings.data_dir, settings.database_url
    ):
        return settings.conninfo(settings.database_url), None
    private = PrivateDatabase(settings.data_dir)
    try:
        url = await asyncio.to_thread(private.start)
    except (DirectoryInUse, ClusterError) as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(
            f"cannot use the data directory {settings.data_dir}: {exc.strerror}"
            f"{f' ({exc.filename})' if exc.filename else ''}; check --data-dir / PYSYNC_DATA_DIR."
        ) from None

    async def stop() -> None:
        await asyncio.to_thread(private.stop)

    cleanup.append(stop)
    # For psql "$DATABASE_URL": without the password, which libpq reads from the
    # passfile it names (0600): stdout may well end up in a log others read.
    print(f"DATABASE_URL={private.cluster.shown_url()}", flush=True)
    return url, private.cluster


def _explain(exc: BaseException, database_url: str) -> str:
    if isinstance(exc, psycopg.OperationalError):
        where = psycopg.conninfo.conninfo_to_dict(database_url)
        target = (
            f"{where.get('host', 'localhost')}:{where.get('port', 5432)}/{where.get('dbname', '')}"
        )
        reason = connection_failure(str(exc))
        check = "--database-url / DATABASE_URL"
        if "SSL" in reason or "certificate" in reason:
            check += (
                " and the CA certificate file (--database-ca-certificate-file / "
                "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE)"
            )
        return f"cannot connect to the database at {target}: {reason} Check {check}."
    if isinstance(exc, OSError) and exc.filename:
        # The shape logs are the files the engine opens.
        return (
            f"cannot use {exc.filename}: {exc.strerror}; check --storage-dir / "
            "PYSYNC_STORAGE_DIR (default <data dir>/storage)."
        )
    return " ".join(str(exc).split("\n"))


_ATTEMPT = re.compile(r"^(?:connection failed: )?connection to server (?:at|on) .*? failed: ")


def connection_failure(message: str) -> str:
    """libpq's ``connection failed: connection to server at "h", port p failed: Connection
    refused`` and its tab-indented hint lines as one sentence: ``Connection refused; is the
    server running on that host and accepting TCP/IP connections?``"""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "connection failed."
    reason = _ATTEMPT.sub("", lines[0]).removeprefix("FATAL:").strip()
    hints = [line[:1].lower() + line[1:] for line in lines[1:] if not _ATTEMPT.match(line)]
    sentence = "; ".join([reason, *dict.fromkeys(hints)])
    return sentence if sentence.endswith((".", "?")) else sentence + "."


if __name__ == "__main__":
    main()
