"""``pysync serve``: the sync service, standalone (a drop-in for an Electric server)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import uvicorn
from starlette.applications import Starlette

from pysync import bench
from pysync.config import Settings, from_env
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.postgres.cluster import ClusterError, PostgresCluster
from pysync.postgres.replication import ReplicationError

log = logging.getLogger("pysync")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the sync service")
    serve.add_argument("--database-url", help="Postgres to replicate from (env DATABASE_URL); "
                       "default: a private Postgres in --data-dir")
    serve.add_argument("--host", help="interface to listen on (env PYSYNC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (env PYSYNC_PORT, default 3000)")
    serve.add_argument("--secret", help="required as ?secret= on shape requests (env PYSYNC_SECRET)")
    serve.add_argument("--data-dir", type=Path, help="private Postgres and shape logs (env PYSYNC_DATA_DIR, default ./.pysync)")
    serve.add_argument("--storage-dir", type=Path, help="shape logs (env PYSYNC_STORAGE_DIR, default <data-dir>/storage)")
    serve.add_argument("--long-poll-timeout", type=float, help="seconds a live request waits (env PYSYNC_LONG_POLL_TIMEOUT, default 20)")
    serve.add_argument("--publication", help="publication name (env PYSYNC_PUBLICATION, default pysync)")
    serve.add_argument("--slot", help="replication slot name (env PYSYNC_SLOT, default pysync)")
    serve.add_argument("--log-level", help="debug, info, warning, error (env PYSYNC_LOG_LEVEL, default info)")
    serve.add_argument("--allow-delete", action="store_true", default=None,
                       help="enable DELETE /v1/shape (env PYSYNC_ALLOW_DELETE)")
    serve.add_argument("--max-shapes", type=int, help="evict least recently used shapes beyond this (env PYSYNC_MAX_SHAPES)")
    bench.add_arguments(commands.add_parser(
        "bench", help="benchmark a sync server on a pgbench workload (needs pysync[bench])"))
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    values: dict[str, object] = dict(from_env())
    for field in Settings.__struct_fields__:
        value = getattr(args, field, None)
        if value is not None:
            values[field] = value
    return msgspec.convert(values, Settings, strict=False)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "bench":
        sys.exit(bench.run(args))
    settings = settings_from(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except (ClusterError, ReplicationError) as exc:
        print(f"pysync: {exc}", file=sys.stderr)
        sys.exit(1)


class _Server(uvicorn.Server):
    """Releases waiting long-polls on SIGINT/SIGTERM: uvicorn waits for open requests."""

    def __init__(self, config: uvicorn.Config, api: ShapeAPI) -> None:
        super().__init__(config)
        self.api = api

    def handle_exit(self, sig: int, frame: object) -> None:
        self.api.close()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


async def serve(settings: Settings) -> None:
    cluster: PostgresCluster | None = None
    database_url = settings.database_url
    if database_url is None:
        cluster = PostgresCluster(settings.data_dir / "postgres")
        await asyncio.to_thread(cluster.start)
        database_url = cluster.url()
        print(f"DATABASE_URL={database_url}", flush=True)
    engine = Engine(
        database_url, storage_dir=settings.shape_storage, slot=settings.slot,
        publication=settings.publication, max_shapes=settings.max_shapes,
    )
    api = ShapeAPI(engine, secret=settings.secret, long_poll_timeout=settings.long_poll_timeout,
                   allow_delete=settings.allow_delete)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await engine.start()
        # Long-lived start-up objects out of the collector's way, and fewer young-generation
        # passes: replication allocates many short-lived tuples (about 5% of ingest CPU).
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        base = f"http://{settings.host}:{settings.port}"
        print(f"pysync is serving shapes at {base}/v1/shape", flush=True)
        print(f"  try: curl '{base}/v1/shape?table=<your table>&offset=-1'", flush=True)
        if cluster is not None:
            print("  create tables with: psql \"$DATABASE_URL\" (the URL printed above)", flush=True)
        yield
        await engine.stop()
        if cluster is not None:
            # Here, not only in serve()'s finally: uvicorn re-raises a captured SIGTERM
            # when serve() returns, so code after it may never run.
            await asyncio.to_thread(cluster.stop)

    config = uvicorn.Config(api.app(lifespan=lifespan), host=settings.host, port=settings.port,
                            log_level=settings.log_level.lower(), access_log=False, lifespan="on")
    server = _Server(config, api)
    try:
        await server.serve()
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)


if __name__ == "__main__":
    main()
