"""A burst of new shapes on one table (an app opening a view per user, thousands at a
deploy): they share the catalog's answers instead of queueing one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from engine_runner import Conn, make, materialise, read_all, table_state
from pysync.engine import Engine


async def test_a_burst_of_new_shapes_on_one_table_all_start(
    engine: Engine, conn: Conn, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,500 new shapes of one table at once, while a writer's transaction holds the
    table for 2.5 of the 5 s publishing may wait. Each shape's table is looked up and
    its publishing checked, but a check that started after a shape asked answers it
    too: a handful of catalog sessions serve them all (one each, before, and the last
    timed out behind the others)."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, owner int)")
    conn.execute("INSERT INTO t SELECT g, g % 2500 FROM generate_series(1, 5000) g")
    sessions = 0
    catalog_session = engine.connections.catalog_session

    @asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        nonlocal sessions
        sessions += 1
        async with catalog_session() as session:
            yield session

    monkeypatch.setattr(engine.connections, "catalog_session", counted)
    writer = await psycopg.AsyncConnection.connect(database_url)
    await writer.execute("LOCK TABLE t IN ROW EXCLUSIVE MODE")  # as an INSERT would

    async def finish_writer() -> None:
        await asyncio.sleep(2.5)
        await writer.commit()
        await writer.close()

    release = asyncio.create_task(finish_writer())
    # Each waits for its snapshot from the start, as a request for it would.
    shapes = await asyncio.gather(
        *(make(engine, "t", where="owner = $1", params=[str(n)]) for n in range(2500))
    )
    await release
    assert len({s.handle for s in shapes}) == 2500
    assert not [s for s in shapes if s.gone]
    # Looking the table up and publishing it: two runs each (the first, and one for
    # everyone who came during it) plus lock retries while the writer held the table.
    assert sessions <= 20, f"{sessions} catalog sessions for one table's new shapes"
    assert materialise(read_all(shapes[7].log)) == table_state(
        conn, "public", "t", ["id", "owner"], ["id"], "owner = 7"
    )
