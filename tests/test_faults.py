"""Faults an operator meets, reproduced for real, each ending in the model check: every
client (a protocol follower over HTTP) equals ``SELECT`` of its shape, with nothing lost,
duplicated or left behind.

- the storage disk fills up (a real 20 MB tmpfs, as root) while replicating under load,
  with a SIGKILL in the middle; during a snapshot;
- a write or fsync of storage fails (an injected failure, the same seam on any machine);
- a torn tail and a corrupted frame in a log;
- the replication slot is dropped from outside, while running and while stopped, or
  recreated;
- a second ``pysync serve`` on the same data directory;
- a row lock held by another session while the first shape of a table is created.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from engine_runner import Conn, drop_slot, make, materialise, poll, quiesce, read_all, table_state
from follower import Follower, converge
from http_support import Client, make_api
from pysync.engine import Engine, Status
from pysync.log.frames import HEADER_SIZE
from pysync.log.storage import Io, LogCorruptError
from pysync.postgres.cluster import free_port
from pysync.shapes.consumer import LIVE
from pysync.shapes.definition import ShapeDefinition
from serve_process import ServeProcess, stop_leftover_postgres
from workload import COLUMNS, Writers, create_table

pytestmark = pytest.mark.slow

ROOT = os.geteuid() == 0
needs_tmpfs = pytest.mark.skipif(
    not ROOT,
    reason="mounting a tmpfs needs root (CI runs as root); "
    "test_storage_failures_injected covers the same path without it",
)
SHAPES: list[dict[str, str]] = [
    {"table": "t"},
    {"table": "t", "where": "v < 50"},
    {"table": "t", "where": "grp = 2", "replica": "full"},
]


def expected(conn: Conn) -> Any:
    def rows(follower: Follower) -> dict[str, dict[str, Any]]:
        return table_state(conn, "public", "t", COLUMNS, ["id"], follower.params.get("where"))

    return rows


def slot_lsn(conn: Conn, slot: str = "pysync") -> int | None:
    row = conn.execute(
        "SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    return None if row is None else int(row[0])


class TmpfsDisk:
    """A real small disk: a tmpfs of ``size`` MB, filled by a file and freed again."""

    def __init__(self, path: Path, size_mb: int = 20) -> None:
        self.path = path
        path.mkdir(parents=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True
        )
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte: the next write of the storage fails with ENOSPC."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[TmpfsDisk]:
    disk = TmpfsDisk(tmp_path / "disk")
    try:
        yield disk
    finally:
        disk.close()


def health(base: str) -> tuple[int, dict[str, Any]]:
    try:
        response = httpx.get(f"{base}/v1/health", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json()


async def wait_health(base: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        _, body = await asyncio.to_thread(health, base)
        if body.get("status") == status:
            return body
        assert time.monotonic() < deadline, f"health never became {status}: {body}"
        await asyncio.sleep(0.1)


class Serve:
    """``pysync serve`` on the test database, restartable on the same storage."""

    def __init__(self, database_url: str, storage: Path, *extra: str) -> None:
        self.database_url = database_url
        self.storage = storage
        self.extra = extra
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: ServeProcess | None = None

    def start(self) -> ServeProcess:
        self.process = ServeProcess(
            [
                "--database-url",
                self.database_url,
                "--port",
                str(self.port),
                "--storage-dir",
                str(self.storage),
                "--long-poll-timeout",
                "2",
                "--log-level",
                "info",
                *self.extra,
            ]
        )
        self.process.wait_ready()
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            assert self.process.stop(), self.process.output()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


@pytest.fixture
async def followers() -> AsyncIterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        await follower.close()


def follow(
    base: str, started: list[Follower], shapes: list[dict[str, str]] = SHAPES
) -> list[Follower]:
    new = [Follower(f"{base}/v1/shape", params).start() for params in shapes]
    started.extend(new)
    return new


async def lost_nothing(
    serve: Serve, conn: Conn, live: list[Follower], followers: list[Follower]
) -> None:
    """After storage faults: the live clients and fresh ones equal ``SELECT``; nothing was
    lost, so no shape had to be dropped (the live clients never refetched), and the live
    clients did see the degraded state."""
    await converge(live, expected(conn), what="after the faults")
    fresh = follow(serve.base, followers)
    await converge(fresh, expected(conn), what="fresh clients")
    for follower in live:
        follower.check()
        assert follower.refetches == 0, (follower.name, dict(follower.statuses))
    assert sum(f.statuses[503] for f in live) > 0, "live clients never saw the degraded state"


# -- the disk fills up -------------------------------------------------------------------


@needs_tmpfs
async def test_disk_full_under_load_then_killed_loses_nothing(
    database_url: str, conn: Conn, disk: TmpfsDisk, followers: list[Follower]
) -> None:
    create_table(conn, 500)
    serve = Serve(database_url, disk.path / "storage")
    serve.start()
    writers = Writers(database_url, 2, 500, seed=11)
    try:
        live = follow(serve.base, followers)
        await converge(live, expected(conn), what="initial sync")
        writers.start()
        await poll(lambda: writers.transactions > 100, 30, "writes")

        # Round 1: the disk fills up while transactions stream in, then has room again.
        disk.fill()
        body = await wait_health(serve.base, "degraded")
        assert "No space left on device" in body["reason"], body
        stalled = slot_lsn(conn)
        done = writers.transactions
        await poll(lambda: writers.transactions > done + 50, 30, "writes while the disk is full")
        assert slot_lsn(conn) == stalled, "acknowledged WAL while storage was failing"
        disk.free()
        await wait_health(serve.base, "active")
        await poll(lambda: writers.transactions > done + 150, 30, "writes after")

        # Round 2: full again, and the process is killed while it is.
        disk.fill()
        await wait_health(serve.base, "degraded")
        serve.kill()
        disk.free()
        serve.start()
        await poll(lambda: writers.transactions > done + 300, 30, "writes after the restart")
    finally:
        await asyncio.to_thread(writers.join)
    await lost_nothing(serve, conn, live, followers)
    serve.stop()


@needs_tmpfs
async def test_disk_full_under_load_with_workers_loses_nothing(
    database_url: str, conn: Conn, disk: TmpfsDisk, followers: list[Follower]
) -> None:
    """``--workers``: the workers follow the replicating process's log files, unsynced
    frames included, and a failed sync cuts those off under them. No worker may serve
    what was cut (it answered '[,,,,' with a 200), nor fail a good request (a read past
    the cut on the live path became uvicorn's '400 Invalid HTTP request')."""
    create_table(conn, 500)
    serve = Serve(database_url, disk.path / "storage", "--workers", "2")
    serve.start()
    writers = Writers(database_url, 2, 500, seed=13)

    async def writes(more: int, what: str) -> None:
        done = writers.transactions
        await poll(lambda: writers.transactions > done + more, 30, what)

    try:
        live = follow(serve.base, followers) + follow(serve.base, followers)
        await converge(live, expected(conn), what="initial sync")
        writers.start()
        await writes(100, "writes")
        for round in range(2):
            disk.fill()
            body = await wait_health(serve.base, "degraded")
            assert "No space left on device" in body["reason"], body
            await writes(50, f"writes while the disk is full ({round})")
            disk.free()
            await wait_health(serve.base, "active")
            await writes(150, f"writes after ({round})")
    finally:
        await asyncio.to_thread(writers.join)
    await lost_nothing(serve, conn, live, followers)
    serve.stop()


@needs_tmpfs
async def test_disk_full_during_a_snapshot(
    database_url: str, conn: Conn, disk: TmpfsDisk, followers: list[Follower]
) -> None:
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
    conn.execute(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 40) FROM generate_series(1, 5000) g"
    )
    serve = Serve(database_url, disk.path / "storage")
    serve.start()
    try:
        disk.fill()
        (follower,) = follow(serve.base, followers, [{"table": "big"}])
        await wait_health(serve.base, "degraded")
        await poll(lambda: follower.statuses[503] > 0, 30, "a 503 for the shape")
        assert not follower.rows and not follower.up_to_date
        disk.free()
        want = table_state(conn, "public", "big", ["id", "pad"], ["id"])
        await converge([follower], lambda _: want, what="the snapshot after the disk has room")
        follower.check()
        assert len(os.listdir(disk.path / "storage" / "shapes")) == 1, (
            "the failed shape's log was left"
        )
        # And after a restart: the same shape, nothing lost, a fresh client too.
        handle = follower.handle
        serve.stop()
        serve.start()
        conn.execute("UPDATE big SET pad = 'after the restart' WHERE id = 7")
        want = table_state(conn, "public", "big", ["id", "pad"], ["id"])
        (fresh,) = follow(serve.base, followers, [{"table": "big"}])
        await converge([follower, fresh], lambda _: want, what="after the restart")
        assert follower.handle == handle and fresh.handle == handle and follower.refetches == 0
    finally:
        serve.stop()


