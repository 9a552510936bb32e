"""``pysync serve --workers N``: one replicating process, N HTTP workers on its logs.

Responses are the same bytes as a single process's for the same requests on the same
storage; live requests spread over the workers all get each commit; shapes asked for
through a worker are made by the replicating process; a dead worker is replaced; when
the replicating process dies, the workers stop by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from follower import Follower, converge
from pysync.engine import Engine
from pysync.postgres.cluster import free_port
from pysync.serve.hub import Hub
from pysync.serve.mirror import MirrorEngine
from pysync.serve.notify import Grown, frame
from pysync.serve.notify import Status as StatusMessage
from pysync.shapes.definition import ShapeDefinition
from serve_process import ServeProcess

pytestmark = pytest.mark.slow

MOMENT = ("date", "x-request-id")
"""Headers that differ between any two responses."""


@pytest.fixture
def db(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, note text)")
        conn.execute("INSERT INTO items SELECT g, 0, 'row ' || g FROM generate_series(1, 50) g")
    return database_url


def start(database_url: str, storage: Path, port: int, *extra: str) -> ServeProcess:
    server = ServeProcess(
        [
            "--database-url",
            database_url,
            "--port",
            str(port),
            "--storage-dir",
            str(storage),
            "--long-poll-timeout",
            "20",
            "--chunk-bytes",
            "2000",
            *extra,
        ]
    )
    server.wait_ready()
    return server


def children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def walk(http: httpx.Client, base: str, params: dict[str, str]) -> list[httpx.Response]:
    """A client's catch-up from -1 to up-to-date: every response."""
    responses = [http.get(base, params={**params, "offset": "-1"})]
    while "electric-up-to-date" not in responses[-1].headers:
        last = responses[-1]
        assert last.status_code == 200, last.text
        responses.append(
            http.get(
                base,
                params={
                    **params,
                    "offset": last.headers["electric-offset"],
                    "handle": last.headers["electric-handle"],
                },
            )
        )
    return responses


def lasting(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in MOMENT}


def rows(
    conn: psycopg.Connection[tuple[object, ...]], sql: str
) -> dict[str, dict[str, str | None]]:
    """Rows by id, values as the protocol sends them (text)."""
    cursor = conn.execute(sql)  # test-owned SQL
    names = [c.name for c in cursor.description or ()]
    return {
        str(r[0]): {n: None if v is None else str(v) for n, v in zip(names, r, strict=True)}
        for r in cursor
    }


def materialise(responses: list[httpx.Response]) -> dict[str, dict[str, str | None]]:
    state: dict[str, dict[str, str | None]] = {}
    for response in responses:
        for message in response.json():
            if "key" not in message:
                continue
            row_id = message["key"].rsplit("/", 1)[1].strip('"')
            if message["headers"]["operation"] == "delete":
                state.pop(row_id, None)
            else:
                state[row_id] = {**state.get(row_id, {}), **message["value"]}
    return state


def synced(
    http: httpx.Client,
    base: str,
    shapes: list[dict[str, str]],
    wanted: list[dict[str, dict[str, str | None]]],
) -> list[list[httpx.Response]]:
    """Walks of ``shapes`` once they hold ``wanted`` (every change replicated)."""
    deadline = time.monotonic() + 60
    while True:
        walks = [walk(http, base, params) for params in shapes]
        if [materialise(w) for w in walks] == wanted:
            return walks
        assert time.monotonic() < deadline, "the changes never reached the shapes"
        time.sleep(0.1)


