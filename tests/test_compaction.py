"""Compaction of shape logs: Electric's rules, checked on the pure function, on logs with
clients reading before, during and after compactions (a model check), on a real engine
(a row updated thousands of times), and across a crash in the middle of one."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine_runner import changes, materialise, read_all, table_state
from pysync.engine import Engine
from pysync.log.compaction import NotCompactable, compact
from pysync.log.file_storage import COMPACTING, FileStorage
from pysync.log.log import ShapeLog
from pysync.log.memory_storage import MemoryStorage
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.postgres.cluster import free_port
from pysync.shapes.definition import ShapeDefinition
from serve_process import ServeProcess

Conn = Any
SNAPSHOT_END = b'{"headers":{"control":"snapshot-end","xmin":"1","xmax":"1","xip_list":[]}}'


def message(op: str, key: str, value: dict[str, Any], **extra: Any) -> bytes:
    entry: dict[str, Any] = {"key": key, "value": value}
    entry.update(extra)
    entry["headers"] = {"operation": op, "relation": ["public", "t"], "lsn": "1", "txids": [7]}
    return json.dumps(entry, separators=(",", ":")).encode()


def decoded(entries: list[tuple[LogOffset, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(offset), json.loads(payload)) for offset, payload in entries]


# -- the rules --------------------------------------------------------------------------


def test_updates_of_a_row_merge_at_the_last_ones_offset() -> None:
    o = [LogOffset(10 * n, 0) for n in range(1, 8)]
    entries = [
        (o[0], message("insert", "a", {"id": "1", "x": "0", "y": "0"})),
        (o[1], message("update", "a", {"id": "1", "x": "1"})),
        (o[2], message("update", "b", {"id": "2", "x": "5"})),
        (o[3], message("update", "a", {"id": "1", "y": "2"})),
        (o[4], message("update", "a", {"id": "1", "x": "3"})),
        (o[5], message("delete", "a", {"id": "1"})),
        (o[6], message("update", "a", {"id": "1", "x": "9"})),
    ]
    out = decoded(compact(entries))
    assert [(offset, m["headers"]["operation"], m["key"]) for offset, m in out] == [
        ("10_0", "insert", "a"),  # inserts and deletes stay, at their offsets
        ("30_0", "update", "b"),
        ("50_0", "update", "a"),  # three updates of a, at the last one's offset
        ("60_0", "delete", "a"),
        ("70_0", "update", "a"),  # nothing merges across a delete
    ]
    assert out[2][1]["value"] == {"id": "1", "x": "3", "y": "2"}
    # Electric's compacted entries keep only these headers.
    assert out[2][1]["headers"] == {"operation": "update", "relation": ["public", "t"]}
    # An entry that was not merged is kept byte for byte.
    assert compact(entries)[1] == entries[2]


def test_replica_full_keeps_each_columns_first_old_value() -> None:
    entries = [
        (LogOffset(1, 0), message("update", "a", {"id": "1", "x": "1"}, old_value={"x": "0"})),
        (LogOffset(2, 0), message("update", "a", {"id": "1", "x": "2"}, old_value={"x": "1"})),
        (
            LogOffset(3, 0),
            message("update", "a", {"id": "1", "x": "2", "y": "b"}, old_value={"y": "a"}),
        ),
    ]
    [(_, merged)] = decoded(compact(entries))
    assert merged["value"] == {"id": "1", "x": "2", "y": "b"}
    assert merged["old_value"] == {"x": "0", "y": "a"}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"headers":{"event":"move-out","patterns":[]}}',
        b'{"key":"k","value":{},"headers":{"operation":"insert","tags":["x"]}}',
        b'{"headers":{"control":"snapshot-end"}}',
    ],
)
def test_subquery_events_and_tags_are_not_compacted(payload: bytes) -> None:
    with pytest.raises(NotCompactable):
        compact(
            [(LogOffset(1, 0), message("update", "a", {"id": "1"})), (LogOffset(2, 0), payload)]
        )


# -- the model: clients reading across compactions ------------------------------------------


class Client:
    """Applies what it reads strictly: an insert of a row it has, or an update or delete
    of one it does not, is a failure (what compaction must never cause)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.offset = BEFORE_ALL

    def read(self, log: ShapeLog, max_bytes: int | None = None) -> bool:
        payloads, end, reached = log.read(self.offset, max_bytes)
        for payload in payloads:
            for entry in json.loads(b"[" + payload + b"]"):
                if "key" not in entry:
                    continue
                key, op = entry["key"], entry["headers"]["operation"]
                if op == "insert":
                    assert key not in self.rows, f"insert of a row it has: {entry}"
                    self.rows[key] = dict(entry["value"])
                elif op == "update":
                    assert key in self.rows, f"update of a row it lacks: {entry}"
                    self.rows[key].update(entry["value"])
                else:
                    assert key in self.rows, f"delete of a row it lacks: {entry}"
                    del self.rows[key]
        self.offset = end
        return reached


