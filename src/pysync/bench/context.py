"""What the phases of one run share, and its setup.

The setup makes the database ready: a private throwaway Postgres unless
``--database-url``, ``pgbench -i``, full replica identity on the pgbench tables, the
marker table. Everything it creates is registered on the run's ExitStack, which removes
it in reverse order on the way out.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pysync.bench.baseline import recvlogical_binary
from pysync.bench.database import (
    Conn,
    Names,
    check_logical,
    cleanup,
    connect,
    pgbench_scale,
    prepare_tables,
    scalar,
)
from pysync.bench.errors import BenchError
from pysync.bench.options import Options
from pysync.bench.progress import Display
from pysync.bench.server import ManagedServer, probe_health
from pysync.bench.workload import initialise, pgbench_binary
from pysync.postgres.cluster import ClusterError, PostgresCluster


class RunContext:
    """The options, the display, the run's objects and connection, and the report the
    phases fill in."""

    def __init__(self, opts: Options, display: Display, report: dict[str, Any]) -> None:
        self.opts = opts
        self.display = display
        self.names = Names(opts.run_id)
        self.stack = contextlib.ExitStack()
        self.seq = 0
        """The marker writer's last sequence number, carried on from phase to phase."""
        self.url = ""
        self.postgres_pid: int | None = None
        self.pgbench = pgbench_binary(opts)
        self.report = report
        self.server: ManagedServer | None = None
        """The managed ``pysync serve``, once the sync phase started it."""

    def set_up(self) -> None:
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
                raise BenchError(
                    f"the private Postgres did not start: {lines[0]} ({lines[-1].strip()})"
                ) from exc
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
            "kind": database,
            "server_version": scalar(self.conn, "SHOW server_version"),
            "scale": self.scale,
        }

    def _cleanup_database(self) -> None:
        for problem in cleanup(self.url, self.names, marker=True):
            self.display.note(f"[yellow]cleanup: {problem}")