def test_responses_are_the_bytes_a_single_process_serves(db: str, tmp_path: Path) -> None:
    storage, port = tmp_path / "storage", free_port()
    base = f"http://127.0.0.1:{port}/v1/shape"
    shapes = [
        {"table": "items"},
        {"table": "items", "where": "id <= $1", "params[1]": "20", "columns": "id,n"},
    ]
    single = start(db, storage, port)
    try:
        with httpx.Client(timeout=30) as http:
            for params in shapes:
                walk(http, base, params)  # made, with a snapshot in several chunks
            with psycopg.connect(db, autocommit=True) as conn:
                for k in range(1, 6):
                    conn.execute("UPDATE items SET n = %s WHERE id %% 7 = %s", (k, k))
                wanted = [
                    rows(conn, "SELECT id, n, note FROM items"),
                    rows(conn, "SELECT id, n FROM items WHERE id <= 20"),
                ]
            expected = synced(http, base, shapes, wanted)
    finally:
        single.stop()
    workers = start(db, storage, port, "--workers", "2")
    try:
        with httpx.Client(timeout=30) as http:
            # Several rounds: each connection lands on either worker.
            for _ in range(3):
                got = [walk(http, base, params) for params in shapes]
                assert [len(g) for g in got] == [len(e) for e in expected]
                for mine, theirs in zip(sum(got, []), sum(expected, []), strict=True):
                    assert mine.status_code == theirs.status_code
                    assert mine.content == theirs.content, mine.request.url
                    assert lasting(mine) == lasting(theirs), mine.request.url
    finally:
        assert workers.stop(), workers.output()


async def test_live_clients_on_both_workers_get_every_commit(db: str, tmp_path: Path) -> None:
    port = free_port()
    server = start(db, tmp_path / "storage", port, "--workers", "2")
    base = f"http://127.0.0.1:{port}/v1/shape"
    followers = [
        Follower(base, {"table": "items", "where": "id <= 3"}, name=f"c{i}").start()
        for i in range(12)
    ]
    try:

        def rows(n: int) -> dict[str, dict[str, str]]:
            return {
                f'"public"."items"/"{i}"': {"id": str(i), "n": str(n), "note": f"row {i}"}
                for i in (1, 2, 3)
            }

        await converge(followers, lambda f: rows(0), what="initial sync through the workers")
        with psycopg.connect(db, autocommit=True) as conn:
            for k in range(1, 6):
                conn.execute("UPDATE items SET n = %s WHERE id <= 3", (k,))
                await converge(followers, lambda f, k=k: rows(k), what=f"commit {k}")
        for f in followers:
            f.check()
            assert f.refetches == 0
        workers = children(server.process.pid)
        assert len([p for p in workers if alive(p)]) == 2
    finally:
        for f in followers:
            await f.close()
        assert server.stop(), server.output()


async def test_a_dead_worker_is_replaced(db: str, tmp_path: Path) -> None:
    port = free_port()
    server = start(db, tmp_path / "storage", port, "--workers", "2")
    base = f"http://127.0.0.1:{port}/v1/shape"
    try:
        first = children(server.process.pid)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = [p for p in children(server.process.pid) if alive(p)]
            if len(now) == 2 and first[0] not in now:
                break
            assert time.monotonic() < deadline, f"no new worker: {now}\n{server.output()}"
            await asyncio.sleep(0.1)
        # Every connection is served again (whichever worker takes it).
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(10):
                r = await http.get(base, params={"table": "items", "offset": "-1"})
                assert r.status_code == 200
    finally:
        assert server.stop(), server.output()


def test_workers_stop_when_the_replicating_process_dies(db: str, tmp_path: Path) -> None:
    port = free_port()
    server = start(db, tmp_path / "storage", port, "--workers", "2")
    workers = children(server.process.pid)
    assert len(workers) == 2
    server.kill()  # SIGKILL: no goodbye to the workers
    deadline = time.monotonic() + 30
    while any(alive(p) for p in workers):
        assert time.monotonic() < deadline, "workers outlived the replicating process"
        time.sleep(0.1)


def test_a_table_created_again_is_a_new_shape_through_the_workers(db: str, tmp_path: Path) -> None:
    """A worker that already serves a shape asks the replicating process again for a new
    client (offset=-1): a table dropped and created again makes a new shape there."""
    port = free_port()
    server = start(db, tmp_path / "storage", port, "--workers", "2")
    base = f"http://127.0.0.1:{port}/v1/shape"
    try:
        with httpx.Client(timeout=30) as http, psycopg.connect(db, autocommit=True) as conn:
            # Each worker (connections spread over them) learns the shape.
            old = {
                walk(http, base, {"table": "items"})[-1].headers["electric-handle"]
                for _ in range(6)
            }
            assert len(old) == 1
            conn.execute("DROP TABLE items")
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, note text)")
            conn.execute("INSERT INTO items VALUES (1, 7, 'new')")
            for _ in range(6):
                responses = walk(http, base, {"table": "items"})
                assert responses[-1].headers["electric-handle"] not in old
                assert materialise(responses) == {"1": {"id": "1", "n": "7", "note": "new"}}
            conn.execute("INSERT INTO items VALUES (2, 8, 'live')")
            synced(http, base, [{"table": "items"}], [rows(conn, "SELECT * FROM items")])
    finally:
        assert server.stop(), server.output()