class Workload:
    """Random transactions of inserts, updates and deletes over a few keys, appended to
    a log; ``rows`` is what the table holds."""

    def __init__(self, rng: random.Random, keys: int) -> None:
        self.rng = rng
        self.keys = keys
        self.rows: dict[str, dict[str, Any]] = {}
        self.lsn = 100

    def transaction(self, log: ShapeLog) -> None:
        self.lsn += self.rng.randint(1, 50)
        entries = []
        for _ in range(self.rng.choice([1, 1, 2, 4])):
            key = f"k{self.rng.randrange(self.keys)}"
            if key not in self.rows:
                row = {"id": key, "a": str(self.rng.random()), "b": "x" * self.rng.randint(0, 80)}
                self.rows[key] = row
                entries.append(message("insert", key, dict(row)))
            elif self.rng.random() < 0.08:
                del self.rows[key]
                entries.append(message("delete", key, {"id": key}))
            else:
                column = self.rng.choice(["a", "b"])
                self.rows[key][column] = str(self.rng.random())
                entries.append(message("update", key, {"id": key, column: self.rows[key][column]}))
        log.append_changes([(LogOffset(self.lsn, 2 * n), e) for n, e in enumerate(entries)])


def compact_now(log: ShapeLog) -> bool:
    job = log.begin_compaction(log.storage.durable_size())
    if job is None:
        return False
    job.run()
    return log.finish_compaction(job)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("storage", ["memory", "file"])
def test_clients_across_compactions_end_equal_to_the_table(
    seed: int, storage: str, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    make = (lambda: MemoryStorage()) if storage == "memory" else (lambda: FileStorage(tmp_path))
    log = ShapeLog(make(), chunk_bytes=4000, compact_min_bytes=2000)
    log.append_snapshot_chunk(0, SNAPSHOT_END, last=True)
    workload = Workload(rng, keys=rng.choice([3, 20]))
    clients = [Client() for _ in range(8)]
    compactions = 0
    for step in range(1500):
        workload.transaction(log)
        if step % 10 == 0:
            log.sync()
        if rng.random() < 0.02:
            # A compaction, with transactions appended while its job ran.
            job = log.begin_compaction(log.storage.durable_size())
            if job is not None:
                job.run()
                for _ in range(rng.randint(0, 5)):
                    workload.transaction(log)
                compactions += log.finish_compaction(job)
        if storage == "file" and rng.random() < 0.01:
            log.sync()
            log = ShapeLog(FileStorage(tmp_path), chunk_bytes=4000, compact_min_bytes=2000)
        for client in rng.sample(clients, 2):
            client.read(log, rng.choice([None, 300]))
        if rng.random() < 0.01:
            clients.append(Client())  # a fresh client, from the start
    assert compactions >= 5
    for client in clients:
        while not client.read(log):
            pass
        assert client.rows == workload.rows
    # A fresh client reads less than the whole history.
    assert len(read_all(log)) < 1500 * 0.8


def test_a_compacted_log_is_smaller_and_survives_a_restart(tmp_path: Path) -> None:
    log = ShapeLog(FileStorage(tmp_path), compact_min_bytes=10_000)
    log.append_snapshot_chunk(0, message("insert", "a", {"id": "1", "n": "0"}), last=False)
    log.append_snapshot_chunk(1, SNAPSHOT_END, last=True)
    for n in range(1, 5001):
        log.append_changes(
            [(LogOffset(100 + n, 0), message("update", "a", {"id": "1", "n": str(n)}))]
        )
        if n % 100 == 0:
            log.sync()
    log.sync()
    before = (tmp_path / "log").stat().st_size
    assert compact_now(log)
    after = (tmp_path / "log").stat().st_size
    assert after < before / 10
    again = ShapeLog(FileStorage(tmp_path))
    rows = materialise(read_all(again))
    assert rows == {"a": {"id": "1", "n": "5000"}}
    # At most the live tail of updates stays unmerged.
    assert len(read_all(again)) <= 2 + 130


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_a_reader_made_before_a_compaction_reads_the_log_it_was_made_on(
    storage: str, tmp_path: Path
) -> None:
    log = ShapeLog(MemoryStorage() if storage == "memory" else FileStorage(tmp_path))
    log.append_snapshot_chunk(0, SNAPSHOT_END, last=True)
    for n in range(1, 400):
        log.append_changes([(LogOffset(n, 0), message("update", "a", {"id": "1", "n": str(n)}))])
    log.sync()
    part = log.slice(LogOffset(0, 0), 10_000_000)  # a response about to be streamed
    reader = log.storage.reader()
    assert compact_now(log)
    payloads = [reader.read(position, length) for position, length in part.spans]
    reader.close()
    assert [json.loads(p)["value"]["n"] for p in payloads] == [str(n) for n in range(1, 400)]


def test_a_crash_before_the_rename_leaves_the_old_log(tmp_path: Path) -> None:
    log = ShapeLog(FileStorage(tmp_path))
    log.append_snapshot_chunk(0, SNAPSHOT_END, last=True)
    for n in range(1, 400):
        log.append_changes([(LogOffset(n, 0), message("update", "a", {"id": "1", "n": str(n)}))])
    log.sync()
    job = log.begin_compaction(log.storage.durable_size())
    assert job is not None
    job.run()  # the compacted file is written; the process dies before the rename
    assert (tmp_path / COMPACTING).exists()
    again = ShapeLog(FileStorage(tmp_path))
    assert not (tmp_path / COMPACTING).exists()
    assert len(again.offsets) == 400


# -- a real engine -----------------------------------------------------------------------


@pytest.fixture
async def compacting_engine(database_url: str, conn: Conn, tmp_path: Path) -> Any:
    conn.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL, note text)")
    conn.execute("INSERT INTO counters VALUES (1, 0, 'one'), (2, 0, 'two')")
    engine = Engine(
        database_url, storage_dir=tmp_path / "storage", flush_interval=0.02, compact_min_bytes=8192
    )
    await engine.start()
    yield engine
    await engine.stop()


