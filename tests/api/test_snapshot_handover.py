"""The end of a new shape's snapshot and the transactions buffered while it ran become
readable together.

A client that got ``up-to-date`` with ``global_last_seen_lsn`` G takes every change of
the shape with an LSN <= G as already delivered: @electric-sql/pglite-sync drops such a
change when it arrives later. So no response may reach the end of the snapshot while
transactions the stream already processed (and G counts) still wait in the shape's
buffer -- not even when handing the snapshot's session back to its pool takes a while
(psycopg_pool closes an expired connection there, awaiting the server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from engine_runner import poll, quiesce
from http_support import Client, Conn, data, make_api
from pysync.engine import Engine
from pysync.postgres.connections import AsyncConn
from pysync.postgres.snapshot import stream_bytes, table_blocks
from pysync.shapes import snapshotter
from pysync.shapes.consumer import LIVE


@pytest.mark.parametrize(
    ("where", "ids"), [(None, [1, 2, 3, 10]), ("id IN (SELECT id FROM other)", [1, 10])]
)
async def test_up_to_date_after_the_snapshot_covers_transactions_buffered_during_it(
    engine: Engine,
    client: Client,
    conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
    where: str | None,
    ids: list[int],
) -> None:
    conn.execute("INSERT INTO other VALUES (10, 'b')")
    shape = {"table": "items"} if where is None else {"table": "items", "where": where}
    reading = asyncio.Event()  # the snapshot has its MVCC snapshot, reads no rows yet
    read_on = asyncio.Event()
    handed_back = asyncio.Event()
    real_session = engine.connections.snapshot_session

    async def rows_after_a_pause(*args: Any) -> AsyncIterator[Any]:
        reading.set()
        await read_on.wait()
        async for row in stream_bytes(*args):
            yield row

    async def blocks_after_a_pause(*args: Any) -> tuple[int, int]:  # a whole table
        reading.set()
        await read_on.wait()
        return await table_blocks(*args)

    @asynccontextmanager
    async def slow_hand_back() -> AsyncIterator[AsyncConn]:
        async with real_session() as session:
            yield session
        if reading.is_set():  # the shape's own snapshot (not a subquery's, read before it)
            await handed_back.wait()

    monkeypatch.setattr(snapshotter, "stream_bytes", rows_after_a_pause)
    monkeypatch.setattr(snapshotter, "table_blocks", blocks_after_a_pause)
    monkeypatch.setattr(engine.connections, "snapshot_session", slow_hand_back)

    initial = asyncio.create_task(client.shape(**shape, offset="-1"))
    await asyncio.wait_for(reading.wait(), 30)
    conn.execute("INSERT INTO items VALUES (10, 'committed during the snapshot', 10)")
    await quiesce(engine, conn)  # the stream has it: the shape buffered it
    read_on.set()
    first = await asyncio.wait_for(initial, 30)
    assert first.status_code == 200, first.text
    handle = first.headers["electric-handle"]
    second = await client.shape(**shape, handle=handle, offset=first.headers["electric-offset"])
    assert second.status_code == 200, second.text
    assert "electric-up-to-date" in second.headers
    seen = int(second.json()[-1]["headers"]["global_last_seen_lsn"])

    handed_back.set()
    live = engine.get(handle)
    assert live is not None
    await poll(lambda: live.state is LIVE, 30, "the shape to go live")
    rest = await client.shape(**shape, handle=handle, offset=second.headers["electric-offset"])
    assert rest.status_code == 200, rest.text
    late = [m for m in data(rest.json()) if int(m["headers"]["lsn"]) <= seen]
    assert late == [], (
        f"changes at or below the up-to-date's global_last_seen_lsn {seen} came after it"
    )
    delivered = data(first.json() + second.json() + rest.json())
    assert sorted(int(m["value"]["id"]) for m in delivered) == ids


async def test_a_stop_while_a_served_shape_is_being_recorded_keeps_it(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A shape's snapshot is readable before its registry record is durable (the record
    is written in a thread after the log's fsync). A stop in that window must wait for
    the record: else the client that was served it gets a 409 after the restart."""
    from pysync.shapes.store import ShapeStore

    recording = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_remember = ShapeStore.remember

    def slow_remember(self: ShapeStore, consumer: Any) -> None:
        loop.call_soon_threadsafe(recording.set)
        time.sleep(0.5)  # a slow disk
        real_remember(self, consumer)

    monkeypatch.setattr(ShapeStore, "remember", slow_remember)
    engine = await make_engine(storage_dir=tmp_path / "s")
    client = Client(make_api(engine))
    try:
        handle, offset, _ = await client.sync(table="items")
        await asyncio.wait_for(recording.wait(), 10)
    finally:
        await client.aclose()
        await engine.stop()
    again = await make_engine(storage_dir=tmp_path / "s")
    assert again.get(handle) is not None, "the served shape was lost by the stop"
