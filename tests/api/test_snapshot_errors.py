"""What a client sees when a new shape's snapshot cannot finish: the table dropped while
it ran (Electric: 409, then the table is unknown), the shape deleted while it ran (no
task dies, the client refetches), values the clause cannot compute (400 naming the
clause, never a role or SQL)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from http_support import Client, Conn, EngineFactory, make_api
from pysync.engine import Engine
from pysync.postgres.snapshot import stream_bytes, table_blocks
from pysync.shapes import snapshotter


class PausedSnapshot:
    """Holds the shape's snapshot after its transaction began, before it reads a row."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

        async def paused(*args: Any) -> AsyncIterator[Any]:
            self.reading.set()
            await self.release.wait()
            async for row in stream_bytes(*args):
                yield row

        async def paused_blocks(*args: Any) -> tuple[int, int]:  # a whole table
            self.reading.set()
            await self.release.wait()
            return await table_blocks(*args)

        monkeypatch.setattr(snapshotter, "stream_bytes", paused)
        monkeypatch.setattr(snapshotter, "table_blocks", paused_blocks)


async def test_table_dropped_during_the_snapshot_is_a_409_then_unknown(
    engine: Engine, client: Client, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = PausedSnapshot(monkeypatch)
    initial = asyncio.create_task(client.shape(table="other", offset="-1"))
    await asyncio.wait_for(paused.reading.wait(), 30)
    conn.execute("SET lock_timeout = '10s'")
    conn.execute("DROP TABLE other")
    paused.release.set()
    response = await asyncio.wait_for(initial, 30)
    assert response.status_code == 409, response.text
    assert response.json() == [{"headers": {"control": "must-refetch"}}]
    assert engine.crashed is None
    # The refetch finds no table: Electric's 400 for an unknown table.
    again = await client.shape(table="other", offset="-1")
    assert again.status_code == 400, again.text
    assert "does not exist" in again.json()["errors"]["table"][0]
    assert (await client.raw("/v1/health")).json() == {"status": "active"}


async def test_shape_deleted_during_its_snapshot(
    make_engine: EngineFactory,
    conn: Conn,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    paused = PausedSnapshot(monkeypatch)
    engine = await make_engine(storage_dir=tmp_path / "s")
    client = Client(make_api(engine, allow_delete=True))
    try:
        initial = asyncio.create_task(client.shape(table="items", offset="-1"))
        await asyncio.wait_for(paused.reading.wait(), 30)
        (consumer,) = list(engine.registry)
        deleted = await client.raw(
            f"/v1/shape?table=items&handle={consumer.handle}", method="DELETE"
        )
        assert deleted.status_code == 202, deleted.text
        paused.release.set()
        response = await asyncio.wait_for(initial, 30)
        assert response.status_code == 409, response.text
        # A new shape for the same table is served whole.
        handle, _, messages = await client.sync(table="items")
        assert handle != consumer.handle
        assert sorted(int(m["value"]["id"]) for m in messages if "key" in m) == [1, 2, 3]
    finally:
        await client.aclose()
        await engine.stop()
    problems = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("pysync")
    ]
    assert problems == [], [r.getMessage() for r in problems]
    assert not (tmp_path / "s" / "shapes" / consumer.handle).exists()
    # Nothing of the deleted shape was recorded: a restart does not bring it back.
    again = await make_engine(storage_dir=tmp_path / "s")
    assert again.get(consumer.handle) is None and again.get(handle) is not None


async def test_clause_failing_on_rows_is_a_400_about_the_clause(client: Client, conn: Conn) -> None:
    conn.execute("INSERT INTO items VALUES (4, 'big', 2147483647)")
    response = await client.shape(table="items", offset="-1", where="n + 1 > 0")
    assert response.status_code == 400, response.text
    (message,) = response.json()["errors"]["where"]
    assert message == (
        "the clause fails on the table's rows: numeric_value_out_of_range (SQLSTATE 22003)"
    )
    assert "postgres" not in response.text.lower() and "select" not in response.text.lower()