def fresh(url: str, params: dict[str, str], method: str = "GET") -> httpx.Response:
    """A request on a connection of its own (so requests spread over the workers)."""
    with httpx.Client(timeout=30) as http:
        return http.request(method, url, params=params)


def fresh_walk(url: str, params: dict[str, str]) -> list[httpx.Response]:
    with httpx.Client(timeout=30) as http:
        return walk(http, url, params)


async def test_a_deletion_is_answered_once_no_worker_serves_the_shape(
    db: str, tmp_path: Path
) -> None:
    """DELETE through one worker is answered (202) only once the replicating process
    deleted the shape and every worker dropped it: the live requests waiting on either
    worker get 409, and no request after the 202 gets the old handle from any worker
    (Electric's "should detect shape deprecation and restart syncing")."""
    port = free_port()
    server = start(db, tmp_path / "storage", port, "--workers", "2", "--allow-delete")
    base = f"http://127.0.0.1:{port}/v1/shape"
    try:
        last = walk(httpx.Client(timeout=30), base, {"table": "items"})[-1]
        handle, offset = last.headers["electric-handle"], last.headers["electric-offset"]
        at = {"table": "items", "handle": handle, "offset": offset}
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(timeout=30)) for _ in range(8)
            ]
            waiting = [
                asyncio.ensure_future(c.get(base, params={**at, "live": "true"})) for c in clients
            ]
            await asyncio.sleep(1)  # waiting, on both workers
            assert not any(w.done() for w in waiting)
            # While the replicating process cannot act, the deletion is not acknowledged.
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                deleting = asyncio.ensure_future(
                    asyncio.to_thread(fresh, base, {"table": "items", "handle": handle}, "DELETE")
                )
                await asyncio.sleep(1)
                assert not deleting.done(), "DELETE answered before the shape was deleted"
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            deleted = await deleting
            assert deleted.status_code == 202, deleted.text
            after = await asyncio.gather(*(asyncio.to_thread(fresh, base, at) for _ in range(8)))
            assert [r.status_code for r in after] == [409] * 8, [r.text for r in after]
            done, _ = await asyncio.wait(waiting, timeout=5)
            assert len(done) == 8, "waiting live requests were not told of the deletion"
            answers = [w.result() for w in waiting]
            assert [r.status_code for r in answers] == [409] * 8
            new = {r.headers["electric-handle"] for r in [*after, *answers]}
            assert len(new) == 1 and handle not in new
            again = await asyncio.to_thread(fresh, base, {"handle": handle}, "DELETE")
            assert again.status_code == 404, again.text
    finally:
        assert server.stop(), server.output()


def test_a_subquery_over_a_table_created_a_moment_before(db: str, tmp_path: Path) -> None:
    port = free_port()
    server = start(db, tmp_path / "storage", port, "--workers", "2")
    base = f"http://127.0.0.1:{port}/v1/shape"
    shape = {"table": "tasks", "where": "project_id IN (SELECT project_id FROM members)"}
    try:
        with httpx.Client(timeout=30) as http, psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE TABLE members (project_id int PRIMARY KEY)")
            conn.execute("CREATE TABLE tasks (id int PRIMARY KEY, project_id int NOT NULL)")
            conn.execute("INSERT INTO members VALUES (1)")
            conn.execute("INSERT INTO tasks VALUES (1, 1), (2, 2)")
            for _ in range(6):  # through either worker
                responses = walk(http, base, shape)
                assert materialise(responses) == {"1": {"id": "1", "project_id": "1"}}
            conn.execute("INSERT INTO members VALUES (2)")
            synced(http, base, [shape], [rows(conn, "SELECT * FROM tasks")])
    finally:
        assert server.stop(), server.output()