# -- injected storage failures (any machine) ------------------------------------------------


class FailingIo(Io):
    """Fails ``times`` calls of ``call`` on files whose name ends with ``suffix``."""

    def __init__(self) -> None:
        self.call = ""
        self.suffix = ""
        self.times = 0
        self.failed = 0

    def arm(self, call: str, suffix: str, times: int = 1) -> None:
        self.call, self.suffix, self.times = call, suffix, times

    def _fail(self, call: str, fd: int) -> None:
        if (
            self.times
            and call == self.call
            and os.readlink(f"/proc/self/fd/{fd}").endswith(self.suffix)
        ):
            self.times -= 1
            self.failed += 1
            code = errno.ENOSPC if call == "write" else errno.EIO
            raise OSError(code, os.strerror(code))

    def write(self, fd: int, data: memoryview) -> int:
        self._fail("write", fd)
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        self._fail("fdatasync", fd)
        os.fdatasync(fd)


async def test_storage_failures_injected(database_url: str, conn: Conn, tmp_path: Path) -> None:
    create_table(conn, 200)
    io = FailingIo()
    engine = Engine(database_url, storage_dir=tmp_path / "s", flush_interval=0.02, io=io)
    await engine.start()
    client = Client(make_api(engine))
    try:
        # A registry write fails: the shape is dropped (its first chunk may have been
        # served: the client's next request is a 409), nothing half-made stays.
        io.arm("write", "registry.jsonl")
        first = await client.shape(table="t", offset="-1")
        assert first.status_code == 200
        handle = first.headers["electric-handle"]
        await poll(
            lambda: io.failed == 1 and engine.get(handle) is None, 30, "the failed shape to go"
        )
        assert not (tmp_path / "s" / "shapes" / handle).exists()
        response = await client.shape(table="t", offset="0_0", handle=handle)
        assert response.status_code in (409, 503), response.text[:300]
        await poll(lambda: engine.status is Status.ACTIVE, 30, "storage to be probed writable")
        live = await make(engine, "t")
        narrow = await make(engine, "t", where="v < 50")

        # A log write fails mid-stream (ENOSPC), then an fsync (EIO): ingest stops, the
        # stream resumes from the acknowledged position, the logs end up complete.
        writers = Writers(database_url, 2, 200, seed=3)
        writers.start()
        try:
            await poll(lambda: writers.transactions > 50, 30, "writes")
            io.arm("write", "/log", times=3)
            await poll(lambda: engine.storage_error is not None, 30, "the write failure")
            health = await client.raw("/v1/health")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            assert "No space left on device" in health.json()["reason"]
            await poll(lambda: engine.storage_error is None, 30, "recovery from it")
            await poll(lambda: writers.transactions > 150, 30, "more writes")
            io.arm("fdatasync", "/log")
            await poll(lambda: io.times == 0, 30, "the fsync failure")
            await poll(lambda: engine.storage_error is None, 30, "recovery from it")
            await poll(lambda: writers.transactions > 250, 30, "more writes")
        finally:
            await asyncio.to_thread(writers.join)
        await quiesce(engine, conn)
        metrics = (await client.raw("/metrics")).text
        assert _metric(metrics, "pysync_storage_errors_total") >= 3
        assert _metric(metrics, "pysync_shapes") == 2
        assert _metric(metrics, "pysync_acknowledged_lsn") > 0
        assert 'pysync_http_responses_total{status="200"}' in metrics
        for shape in (live, narrow):
            assert not shape.gone
            where = shape.definition.where
            assert materialise(read_all(shape.log)) == table_state(
                conn, "public", "t", COLUMNS, ["id"], where
            )
    finally:
        await client.aclose()
        await engine.stop()
    # What was acknowledged is in the logs: a restart needs nothing the slot lost.
    again = Engine(database_url, storage_dir=tmp_path / "s", flush_interval=0.02)
    await again.start()
    try:
        recovered = again.get(live.handle)
        assert recovered is not None
        await quiesce(again, conn)
        assert materialise(read_all(recovered.log)) == table_state(
            conn, "public", "t", COLUMNS, ["id"]
        )
    finally:
        await again.stop()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics:\n{text}")