async def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_row_updated_thousands_of_times_is_read_as_one_update(
    compacting_engine: Engine, conn: Conn
) -> None:
    engine = compacting_engine
    consumer = await engine.shape(ShapeDefinition.create("counters", where="id = 1"))
    await wait_for(lambda: consumer.snapshot_done)
    early = read_all(consumer.log)
    old_client = materialise(early)
    offset = consumer.log.last_offset
    for n in range(1, 3001):
        conn.execute("UPDATE counters SET n = %s WHERE id = 1", (n,))
        if n == 1500:
            await wait_for(lambda: consumer.log.last_tx > 0)
            # A client part way through, before any compaction.
            middle = consumer.log.last_offset
            middle_rows = materialise(read_all(consumer.log))
    key = '"public"."counters"/"1"'
    await wait_for(lambda: materialise(read_all(consumer.log)).get(key, {}).get("n") == "3000")
    # Compaction catches up once the writes stop: the snapshot's row, a merged update and
    # what came after the last compaction (the live tail and less than the compacted size
    # again), not 3,000 updates.
    await wait_for(lambda: len(changes(read_all(consumer.log))) < 400)
    fresh = read_all(consumer.log)
    expected = table_state(conn, "public", "counters", ["id", "n", "note"], ["id"], "id = 1")
    assert materialise(fresh) == expected
    assert engine.compactor.compactions >= 1
    # Clients that stopped before compaction continue where they were.
    for rows, at in ((old_client, offset), (middle_rows, middle)):
        for entry in read_all(consumer.log, at):
            if "key" in entry:
                rows[entry["key"]].update(entry["value"])
        assert rows == expected


@pytest.mark.slow
async def test_killed_while_compacting_loses_nothing(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    conn.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL, pad text)")
    conn.execute("INSERT INTO counters SELECT i, 0, repeat('x', 200) FROM generate_series(1, 5) i")
    storage = tmp_path / "storage"
    port = free_port()
    server = ServeProcess.on(database_url, port, storage, "--compact-min-bytes", "4096")
    base = f"http://127.0.0.1:{port}/v1/shape"
    rng = random.Random(3)
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.get(base, params={"table": "counters", "offset": "-1"})
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        rows = {m["key"]: m["value"] for m in first.json() if "key" in m}
        for _ in range(4):
            for _ in range(600):
                conn.execute("UPDATE counters SET n = n + 1 WHERE id = %s", (rng.randint(1, 5),))
            # Killed at some moment of its work: compactions are running or due.
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            server.kill()
            server = ServeProcess.on(database_url, port, storage, "--compact-min-bytes", "4096")
        expected = table_state(conn, "public", "counters", ["id", "n", "pad"], ["id"])
        # The client that held an offset from before every kill and compaction continues.
        for _ in range(200):
            r = await http.get(
                base, params={"table": "counters", "offset": offset, "handle": handle}
            )
            assert r.status_code == 200, r.text
            for m in r.json():
                if "key" in m:
                    op = m["headers"]["operation"]
                    assert op == "update", m
                    rows[m["key"]].update(m["value"])
            offset = r.headers["electric-offset"]
            if "electric-up-to-date" in r.headers and rows == expected:
                break
        assert rows == expected
        # A fresh client reads the compacted log: far fewer than the 2,400 updates.
        fresh = await http.get(base, params={"table": "counters", "offset": "-1"})
        assert fresh.headers["electric-handle"] == handle
        more = await http.get(
            base,
            params={
                "table": "counters",
                "offset": fresh.headers["electric-offset"],
                "handle": handle,
            },
        )
        updates = [m for m in more.json() if "key" in m]
        assert "electric-up-to-date" in more.headers and len(updates) < 1200
    server.stop()
