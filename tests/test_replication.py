"""The replication stream against a real walsender: streaming, big transactions,
reconnects, crashes and precondition errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from engine_runner import lose_slot
from pysync.postgres import pgoutput as pg
from pysync.postgres.cluster import temporary_cluster
from pysync.postgres.publication import PublicationError, ensure_publication, publish_table
from pysync.postgres.replication import Idle, ReplicationStream
from pysync.postgres.slot import ReplicationError, SlotInUseError, SlotInvalidatedError
from pysync.postgres.transactions import Change, Transaction

Conn = psycopg.Connection[tuple[object, ...]]
SMALL_WORK_MEM = "options=-c%20logical_decoding_work_mem%3D64kB"


def with_options(url: str, options: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{options}"


class Consumer:
    """Runs a stream in a task, recording transactions and (optionally) raw messages."""

    def __init__(self, stream: ReplicationStream, record_messages: bool = False) -> None:
        self.stream = stream
        self.transactions: list[Transaction] = []
        self.messages: list[pg.PgOutputMessage] = []
        if record_messages:
            feed = stream.assembler.feed

            def recording(msg: pg.PgOutputMessage) -> object:
                self.messages.append(msg)
                return feed(msg)

            stream.assembler.feed = recording  # type: ignore[method-assign, assignment]
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.stream.transactions():
            if isinstance(item, Transaction):
                self.transactions.append(item)
                self.stream.acknowledge(item.end_lsn)
            elif isinstance(item, Idle):  # nothing pending: the position may be confirmed
                self.stream.acknowledge(item.lsn)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.task.done():
                self.task.result()
            assert time.monotonic() < deadline, "timed out waiting for replication"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.stream.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


@pytest.fixture
async def consumers() -> AsyncIterator[list[Consumer]]:
    started: list[Consumer] = []
    yield started
    for consumer in started:
        await consumer.stop()


def rows_of(txn: Transaction) -> list[tuple[object, ...]]:
    return [c.new for c in txn.changes if isinstance(c, Change) and c.new is not None]


async def test_streamed_transaction_drops_aborted_subtransaction_and_transaction(
    conn: Conn, database_url: str, consumers: list[Consumer]
) -> None:
    conn.execute("CREATE TABLE s (id int PRIMARY KEY, pad text)")
    stream = ReplicationStream(with_options(database_url, SMALL_WORK_MEM), streaming=True)
    await asyncio.to_thread(stream.setup)
    publish_table(conn, "pysync", "public", "s")
    consumer = Consumer(stream, record_messages=True)
    consumers.append(consumer)

    def streamed(pad: str) -> Callable[[], bool]:
        return lambda: any(
            isinstance(m, pg.Insert) and m.xid is not None and m.new[1] == pad
            for m in consumer.messages[-50:]
        )

    # Each abort happens after its changes were streamed (Postgres skips streaming a
    # transaction it already knows to be aborted).
    conn.execute("BEGIN")
    conn.execute("INSERT INTO s SELECT g, repeat('a', 100) FROM generate_series(1, 3000) g")
    conn.execute("SAVEPOINT sp")
    conn.execute("INSERT INTO s SELECT g, 'sub' FROM generate_series(100001, 103000) g")
    conn.execute("INSERT INTO s SELECT g, repeat('b', 100) FROM generate_series(103001, 106000) g")
    await consumer.wait_for(streamed("b" * 100))
    conn.execute("ROLLBACK TO SAVEPOINT sp")
    conn.execute("INSERT INTO s SELECT g, 'after' FROM generate_series(3001, 3010) g")
    conn.execute("COMMIT")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO s SELECT g, repeat('c', 100) FROM generate_series(200001, 206000) g")
    await consumer.wait_for(streamed("c" * 100))
    conn.execute("ROLLBACK")
    conn.execute("INSERT INTO s VALUES (0, 'marker')")
    await consumer.wait_for(lambda: len(consumer.transactions) >= 2)
    aborts = [m for m in consumer.messages if isinstance(m, pg.StreamAbort)]
    assert any(a.xid != a.subxid for a in aborts)
    assert any(a.xid == a.subxid for a in aborts)
    assert any(isinstance(m, pg.StreamCommit) for m in consumer.messages)
    big, marker = consumer.transactions
    assert sorted(int(r[0]) for r in rows_of(big)) == list(range(1, 3011))  # type: ignore[call-overload]
    assert rows_of(marker) == [("0", "marker")]


async def test_parallel_streaming_abort_carries_lsn(
    conn: Conn, database_url: str, consumers: list[Consumer]
) -> None:
    conn.execute("CREATE TABLE s (id int PRIMARY KEY, pad text)")
    stream = ReplicationStream(with_options(database_url, SMALL_WORK_MEM), streaming="parallel")
    assert stream.protocol_version == 4
    await asyncio.to_thread(stream.setup)
    publish_table(conn, "pysync", "public", "s")
    consumer = Consumer(stream, record_messages=True)
    consumers.append(consumer)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO s SELECT g, repeat('c', 100) FROM generate_series(1, 6000) g")
    await consumer.wait_for(lambda: any(isinstance(m, pg.StreamStop) for m in consumer.messages))
    conn.execute("ROLLBACK")
    await consumer.wait_for(lambda: any(isinstance(m, pg.StreamAbort) for m in consumer.messages))
    abort = next(m for m in consumer.messages if isinstance(m, pg.StreamAbort))
    assert abort.abort_lsn and abort.abort_lsn > 0 and abort.abort_time


@pytest.mark.parametrize("streaming", [False, True], ids=["protocol1", "protocol2"])
async def test_million_row_transaction_arrives_complete(
    conn: Conn, database_url: str, consumers: list[Consumer], streaming: bool
) -> None:
    conn.execute("CREATE TABLE m (id int PRIMARY KEY)")
    stream = ReplicationStream(database_url, streaming=streaming)
    await asyncio.to_thread(stream.setup)
    publish_table(conn, "pysync", "public", "m")
    consumer = Consumer(stream)
    consumers.append(consumer)
    conn.execute("INSERT INTO m SELECT generate_series(1, 1000000)")
    await consumer.wait_for(lambda: bool(consumer.transactions), timeout=240)
    (txn,) = consumer.transactions
    ids = [int(c.new[0]) for c in txn.changes if isinstance(c, Change) and c.new]  # type: ignore[arg-type]
    assert len(ids) == 1_000_000 and len(set(ids)) == 1_000_000
    assert min(ids) == 1 and max(ids) == 1_000_000


async def test_idle_slot_is_confirmed_on_keepalives(
    conn: Conn, database_url: str, consumers: list[Consumer]
) -> None:
    conn.execute("CREATE TABLE unpublished (id int)")
    stream = ReplicationStream(database_url, status_interval=0.2)
    await asyncio.to_thread(stream.setup)
    consumer = Consumer(stream)
    consumers.append(consumer)
    for _ in range(20):
        conn.execute("INSERT INTO unpublished SELECT generate_series(1, 1000)")
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    target = int(row[0])  # type: ignore[call-overload]

    def confirmed() -> int:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'pysync'"
        ).fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    await consumer.wait_for(lambda: confirmed() >= target, timeout=30)


async def test_an_idle_stream_keeps_telling_postgres_its_position(
    conn: Conn, database_url: str, consumers: list[Consumer]
) -> None:
    """A walsender sometimes misses the wakeup for a commit (seen with Postgres 18: a
    plain pg_recvlogical got a commit 9.5 s late, at its next status update) and sends
    the commit only when the client next writes to it. So an idle stream writes a
    status update every ``idle_feedback`` seconds, not only every ``status_interval``."""
    stream = ReplicationStream(database_url, status_interval=3600, idle_feedback=0.2)
    await asyncio.to_thread(stream.setup)
    consumer = Consumer(stream)
    consumers.append(consumer)

    def reply_time() -> object:
        row = conn.execute(
            "SELECT r.reply_time FROM pg_stat_replication r JOIN pg_replication_slots s"
            " ON s.active_pid = r.pid WHERE s.slot_name = 'pysync'"
        ).fetchone()
        return row[0] if row else None

    seen: set[object] = set()

    def updated_twice() -> bool:
        # Nothing is written meanwhile, so only idle feedback moves reply_time (Postgres
        # asks for a reply itself only after wal_sender_timeout / 2, 30 s by default).
        value = reply_time()
        if value is not None:
            seen.add(value)
        return len(seen) >= 3

    await consumer.wait_for(updated_twice, timeout=20)


async def test_only_acknowledged_positions_are_confirmed(conn: Conn, database_url: str) -> None:
    conn.execute("CREATE TABLE a (id int PRIMARY KEY)")
    stream = ReplicationStream(database_url, status_interval=0.1)
    await asyncio.to_thread(stream.setup)
    publish_table(conn, "pysync", "public", "a")
    (before,) = conn.execute(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pysync'"
    ).fetchone()  # type: ignore[misc]
    conn.execute("INSERT INTO a VALUES (1)")
    got = []
    async for txn in stream.transactions():
        if isinstance(txn, Transaction):
            got.append(txn)
            break  # never acknowledged
    await asyncio.sleep(0.5)
    await stream.close()
    (after,) = conn.execute(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pysync'"
    ).fetchone()  # type: ignore[misc]
    assert after == before
    # A new stream gets the unacknowledged transaction again.
    again = ReplicationStream(database_url)
    async for txn in again.transactions():
        if isinstance(txn, Transaction):
            assert rows_of(txn) == [("1",)]
            break
    await again.close()


def read_consumer_log(path: Path) -> list[str]:
    ids: list[str] = []
    if not path.exists():
        return ids
    for line in path.read_text().splitlines():
        ids.extend(line.split()[1:])
    return ids


def test_killed_consumer_resumes_exactly_once(
    conn: Conn, database_url: str, tmp_path: Path
) -> None:
    conn.execute("CREATE TABLE k (id int PRIMARY KEY)")
    ensure_publication(conn, "pysync")
    publish_table(conn, "pysync", "public", "k")
    conn.execute("SELECT pg_create_logical_replication_slot('pysync', 'pgoutput')")
    out = tmp_path / "consumed.txt"
    script = str(Path(__file__).with_name("replication_consumer.py"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    total = 0
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, script, database_url, str(out)], env=env)
        try:
            seen = len(read_consumer_log(out))
            for _ in range(300):  # single-row transactions while the consumer runs
                total += 1
                conn.execute("INSERT INTO k VALUES (%s)", (total,))
            # Kill it mid-stream: once it has consumed part of this round.
            deadline = time.monotonic() + 30
            while len(read_consumer_log(out)) < seen + 50 * (round_ + 1):
                assert time.monotonic() < deadline, "consumer made no progress"
                time.sleep(0.005)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    proc = subprocess.Popen([sys.executable, script, database_url, str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(read_consumer_log(out)) < total and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ids = read_consumer_log(out)
    assert sorted(map(int, ids)) == list(range(1, total + 1))  # all, each exactly once


@pytest.mark.postgres  # a Postgres of its own
async def test_postgres_restart_resumes_exactly_once() -> None:
    with temporary_cluster() as cluster:
        url = cluster.url()
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE r (id int PRIMARY KEY)")
        stream = ReplicationStream(url, max_backoff=0.5)
        await asyncio.to_thread(stream.setup)
        with psycopg.connect(url, autocommit=True) as c:
            publish_table(c, "pysync", "public", "r")
        consumer = Consumer(stream)
        try:
            total = 0
            for _ in range(3):
                with psycopg.connect(url, autocommit=True) as c:
                    for _ in range(200):
                        total += 1
                        c.execute("INSERT INTO r VALUES (%s)", (total,))
                await asyncio.to_thread(cluster.restart)
            url = cluster.url()
            n = total
            await consumer.wait_for(
                lambda: sum(len(rows_of(t)) for t in consumer.transactions) >= n
            )
            await asyncio.sleep(0.3)
            ids = [int(r[0]) for t in consumer.transactions for r in rows_of(t)]  # type: ignore[call-overload]
            assert sorted(ids) == list(range(1, total + 1))
        finally:
            await consumer.stop()


@pytest.mark.postgres  # a Postgres of its own
def test_wal_level_not_logical_names_the_fix() -> None:
    with temporary_cluster(settings={"wal_level": "replica"}) as cluster:
        stream = ReplicationStream(cluster.url())
        with pytest.raises(ReplicationError, match="ALTER SYSTEM SET wal_level = logical"):
            stream.setup()


def test_role_without_replication_names_the_fix(conn: Conn, database_url: str) -> None:
    conn.execute("DROP ROLE IF EXISTS plain; CREATE ROLE plain LOGIN PASSWORD 'pw'")
    url = database_url.replace(database_url.split("//")[1].split("@")[0], "plain:pw")
    try:
        with pytest.raises(ReplicationError, match='ALTER ROLE "plain" WITH REPLICATION'):
            ReplicationStream(url).setup()
    finally:
        conn.execute("DROP ROLE plain")


def test_publishing_a_table_the_role_does_not_own(conn: Conn, database_url: str) -> None:
    conn.execute("DROP ROLE IF EXISTS repl; CREATE ROLE repl LOGIN REPLICATION PASSWORD 'pw'")
    conn.execute("CREATE TABLE owned (id int PRIMARY KEY)")
    conn.execute("CREATE PUBLICATION pysync")
    conn.execute("ALTER PUBLICATION pysync OWNER TO repl")
    url = database_url.replace(database_url.split("//")[1].split("@")[0], "repl:pw")
    try:
        with (
            psycopg.connect(url, autocommit=True) as other,
            pytest.raises(PublicationError, match="Run as the table's owner"),
        ):
            publish_table(other, "pysync", "public", "owned")
    finally:
        conn.execute("DROP PUBLICATION pysync; DROP ROLE repl")


async def test_slot_in_use_by_another_process(
    conn: Conn, database_url: str, consumers: list[Consumer]
) -> None:
    first = ReplicationStream(database_url)
    await asyncio.to_thread(first.setup)
    consumers.append(Consumer(first))
    conn.execute("CREATE TABLE u (id int PRIMARY KEY)")
    for _ in range(100):
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'pysync'"
        ).fetchone()
        if row and row[0]:
            break
        await asyncio.sleep(0.05)
    second = ReplicationStream(database_url, slot_busy_timeout=0.5)
    with pytest.raises(SlotInUseError, match="in use by another process"):
        async for _ in second.transactions():
            pass


@pytest.mark.postgres  # a Postgres of its own
async def test_invalidated_slot_names_the_fix() -> None:
    settings = {"max_slot_wal_keep_size": "1MB", "wal_keep_size": "0"}
    with temporary_cluster(settings=settings) as cluster:
        url = cluster.url()
        stream = ReplicationStream(url)
        stream.setup()
        with psycopg.connect(url, autocommit=True) as c:
            lose_slot(c)
        with pytest.raises(SlotInvalidatedError, match="pg_drop_replication_slot"):
            async for _ in ReplicationStream(url).transactions():
                pass