def test_a_new_shape_on_a_table_renamed_and_created_again_waits_for_every_worker(
    db: str, tmp_path: Path
) -> None:
    """``ALTER TABLE items RENAME TO items_old`` then a new ``items``: a new client's
    request invalidates the old shape and gets a new one, but only once every worker
    dropped the old one. Else another worker, asked for the new handle, would still
    answer 409 with the old one, which the TS client then takes for a stale cached
    response of an expired shape: it never gets up to date."""
    port = free_port()
    server = start(db, tmp_path / "storage", port, "--workers", "2")
    base = f"http://127.0.0.1:{port}/v1/shape"
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            old = {fresh_walk(base, {"table": "items"})[-1].headers["electric-handle"]}
            old |= {fresh_walk(base, {"table": "items"})[-1].headers["electric-handle"]}
            assert len(old) == 1
            conn.execute("ALTER TABLE items RENAME TO items_old")
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, note text)")
            conn.execute("INSERT INTO items VALUES (1, 7, 'new')")
            stopped = children(server.process.pid)[0]
            os.kill(stopped, signal.SIGSTOP)  # the other worker takes every connection
            with ThreadPoolExecutor(1) as pool:
                try:
                    walking = pool.submit(fresh_walk, base, {"table": "items"})
                    time.sleep(1)
                    assert not walking.done(), "a new handle while a worker may serve the old"
                finally:
                    os.kill(stopped, signal.SIGCONT)
                responses = walking.result()
            handle = responses[-1].headers["electric-handle"]
            assert handle not in old
            assert materialise(responses) == {"1": {"id": "1", "n": "7", "note": "new"}}
            at = {
                "table": "items",
                "handle": handle,
                "offset": responses[-1].headers["electric-offset"],
            }
            for _ in range(6):  # either worker: the new handle, never a 409 to the old
                response = fresh(base, at)
                assert response.status_code == 200, response.text
            conn.execute("INSERT INTO items VALUES (2, 8, 'live')")
            synced(
                httpx.Client(timeout=30),
                base,
                [{"table": "items"}],
                [rows(conn, "SELECT * FROM items")],
            )
    finally:
        assert server.stop(), server.output()


