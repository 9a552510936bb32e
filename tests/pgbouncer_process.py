"""PgBouncer (Debian's package) in transaction pooling mode in front of the suite's
Postgres: its own ini in a directory of its own, run in the foreground as a child (no
system service), stopped by PID. PgBouncer refuses to run as root: then it runs as the
private Postgres' unprivileged user (``cluster.SERVER_USER``), which owns its files."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from pysync.postgres.cluster import SERVER_USER, SUPERUSER, PostgresCluster, free_port
from system_process import stop, wait_listening


def binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None
    )
    if found is None:
        raise AssertionError(
            "pgbouncer is not installed: apt-get install -y pgbouncer (.ci/run does)"
        )
    return found


class PgBouncer:
    """``pgbouncer pgbouncer.ini`` with ``pool_mode=transaction`` and ``pool_size``
    server connections per database and user, so client sessions really share them."""

    def __init__(self, cluster: PostgresCluster, *, pool_size: int = 2) -> None:
        self.cluster = cluster
        self.port = free_port()
        # Not under pytest's tmp_path: its parents are private to root, and PgBouncer
        # runs as another user.
        self.directory = Path(tempfile.mkdtemp(prefix="pysync-pgbouncer-"))
        user = pwd.getpwnam(SERVER_USER) if os.geteuid() == 0 else None
        userlist = self.directory / "userlist.txt"
        userlist.write_text(f'"{SUPERUSER}" "{cluster.password}"\n')
        userlist.chmod(0o600)
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={cluster.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            f"admin_users = {SUPERUSER}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 200\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        kwargs: dict[str, Any] = {}
        if user is not None:
            for path in (self.directory, userlist, ini):
                os.chown(path, user.pw_uid, user.pw_gid)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            [binary(), str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            **kwargs,
        )
        wait_listening(self.process, self.port, "pgbouncer", self.log)

    def url(self, dbname: str) -> str:
        """``dbname`` of the cluster, through PgBouncer."""
        return self.cluster.url(dbname).replace(f":{self.cluster.port}/", f":{self.port}/")

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` of PgBouncer's admin console (simple query protocol only)."""
        with psycopg.connect(
            self.url("pgbouncer"), autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as admin:
            cursor = admin.execute(f"SHOW {what}")  # test-owned: SERVERS, STATS...
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (PgBouncer's immediate shutdown), then SIGKILL; its files go."""
        stop(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)