# -- torn and corrupted logs ---------------------------------------------------------------


async def test_torn_tail_is_repaired_and_corruption_stops_start(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    create_table(conn, 50)
    storage = tmp_path / "s"
    engine = Engine(database_url, storage_dir=storage, flush_interval=0.02)
    await engine.start()
    live = await make(engine, "t")
    for n in range(5):
        conn.execute("UPDATE t SET v = %s WHERE id = %s", (n, n + 1))
    await quiesce(engine, conn)
    await engine.stop()
    log_file = storage / "shapes" / live.handle / "log"

    # A crash in the middle of writing the next frame.
    with log_file.open("ab") as f:
        f.write(bytes([0xA7]) + b"\x00" * (HEADER_SIZE - 1))
    engine = Engine(database_url, storage_dir=storage, flush_interval=0.02)
    await engine.start()
    try:
        recovered = engine.get(live.handle)
        assert recovered is not None
        conn.execute("UPDATE t SET title = 'after' WHERE id = 9")
        await quiesce(engine, conn)
        assert materialise(read_all(recovered.log)) == table_state(
            conn, "public", "t", COLUMNS, ["id"]
        )
    finally:
        await engine.stop()

    # One flipped byte in the middle: refuse to start rather than drop what follows.
    data = bytearray(log_file.read_bytes())
    data[len(data) // 2] ^= 0x55
    log_file.write_bytes(bytes(data))
    engine = Engine(database_url, storage_dir=storage, flush_interval=0.02)
    with pytest.raises(LogCorruptError) as failure:
        await engine.start()
    assert str(log_file) in str(failure.value) and "byte" in str(failure.value)
    assert log_file.read_bytes() == bytes(data), "recovery changed the corrupt log"
    # And pysync serve says so in one line, exiting non-zero.
    server = ServeProcess(
        ["--database-url", database_url, "--port", str(free_port()), "--storage-dir", str(storage)]
    )
    assert server.wait_exit(60) == 1
    assert any(line.startswith("pysync: shape log ") for line in server.lines), server.output()
    assert "Traceback" not in server.output()


# -- the slot -----------------------------------------------------------------------------


def drop_slot_from_outside(conn: Conn, slot: str = "pysync") -> None:
    """As an operator would: end the walsender holding it, then drop it (pysync may get
    it back in between: ``drop_slot`` tries until the drop wins)."""
    assert conn.execute(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone(), f"no slot {slot} to drop"
    drop_slot(conn, slot)


async def test_slot_dropped_or_recreated_from_outside(
    database_url: str, conn: Conn, tmp_path: Path, followers: list[Follower]
) -> None:
    create_table(conn, 300)
    serve = Serve(database_url, tmp_path / "s")
    serve.start()
    live = follow(serve.base, followers)
    await converge(live, expected(conn), what="initial sync")
    writers = Writers(database_url, 2, 300, seed=5)
    writers.start()
    try:
        await poll(lambda: writers.transactions > 50, 30, "writes")
        # While running, with a transaction open across the drop.
        with psycopg.connect(database_url) as open_txn:
            open_txn.execute("UPDATE t SET title = 'across the drop' WHERE id = 1")
            drop_slot_from_outside(conn)
            await asyncio.sleep(0.5)
        await poll(lambda: all(f.refetches >= 1 for f in live), 30, "every client to get a 409")
        await poll(lambda: writers.transactions > 150, 30, "writes")

        # While stopped: dropped, and written to meanwhile. (A client that was still
        # syncing from -1 when the server stopped gets the new shape without a 409.)
        await poll(lambda: all(f.up_to_date for f in live), 60, "sync after the first drop")
        before = {f: f.handle for f in live}
        serve.stop()
        drop_slot_from_outside(conn)
        conn.execute("UPDATE t SET title = 'while down' WHERE id = 2")
        serve.start()
        await poll(
            lambda: all(f.handle != before[f] for f in live), 30, "new shapes after the restart"
        )

        # Killed (SIGKILL, under load), then recreated under the same name while down (it
        # starts later in the WAL).
        before = {f: f.handle for f in live}
        serve.kill()
        drop_slot_from_outside(conn)
        conn.execute("UPDATE t SET title = 'before the new slot' WHERE id = 3")
        conn.execute("SELECT pg_create_logical_replication_slot('pysync', 'pgoutput')")
        serve.start()
        await poll(
            lambda: all(f.handle != before[f] for f in live),
            30,
            "new shapes for the recreated slot",
        )
        await poll(lambda: writers.transactions > 300, 30, "writes")
    finally:
        await asyncio.to_thread(writers.join)
    await converge(live, expected(conn), what="after the slot changes")
    for follower in live:
        follower.check()
    assert any("resynced" in line for line in serve.process.output().splitlines())  # type: ignore[union-attr]
    serve.stop()


# -- one instance per data directory ---------------------------------------------------------


@pytest.mark.postgres  # a Postgres of its own
def test_second_serve_on_the_same_data_dir_exits(tmp_path: Path) -> None:
    data_dir = tmp_path / "pysync"
    port = free_port()
    first = ServeProcess(["--data-dir", str(data_dir), "--port", str(port)])
    try:
        first.wait_ready()
        second = ServeProcess(["--data-dir", str(data_dir), "--port", str(free_port())])
        assert second.wait_exit(30) == 1, second.output()
        message = second.output()
        assert f"in use by process {first.process.pid}" in message and str(data_dir) in message, (
            message
        )
        assert "Traceback" not in message
        # The first one is untouched: its Postgres runs, it serves.
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health").json() == {"status": "active"}
        with psycopg.connect(first.database_url, autocommit=True) as c:
            c.execute("CREATE TABLE x (id int PRIMARY KEY)")
            c.execute("INSERT INTO x VALUES (1)")
        r = httpx.get(f"http://127.0.0.1:{port}/v1/shape", params={"table": "x", "offset": "-1"})
        assert r.status_code == 200 and [m["value"] for m in r.json() if "key" in m] == [
            {"id": "1"}
        ]
    finally:
        assert first.stop(), first.output()
        stop_leftover_postgres(data_dir)


# -- lock waits ------------------------------------------------------------------------------


async def test_row_lock_gives_503_and_blocks_nothing_else(database_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    conn.execute(
        "INSERT INTO t SELECT g, g FROM generate_series(1, 10) g; INSERT INTO other VALUES (1)"
    )
    engine = Engine(database_url, flush_interval=0.02, lock_timeout=0.3, publish_timeout=1.5)
    await engine.start()
    client = Client(make_api(engine))
    try:
        with psycopg.connect(database_url) as app:
            app.execute("UPDATE t SET v = 0 WHERE id = 1")  # an open transaction's row lock
            request = asyncio.create_task(client.shape(table="t", offset="-1"))
            # Writers of the table are held off at most one lock_timeout at a time.
            with psycopg.connect(database_url, autocommit=True) as writer:
                started = time.monotonic()
                await asyncio.to_thread(writer.execute, "INSERT INTO t VALUES (100, 100)")
                assert time.monotonic() - started < 10
            # A shape on another table is served meanwhile.
            other = await client.shape(table="other", offset="-1")
            assert other.status_code == 200, other.text[:300]
            response = await request
            assert response.status_code == 503, response.text
            assert "lock" in response.json()["message"] and response.headers["retry-after"]
        # A request that gives up while the lock is held takes its shape's work with it.
        patient = Engine(
            database_url,
            flush_interval=0.02,
            slot="patient",
            publication="patient",
            lock_timeout=0.2,
            publish_timeout=30,
        )
        await patient.start()
        patient_client = Client(make_api(patient))
        try:
            with psycopg.connect(database_url) as app:
                app.execute("UPDATE other SET id = id WHERE id = 1")
                request = asyncio.create_task(patient_client.shape(table="other", offset="-1"))
                await poll(lambda: any(True for _ in patient.registry), 10, "the shape to be made")
                (shape,) = list(patient.registry)
                await asyncio.sleep(0.5)
                request.cancel()  # the client gave up
                await poll(
                    lambda: shape.gone, 10, "the abandoned shape to stop waiting for the lock"
                )
                assert "gave up" in shape.reason, shape.reason
                # One made in-process, that no request waits for (an app's own, a
                # test's), is nobody's to give up: it waits for the lock, then is made.
                made = await patient.shape(ShapeDefinition.create("other", where="id > 0"))
                await asyncio.sleep(1.0)  # lock_timeout 0.2 s: tried again and again
                assert not made.gone, made.reason
            await poll(lambda: made.state is LIVE, 30, "the shape once the lock is gone")
        finally:
            await patient_client.aclose()
            await patient.stop()
            conn.execute("DROP PUBLICATION IF EXISTS patient")
            conn.execute(
                "SELECT pg_drop_replication_slot('patient') FROM pg_replication_slots "
                "WHERE slot_name = 'patient'"
            )
        # The lock is gone: the shape is made.
        response = await client.shape(table="t", offset="-1")
        assert response.status_code == 200
        live = await engine.find(ShapeDefinition.create("t"))
        assert live is not None
        await quiesce(engine, conn)
        assert materialise(read_all(live.log)) == table_state(
            conn, "public", "t", ["id", "v"], ["id"]
        )
    finally:
        await client.aclose()
        await engine.stop()


async def test_failed_syncfs_of_many_logs_loses_nothing(
    database_url: str, conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many dirty logs one syncfs syncs them all; when it reports an error, every
    one of them counts as not durable (which log failed is not known)."""
    import ctypes

    from pysync.shapes import store as store_module

    create_table(conn, 400)
    real = store_module._syncfs
    failures = {"left": 0, "calls": 0}

    def syncfs(fd: int) -> int:
        failures["calls"] += 1
        if failures["left"]:
            failures["left"] -= 1
            ctypes.set_errno(errno.EIO)
            return -1
        assert real is not None
        return int(real(fd))

    monkeypatch.setattr(store_module, "_syncfs", syncfs)
    engine = Engine(database_url, storage_dir=tmp_path / "s", flush_interval=0.02)
    await engine.start()
    try:
        shapes = [await make(engine, "t", where=f"grp = {g % 4} AND v >= {g}") for g in range(24)]
        writers = Writers(database_url, 2, 400, seed=9)
        writers.start()
        try:
            await poll(lambda: failures["calls"] > 3, 30, "syncfs to be used")
            failures["left"] = 1
            await poll(lambda: engine.storage_error is not None, 30, "the syncfs failure")
            await poll(lambda: engine.storage_error is None, 30, "recovery from it")
            await poll(lambda: writers.transactions > 200, 30, "more writes")
        finally:
            await asyncio.to_thread(writers.join)
        await quiesce(engine, conn)
        for shape in shapes:
            where = shape.definition.where
            assert materialise(read_all(shape.log)) == table_state(
                conn, "public", "t", COLUMNS, ["id"], where
            )
    finally:
        await engine.stop()


@pytest.mark.postgres  # a Postgres of its own
async def test_health_is_degraded_while_postgres_is_down(tmp_path: Path) -> None:
    """Replication reconnects on its own while Postgres is stopped; health says so (a
    load balancer or an operator must not read "active" then), and is active again once
    changes stream. Its own cluster: the suite's is shared by every test."""
    from pysync.postgres.cluster import temporary_cluster

    with temporary_cluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as c:
            c.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        engine = Engine(cluster.url(), storage_dir=tmp_path, flush_interval=0.02)
        await engine.start()
        client = Client(make_api(engine))

        async def health_when(status: str) -> dict[str, Any]:
            deadline = time.monotonic() + 30
            while True:
                body: dict[str, Any] = (await client.raw("/v1/health")).json()
                if body["status"] == status:
                    return body
                assert time.monotonic() < deadline, f"health never became {status}: {body}"
                await asyncio.sleep(0.05)

        try:
            handle, offset, _ = await client.sync(table="t")
            assert (await client.raw("/v1/health")).json() == {"status": "active"}
            await asyncio.to_thread(cluster.stop)
            body = await health_when("degraded")
            assert body["reason"].startswith("replication connection lost"), body
            assert (await client.raw("/v1/health")).status_code == 503
            await asyncio.to_thread(cluster.start)
            await health_when("active")
            # And it streams again: a change made now reaches the shape.
            with psycopg.connect(cluster.url(), autocommit=True) as c:
                c.execute("INSERT INTO t VALUES (1, 1)")
            response = await client.shape(table="t", handle=handle, offset=offset, live="true")
            assert response.status_code == 200, response.text
            assert [m["value"]["id"] for m in response.json() if "key" in m] == ["1"]
        finally:
            await client.aclose()
            await engine.stop()