async def test_a_snapshot_done_as_its_shape_is_handed_out_is_served(
    db: str, tmp_path: Path
) -> None:
    """The hub's reply with a new shape (still snapshotting) and the news that its
    snapshot is done can reach the asking worker in one read (a busy machine). The
    worker mirrors the shape before it reads on: else the news, about a shape it does
    not know yet, is dropped, and the request waits for a snapshot it never hears of.

    Made deterministic: the reply is held back by a deletion the other (stopped)
    worker has not acknowledged, the snapshot by a writer's lock on the table; the
    asking worker is stopped while both are sent to it."""
    port = free_port()
    storage = tmp_path / "storage"
    server = start(db, storage, port, "--workers", "2", "--allow-delete")
    base = f"http://127.0.0.1:{port}/v1/shape"
    asker, other = children(server.process.pid)
    stopped: set[int] = set()

    def stop(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        stopped.add(pid)

    def resume(pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        stopped.discard(pid)

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    try:
        with (
            psycopg.connect(db, autocommit=True) as conn,
            psycopg.connect(db) as writer,
            ThreadPoolExecutor(4) as pool,
        ):
            old = fresh_walk(base, {"table": "items"})[-1].headers["electric-handle"]
            conn.execute("CREATE TABLE late (id int PRIMARY KEY, v text)")
            writer.execute("INSERT INTO late VALUES (1, 'row')")  # holds off the publication
            loop = asyncio.get_running_loop()

            def call(*args: Any) -> asyncio.Future[Any]:
                return loop.run_in_executor(pool, *args)

            assert (storage / "shapes" / old).exists()
            stop(other)  # the asker takes every connection; the deletion waits for other
            deleting = call(fresh, base, {"table": "items", "handle": old}, "DELETE")
            await until(lambda: not (storage / "shapes" / old).exists(), "the deletion")
            asking = call(fresh, base, {"table": "late", "offset": "-1"})
            waits = (
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'"
            )
            await until(lambda: conn.execute(waits).fetchone() == (1,), "the snapshot's lock wait")
            stop(asker)  # the reply, then the snapshot's end, wait in its socket
            resume(other)
            # other takes this one; its reply follows the held-back one.
            assert (
                await call(fresh, base, {"table": "missing", "offset": "-1"})
            ).status_code == 400
            writer.commit()
            done = await call(fresh, base, {"table": "late", "offset": "-1"})  # through other
            assert done.status_code == 200, done.text
            resume(asker)
            response = await asyncio.wait_for(asking, 10)
            assert response.status_code == 200, response.text
            assert response.headers["electric-handle"] == done.headers["electric-handle"]
            assert [m["value"] for m in response.json() if "key" in m] == [{"id": "1", "v": "row"}]
            assert (await deleting).status_code == 202
    finally:
        for pid in list(stopped):
            resume(pid)
        assert server.stop(), server.output()


class _Unfollowable:
    """A mirrored shape whose log this worker cannot read (a bug, a broken file)."""

    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.reasons: list[str] = []
        self.log = self
        self.storage = self
        self.destroyed = False

    def follow(self, size: int) -> None:
        raise OSError(9, "Bad file descriptor")

    def invalidate(self, reason: str) -> None:
        self.reasons.append(reason)

    def destroy(self) -> None:
        self.destroyed = True


async def test_a_shape_a_worker_cannot_follow_is_dropped_there_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    """A failure following one shape's log, out of the hub's channel loop, stopped the
    worker for every shape (its listener ended: 'the replicating process is gone')."""
    engine = MirrorEngine(
        tmp_path / "hub",
        tmp_path,
        "postgresql://127.0.0.1:1/none",
        chunk_bytes=1 << 20,
        snapshot_connections=1,
    )
    broken, fine = _Unfollowable("1-broken"), _Unfollowable("2-fine")
    engine._by_handle.update({broken.handle: broken, fine.handle: fine})  # type: ignore[dict-item]
    reader = asyncio.StreamReader()
    reader.feed_data(frame(Grown(broken.handle, 100, "live", 7)))
    reader.feed_data(frame(StatusMessage("active", None, None, 9)))
    listening = asyncio.create_task(engine._listen(reader))
    try:
        deadline = time.monotonic() + 5
        while engine.last_seen_lsn < 9:
            assert not listening.done(), "the worker stopped listening to the hub"
            assert time.monotonic() < deadline, "the message after the failure was not read"
            await asyncio.sleep(0.01)
        assert broken.reasons and broken.destroyed and broken.handle not in engine._by_handle
        assert fine.handle in engine._by_handle and not fine.reasons
        assert not engine.closed.done()
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening


async def test_a_bug_finding_a_shape_for_a_worker_is_its_error_not_a_hang(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replicating process answers every worker's question: a failure it did not
    expect (a bug) is sent back as the request's error (the app's 500), where the
    question went unanswered and the request, with every other one for the shape,
    waited until its client gave up."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    engine = Engine(database_url, storage_dir=tmp_path / "storage")
    await engine.start()
    hub = Hub(engine, tmp_path / "hub.sock", lambda pid: None)
    await hub.start()
    mirror = MirrorEngine(
        hub.path,
        tmp_path / "storage",
        database_url,
        chunk_bytes=1 << 20,
        snapshot_connections=1,
    )
    try:
        await mirror.start()
        definition = ShapeDefinition.create("items")
        assert (await mirror.shape(definition)).handle  # the hub answers

        async def bug(*args: Any, **kwargs: Any) -> Any:
            raise ValueError("a bug")

        monkeypatch.setattr(engine, "shape", bug)
        with pytest.raises(RuntimeError, match="internal"):
            await asyncio.wait_for(
                mirror.shape(ShapeDefinition.create("items", where="id > 1")), 10
            )
    finally:
        await mirror.stop()
        await hub.close()
        await engine.stop()
