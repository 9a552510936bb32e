"""Shapes inside the app (``Sync.materialise`` / ``Sync.subscribe``), against the real
Postgres: in embedded mode (the engine's log read in-process) and in http mode (a
``pysync serve`` subprocess), the same code. The view equals ``SELECT`` after seeded
random writes, across a 409 (the shape deleted, the table truncated); subquery shapes
move rows in and out; model instances are typed as the ORM types them; a slow reader
never delays the view nor a fast reader."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pysync
from pysync.app.view import Change, View
from pysync.client import FellBehind
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess

WAIT = 20.0
KEY = '"public"."items"/"{}"'


@asynccontextmanager
async def running_sync(mode: str, database_url: str, tmp_path: Path) -> AsyncIterator[pysync.Sync]:
    """A started Sync: embedded (the engine here), or http mode on a ``pysync serve``."""
    if mode == "embedded":
        async with pysync.Sync(database_url, in_memory=True, env=False) as sync:
            yield sync
        return
    port = free_port()
    server = ServeProcess.on(database_url, port, tmp_path / "shapes")
    try:
        async with pysync.Sync(mode="http", url=f"http://127.0.0.1:{port}", env=False) as sync:
            yield sync
    finally:
        server.stop()


def create_items(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, label text, price numeric,"
        " at timestamptz, ref uuid, ok boolean, doc jsonb)"
    )


def selected(conn: psycopg.Connection[Any], where: str = "true") -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(f"SELECT * FROM items WHERE {where}").fetchall()
    return {KEY.format(row["id"]): dict(row) for row in rows}


def random_writes(conn: psycopg.Connection[Any], rng: random.Random, count: int) -> int:
    """``count`` random inserts, updates and deletes in a few transactions; the last
    transaction's id (``pg_current_xact_id()``)."""
    txid = 0
    for _ in range(max(count // 5, 1)):
        with conn.transaction():
            for _ in range(5):
                ident = rng.randrange(40)
                action = rng.random()
                if action < 0.5:
                    conn.execute(
                        "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (id) DO UPDATE SET n = excluded.n, label = excluded.label",
                        (
                            ident,
                            rng.randrange(100),
                            rng.choice(["a", "b", None, "ü ∑"]),
                            Decimal(rng.randrange(10_000)) / 100,
                            dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
                            + dt.timedelta(seconds=rng.randrange(10**6)),
                            uuid.UUID(int=rng.getrandbits(128)),
                            rng.random() < 0.5,
                            psycopg.types.json.Jsonb({"k": rng.randrange(5), "l": [1, 2]}),
                        ),
                    )
                elif action < 0.8:
                    conn.execute(
                        "UPDATE items SET n = %s, ok = NOT coalesce(ok, false) WHERE id = %s",
                        (rng.randrange(100), ident),
                    )
                else:
                    conn.execute("DELETE FROM items WHERE id = %s", (ident,))
            txid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
    return int(txid)


async def settle(view: View, conn: psycopg.Connection[Any]) -> None:
    """Until a marker transaction (a change in the shape) is in the view."""
    with conn.transaction():
        conn.execute("INSERT INTO items (id, n) VALUES (1000, 0) ON CONFLICT (id) DO NOTHING")
        conn.execute("UPDATE items SET n = n + 1 WHERE id = 1000")
        txid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
    await view.wait_for_txid(txid, WAIT)


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_view_equals_select_after_random_writes_and_a_409(
    mode: str, database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_items(conn)
    rng = random.Random(26)
    random_writes(conn, rng, 30)
    async with (
        running_sync(mode, database_url, tmp_path) as sync,
        sync.materialise("items", timeout=WAIT) as view,
    ):
        assert view.rows == selected(conn)
        changes: list[Change] = []

        async def collect() -> None:
            async for change in view.changes():
                changes.append(change)

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)
        for _ in range(3):
            txid = random_writes(conn, rng, 40)
            await view.wait_for_txid(txid, WAIT)
            assert view.rows == selected(conn)
        first_handle = view.handle
        # A 409 in the middle: the shape is truncated away; the view starts over.
        conn.execute("TRUNCATE items")
        txid = random_writes(conn, rng, 40)
        await settle(view, conn)
        assert view.rows == selected(conn)
        assert view.handle != first_handle
        assert any(change.operation == "reset" for change in changes)
        after = changes[changes.index(Change("reset", None, None, None)) + 1 :]
        assert after and all(c.operation in ("insert", "update", "delete") for c in after)
        # Every change applied in order rebuilds the rows from the reset on.
        rebuilt: dict[str, Any] = {}
        for change in after:
            if change.operation == "delete":
                del rebuilt[change.key]  # type: ignore[arg-type]
            else:
                rebuilt[change.key] = change.row  # type: ignore[index]
        assert rebuilt == view.rows
        collector.cancel()


async def test_deleted_shape_resets_the_view_embedded(
    database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_items(conn)
    conn.execute("INSERT INTO items (id, n) VALUES (1, 1), (2, 2)")
    async with (
        running_sync("embedded", database_url, tmp_path) as sync,
        sync.materialise("items", where="n > $1", params=[1], timeout=WAIT) as view,
    ):
        assert view.rows == selected(conn, "n > 1")
        changes = view.changes()
        following = asyncio.ensure_future(changes.__anext__())
        await asyncio.sleep(0)
        handle = view.handle
        assert handle is not None
        assert await sync.engine.delete(handle)
        assert await asyncio.wait_for(following, WAIT) == Change("reset", None, None, None)
        inserted = await asyncio.wait_for(changes.__anext__(), WAIT)
        assert inserted.operation == "insert" and inserted.key == KEY.format(2)
        conn.execute("UPDATE items SET n = 5 WHERE id = 1")
        change = await asyncio.wait_for(changes.__anext__(), WAIT)
        assert (change.operation, change.key, change.row["n"], change.old) == (
            "insert",
            KEY.format(1),
            5,
            None,
        )
        assert view.rows == selected(conn, "n > 1")
        await changes.aclose()


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_updates_and_deletes_carry_the_old_row(
    mode: str, database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_items(conn)
    conn.execute("INSERT INTO items (id, n, label) VALUES (1, 1, 'one')")
    async with running_sync(mode, database_url, tmp_path) as sync:
        changes = sync.subscribe("items", replica="full")
        first = await asyncio.wait_for(changes.__anext__(), WAIT)
        assert first.operation == "insert" and first.row["label"] == "one"
        conn.execute("UPDATE items SET label = 'uno' WHERE id = 1")
        update = await asyncio.wait_for(changes.__anext__(), WAIT)
        assert update.operation == "update"
        assert (update.row["label"], update.old["label"], update.row["n"]) == ("uno", "one", 1)
        conn.execute("DELETE FROM items WHERE id = 1")
        delete = await asyncio.wait_for(changes.__anext__(), WAIT)
        assert (delete.operation, delete.row["label"]) == ("delete", "uno")
        await changes.aclose()


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]
    label: Mapped[str | None]
    price: Mapped[Decimal | None] = mapped_column(sa.Numeric)
    at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    ref: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    ok: Mapped[bool | None]
    doc: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_model_rows_are_detached_typed_instances(
    mode: str, database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_items(conn)
    ref = uuid.uuid4()
    conn.execute(
        "INSERT INTO items VALUES (1, 7, 'x', 12.50, '2026-03-04 05:06:07.123+02', %s, true,"
        ' \'{"a": [1, {"b": null}]}\')',
        (ref,),
    )
    async with (
        running_sync(mode, database_url, tmp_path) as sync,
        sync.materialise(Item, where=Item.n > 5, timeout=WAIT) as view,
    ):
        (item,) = view.rows.values()
        assert isinstance(item, Item)
        assert sa.inspect(item).detached
        assert (item.id, item.n, item.label) == (1, 7, "x")
        assert type(item.price) is Decimal and item.price == Decimal("12.50")
        assert item.at == dt.datetime(2026, 3, 4, 3, 6, 7, 123000, tzinfo=dt.UTC)
        assert (item.ref, item.ok, item.doc) == (ref, True, {"a": [1, {"b": None}]})
        assert view.rows[KEY.format(1)] is item, "an unchanged row keeps its instance"
        changes = view.changes()
        following = asyncio.ensure_future(changes.__anext__())
        await asyncio.sleep(0)
        with conn.transaction():
            conn.execute("UPDATE items SET n = 9, ok = false WHERE id = 1")
            txid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
        await view.wait_for_txid(txid, WAIT)
        change = await asyncio.wait_for(following, WAIT)
        assert isinstance(change.row, Item) and isinstance(change.old, Item)
        assert (change.row.n, change.row.ok, change.old.n) == (9, False, 7)
        assert view.rows[KEY.format(1)].n == 9
        await changes.aclose()


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_wait_for_the_writers_txid(
    mode: str, database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_items(conn)
    writer = pysync.Writer().allow("items")
    async with (
        running_sync(mode, database_url, tmp_path) as sync,
        sync.materialise("items", timeout=WAIT) as view,
    ):
        mutation = {
            "type": "insert",
            "modified": {"id": 3, "n": 4},
            "syncMetadata": {"relation": ["public", "items"]},
        }
        txid = writer.apply([mutation], conn)
        await view.wait_for_txid(txid, WAIT)
        assert view.rows[KEY.format(3)]["n"] == 4
    # A view made after the transaction has it in its snapshot: no wait.
    async with (
        running_sync(mode, database_url, tmp_path / "again") as sync,
        sync.materialise("items", timeout=WAIT) as view,
    ):
        await view.wait_for_txid(txid, 0.5)


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_a_slow_reader_delays_no_one_and_catches_up_or_falls_behind(
    mode: str, database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_items(conn)
    async with (
        running_sync(mode, database_url, tmp_path) as sync,
        sync.materialise("items", timeout=WAIT) as view,
        sync.materialise("items", timeout=WAIT) as other,
    ):
        bounded = view.changes(max_behind=5)
        slow = view.changes()
        fast = view.changes()
        waiting = [asyncio.ensure_future(it.__anext__()) for it in (bounded, slow, fast)]
        await asyncio.sleep(0)
        conn.execute("INSERT INTO items (id, n) VALUES (100, 0)")
        for first in waiting:
            assert (await asyncio.wait_for(first, WAIT)).key == KEY.format(100)
        txid = 0
        for n in range(20):
            with conn.transaction():
                conn.execute("INSERT INTO items (id, n) VALUES (%s, %s)", (n, n))
                txid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
            if n == 9:  # in two rounds: the second finds the first unread
                await view.wait_for_txid(txid, WAIT)
        # Nobody has read more than one change: the views are up to date all the same.
        await view.wait_for_txid(txid, WAIT)
        await other.wait_for_txid(txid, WAIT)
        assert view.rows == other.rows == selected(conn)
        fast_keys: list[str | None] = []
        while len(fast_keys) < 20:
            fast_keys.append((await asyncio.wait_for(fast.__anext__(), WAIT)).key)
        assert fast_keys == [KEY.format(n) for n in range(20)]
        # The slow reader catches up: every change, in order.
        slow_keys: list[str | None] = []
        while len(slow_keys) < 20:
            slow_keys.append((await asyncio.wait_for(slow.__anext__(), WAIT)).key)
        assert slow_keys == fast_keys
        # The bounded one fell more than 5 changes behind: told so, by how much.
        with pytest.raises(FellBehind, match=r"fell \d+ changes behind.*max_behind=5") as error:
            while True:
                await asyncio.wait_for(bounded.__anext__(), WAIT)
        assert error.value.behind > 5 and error.value.bound == 5
        for it in (slow, fast):
            await it.aclose()


SUBQUERY_SCHEMA = """
CREATE TABLE memberships (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text);
INSERT INTO memberships VALUES (1, 1), (1, 6), (2, 2);
INSERT INTO todos SELECT g, 1 + g % 6, 't' || g FROM generate_series(1, 30) g;
"""
MEMBER = "project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)"


def todos_of_user_1(conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(f"SELECT * FROM todos WHERE {MEMBER.replace('$1', '1')}").fetchall()
    return {row["id"]: dict(row) for row in rows}


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_subquery_view_follows_moves_in_and_out(
    mode: str, database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute(SUBQUERY_SCHEMA)
    rng = random.Random(2626)
    async with (
        running_sync(mode, database_url, tmp_path) as sync,
        sync.materialise("todos", where=MEMBER, params=["1"], timeout=WAIT) as view,
    ):
        changes: list[Change] = []

        async def collect() -> None:
            async for change in view.changes():
                changes.append(change)

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)
        for step in range(40):
            project = rng.randrange(1, 6)  # project 6 stays user 1's: the marker's
            action = rng.random()
            if action < 0.3:
                conn.execute(
                    "INSERT INTO memberships VALUES (1, %s) ON CONFLICT DO NOTHING", (project,)
                )
            elif action < 0.6:
                conn.execute(
                    "DELETE FROM memberships WHERE user_id = 1 AND project_id = %s", (project,)
                )
            elif action < 0.8:
                conn.execute(
                    "UPDATE todos SET project_id = %s WHERE id = %s",
                    (project, rng.randrange(1, 31)),
                )
            else:
                conn.execute(
                    "INSERT INTO todos VALUES (%s, %s, 'new') ON CONFLICT (id) DO UPDATE"
                    " SET title = 'changed'",
                    (100 + rng.randrange(20), project),
                )
            with conn.transaction():
                conn.execute(
                    "INSERT INTO todos VALUES (999, 6, %s) ON CONFLICT (id) DO UPDATE"
                    " SET title = excluded.title",
                    (f"marker {step}",),
                )
                txid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
            await view.wait_for_txid(txid, WAIT)
            rows = {row["id"]: row for row in view.rows.values()}
            assert rows == todos_of_user_1(conn), f"after step {step}"
        # Rows moved out reached the change stream as deletes of the rows they were.
        moved_out = [c for c in changes if c.operation == "delete"]
        assert moved_out and all(c.row == c.old and c.row["id"] for c in moved_out)
        collector.cancel()


async def test_an_open_view_keeps_idle_close_away(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Idle close closes replication when nothing is served; a view following a shape
    is served: its changes keep coming."""
    create_items(conn)
    async with (
        pysync.Sync(database_url, in_memory=True, env=False, replication_idle_timeout=1) as sync,
        sync.materialise("items", timeout=WAIT) as view,
    ):
        await asyncio.sleep(3)
        assert sync.engine.idle is not None and not sync.engine.idle.asleep
        with conn.transaction():
            conn.execute("INSERT INTO items (id, n) VALUES (1, 1)")
            txid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
        await view.wait_for_txid(txid, 10)
        assert view.rows == selected(conn)


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_a_bad_shape_raises_what_to_fix(
    mode: str, database_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    create_items(conn)
    async with running_sync(mode, database_url, tmp_path) as sync:
        with pytest.raises(Exception, match="nope") as error:
            async with sync.materialise("nope", timeout=WAIT):
                pass
        assert type(error.value).__name__ in ("ShapeError", "ClientError")
        with pytest.raises(Exception, match="missing_column"):
            async with sync.materialise("items", where="missing_column = 1", timeout=WAIT):
                pass
        # The Sync serves other views all the same.
        async with sync.materialise("items", timeout=WAIT) as view:
            assert view.rows == {}
        assert not sync._views, "closed views are forgotten"
