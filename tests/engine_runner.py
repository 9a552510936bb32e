"""Helpers for the engine tests, and a runner process for the crash test.

As a script: ``python engine_runner.py URL STORAGE_DIR SLOT SPEC_JSON`` starts an engine
on ``STORAGE_DIR``, creates the shapes listed in ``SPEC_JSON`` (a list of
``{"table": ..., "where": ...}``), prints one line ``<handle>`` per shape once all are
ready, then ``ready`` and runs until killed.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from pysync.engine import Engine
from pysync.log.log import ShapeLog
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.shapes.changes import relation_prefix, row_key
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.definition import ShapeDefinition

Entry = dict[str, Any]
Conn = psycopg.Connection[tuple[Any, ...]]


def read_all(log: ShapeLog, after: LogOffset = BEFORE_ALL) -> list[Entry]:
    """Every entry of a complete log after ``after``, walking it as a client does."""
    entries: list[Entry] = []
    offset = after
    for _ in range(1_000_000):
        payloads, end, reached = log.read(offset)
        for payload in payloads:
            entries.extend(json.loads(b"[" + payload + b"]"))
        if reached:
            return entries
        assert end > offset or payloads, f"log read made no progress at {offset}"
        offset = end
    raise AssertionError("log never reached its end")


def changes(entries: Sequence[Entry]) -> list[Entry]:
    return [e for e in entries if "key" in e]


def materialise(entries: Sequence[Entry]) -> dict[str, dict[str, Any]]:
    """Apply a log as the TS client's ``Shape`` does: insert sets, update merges, delete removes."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if "key" not in entry:
            continue
        op = entry["headers"]["operation"]
        key = entry["key"]
        if op == "insert":
            rows[key] = dict(entry["value"])
        elif op == "update":
            assert key in rows, f"update of a row the client does not have: {entry}"
            rows[key].update(entry["value"])
        else:
            assert op == "delete", entry
            assert key in rows, f"delete of a row the client does not have: {entry}"
            del rows[key]
    return rows


def table_state(
    conn: Conn,
    schema: str,
    table: str,
    columns: Sequence[str],
    pk: Sequence[str],
    where: str | None = None,
) -> dict[str, dict[str, Any]]:
    """What a shape should hold, straight from Postgres (values as text)."""
    # The type's output function (bool is "t", not "true"), NULL stays NULL.
    select = ", ".join(
        f"""CASE WHEN "{c}" IS NULL THEN NULL ELSE format('%s', "{c}") END""" for c in columns
    )
    query = f'SELECT {select} FROM "{schema}"."{table}"'
    if where:
        query += f" WHERE {where}"
    prefix = relation_prefix(schema, table)
    result: dict[str, dict[str, Any]] = {}
    for row in conn.execute(query).fetchall():
        value = dict(zip(columns, row, strict=True))
        result[row_key(prefix, [value[c] for c in pk])] = value
    return result


def check_offsets(log: ShapeLog) -> None:
    """Offsets strictly increasing (hence no duplicates), in memory and in the entries."""
    offsets = log.offsets
    assert all(a < b for a, b in zip(offsets, offsets[1:], strict=False)), "offsets not increasing"
    seen: set[tuple[int, int]] = set()
    for entry in changes(read_all(log)):
        headers = entry["headers"]
        if "lsn" in headers:
            position = (int(headers["lsn"]), headers["op_position"])
            assert position not in seen, f"duplicate offset {position}"
            seen.add(position)


def drop_slot(conn: Conn, slot: str) -> None:
    """Drop ``slot`` if it exists, ending the walsender still holding it: the one of an
    engine just stopped can take a moment to exit (its drop raced it: ObjectInUse)."""
    deadline = time.monotonic() + 30
    while True:
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (slot,),
        )
        try:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            return
        except psycopg.errors.ObjectInUse:
            assert time.monotonic() < deadline, f"could not drop the slot {slot}"
            time.sleep(0.05)


def fence(conn: Conn) -> int:
    """Commit a transaction after everything written so far; returns an LSN the engine's
    ``last_seen_lsn`` reaches once it processed that transaction (and hence all before):
    the message record ends where the commit record, whose LSN pgoutput sends, starts."""
    row = conn.execute(
        "SELECT pg_logical_emit_message(true, 'pysync-test', 'fence') - '0/0'"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def poll(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def quiesce(engine: Engine, conn: Conn, timeout: float = 30) -> None:
    """Wait until the engine processed every transaction committed so far."""
    target = fence(conn)
    if engine.crashed is not None:
        raise AssertionError("an engine task died") from engine.crashed
    await poll(lambda: engine.last_seen_lsn >= target, timeout, "replication to catch up")


async def ready(engine: Engine, live: ShapeConsumer, timeout: float = 30) -> None:
    """Wait until the shape's snapshot is complete and recorded (pending transactions
    applied)."""
    assert await live.wait(None, timeout, until_snapshot=True), "snapshot timed out"
    await poll(lambda: live.recorded or live.gone, timeout, "snapshot to complete")


async def _run(url: str, storage: str, slot: str, spec: list[dict[str, Any]]) -> None:
    logging.basicConfig(level=logging.INFO, format="runner %(asctime)s %(name)s %(message)s")
    faulthandler.register(signal.SIGUSR1)  # stacks on demand, for a test that timed out
    log = logging.getLogger("runner")
    engine = Engine(url, storage_dir=storage, slot=slot, flush_interval=0.02)
    await engine.start()
    log.info("started, recovered %s", sorted(c.handle for c in engine.registry))
    shapes = [
        await engine.shape(ShapeDefinition.create(s["table"], where=s.get("where"))) for s in spec
    ]
    for live in shapes:
        log.info("waiting for %s", live.handle)
        await ready(engine, live, 60)
        print(live.handle, flush=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_run(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))


async def make(engine: Engine, table: str, **kwargs: Any) -> ShapeConsumer:
    live = await engine.shape(ShapeDefinition.create(table, **kwargs))
    await ready(engine, live)
    return live


def lose_slot(conn: Any) -> None:
    """Make Postgres invalidate the (only) slot: a cluster with a tiny
    max_slot_wal_keep_size drops WAL the slot still needs at a checkpoint."""
    conn.execute("CREATE TABLE IF NOT EXISTS wal_filler (pad text)")
    for _ in range(60):
        status = conn.execute("SELECT wal_status FROM pg_replication_slots").fetchone()
        if status and status[0] == "lost":
            return
        conn.execute(
            "INSERT INTO wal_filler SELECT repeat('x', 1000) FROM generate_series(1, 5000)"
        )
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
    raise AssertionError("the slot was not invalidated")
