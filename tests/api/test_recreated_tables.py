"""A table dropped and created again under the same name (its shape's own, or a
subquery's): Postgres drops it from the publication and sends nothing, so only the
catalog tells. A new client (``offset=-1``) gets a new shape on the new table, published
and synced live; the old shape's clients get a 409; a table that is gone is a 400."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from http_support import (
    BOTH_SERVERS,
    MUST_REFETCH,
    Client,
    Conn,
    EngineFactory,
    assert_invalid,
    data,
    make_api,
    until,
    waiting,
)
from pysync.engine import Engine
from pysync.postgres.connections import Connections


async def live_rows(
    client: Client, handle: str, offset: str, want: int, **params: Any
) -> list[Any]:
    seen: list[Any] = []
    for _ in range(10):
        response = await client.shape(handle=handle, offset=offset, live="true", **params)
        assert response.status_code == 200, response.text
        offset = response.headers["electric-offset"]
        seen += data(response.json())
        if len(seen) >= want:
            break
    return seen


@BOTH_SERVERS
async def test_a_table_created_again_is_a_new_shape(client: Client, conn: Conn) -> None:
    conn.execute("CREATE TABLE again (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO again VALUES (1, 'old')")
    old_handle, old_offset, messages = await client.sync(table="again")
    assert [m["value"]["v"] for m in data(messages)] == ["old"]
    conn.execute("DROP TABLE again")
    conn.execute("CREATE TABLE again (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO again VALUES (2, 'new')")
    handle, offset, messages = await client.sync(table="again")
    assert handle != old_handle
    assert [m["value"]["v"] for m in data(messages)] == ["new"]
    assert ("again",) in conn.execute("SELECT tablename FROM pg_publication_tables").fetchall()
    conn.execute("INSERT INTO again VALUES (3, 'live')")
    assert [m["value"]["v"] for m in await live_rows(client, handle, offset, 1, table="again")] == [
        "live"
    ]
    response = await client.shape(table="again", handle=old_handle, offset=old_offset)
    assert response.status_code == 409, response.text
    conn.execute("DROP TABLE again")
    assert_invalid(
        await client.shape(table="again", offset="-1"),
        {
            "table": [
                'Table "public"."again" does not exist. If the table name contains capitals or special '
                "characters you must quote it."
            ]
        },
    )


@BOTH_SERVERS
@pytest.mark.parametrize(
    "where", ["ref IN (SELECT k FROM dep)", "ref IN (SELECT k FROM dep WHERE k > 0)"]
)
async def test_a_subquery_table_created_again_is_a_new_shape(
    client: Client, conn: Conn, where: str
) -> None:
    conn.execute("CREATE TABLE outer_rows (id int PRIMARY KEY, ref int)")
    conn.execute("INSERT INTO outer_rows SELECT g, g FROM generate_series(1, 5) g")
    conn.execute("CREATE TABLE dep (id int PRIMARY KEY, k int)")
    conn.execute("INSERT INTO dep VALUES (1, 1)")
    old_handle, _, messages = await client.sync(table="outer_rows", where=where)
    assert [m["value"]["id"] for m in data(messages)] == ["1"]
    conn.execute("DROP TABLE dep")
    conn.execute("CREATE TABLE dep (id int PRIMARY KEY, k int)")
    conn.execute("INSERT INTO dep VALUES (2, 2)")
    handle, offset, messages = await client.sync(table="outer_rows", where=where)
    assert handle != old_handle
    assert [m["value"]["id"] for m in data(messages)] == ["2"]
    # The new dep is published: its rows move rows of outer_rows in.
    conn.execute("INSERT INTO dep VALUES (3, 3)")
    moved = await live_rows(client, handle, offset, 1, table="outer_rows", where=where)
    assert [m["value"]["id"] for m in moved] == ["3"]


# -- live clients: the periodic schema check -----------------------------------------
#
# Nothing replicated tells of a table dropped and created again (the new one is not in
# the publication) or of one altered or renamed without a change since: the engine
# compares the shapes' tables with the catalog every ``schema_check_interval`` seconds.

CHECK_INTERVAL = 0.3
PROMPTLY = 5.0
"""A waiting live request learns of the change within this (the long-poll is 20 s)."""


async def checked_client(make_engine: EngineFactory, interval: float = CHECK_INTERVAL) -> Client:
    engine = await make_engine(schema_check_interval=interval)
    return Client(make_api(engine, long_poll_timeout=20.0))


async def live_requests(
    client: Client, shapes: list[dict[str, Any]]
) -> list[asyncio.Task[httpx.Response]]:
    """Sync each shape, then send its live request; returns once they all wait."""
    requests = []
    for params in shapes:
        handle, offset, _ = await client.sync(**params)
        requests.append(client.shape(handle=handle, offset=offset, live="true", **params))
    tasks = [asyncio.ensure_future(request) for request in requests]
    await waiting(client.api, len(tasks))
    return tasks


async def answered(tasks: list[asyncio.Task[httpx.Response]]) -> list[httpx.Response]:
    """What the waiting requests answer, within ``PROMPTLY``."""
    return list(await asyncio.wait_for(asyncio.gather(*tasks), PROMPTLY))


def assert_refetch(response: httpx.Response, handle: str | None) -> None:
    assert response.status_code == 409, response.text
    assert response.json() == MUST_REFETCH
    assert response.headers.get("electric-handle") == handle


async def test_live_clients_of_a_recreated_table_get_a_409(
    make_engine: EngineFactory, conn: Conn
) -> None:
    client = await checked_client(make_engine)
    conn.execute("CREATE TABLE again (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO again VALUES (1, 'old'), (2, 'old')")
    shapes = [{"table": "again"}, {"table": "again", "where": "id > 1"}]
    tasks = await live_requests(client, shapes)
    conn.execute("DROP TABLE again")
    conn.execute("CREATE TABLE again (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO again VALUES (3, 'new')")
    for params, response in zip(shapes, await answered(tasks), strict=True):
        assert response.status_code == 409, response.text
        assert response.json() == MUST_REFETCH
        # The handle to refetch is a shape of the new table.
        handle = response.headers["electric-handle"]
        again = await client.shape(handle=handle, offset="-1", **params)
        assert [m["value"]["v"] for m in data(again.json())] == ["new"]
    await client.aclose()


async def test_live_clients_of_a_dropped_table_get_a_409_then_a_400(
    make_engine: EngineFactory, conn: Conn
) -> None:
    client = await checked_client(make_engine)
    conn.execute("CREATE TABLE doomed (id int PRIMARY KEY, v text)")
    tasks = await live_requests(client, [{"table": "doomed"}])
    conn.execute("DROP TABLE doomed")
    [response] = await answered(tasks)
    assert_refetch(response, None)
    assert (await client.shape(table="doomed", offset="-1")).status_code == 400
    await client.aclose()


async def test_a_column_dropped_without_a_change_since_is_a_409_then_a_400(
    make_engine: EngineFactory, conn: Conn
) -> None:
    """No row of the table changes after the ALTER: no Relation message comes."""
    client = await checked_client(make_engine)
    selected = {"table": "items", "columns": "id,n"}
    untouched = {"table": "items", "columns": "id,title"}
    tasks = await live_requests(client, [selected, untouched])
    conn.execute("ALTER TABLE items DROP COLUMN n")
    response = await asyncio.wait_for(tasks[0], PROMPTLY)
    assert_refetch(response, None)
    assert_invalid(
        await client.shape(offset="-1", **selected),
        {"columns": ["The following columns are not found on the table: n"]},
    )
    # A shape that does not read the column goes on.
    assert not tasks[1].done()
    conn.execute("UPDATE items SET title = 'changed' WHERE id = 1")
    response = await asyncio.wait_for(tasks[1], PROMPTLY)
    assert response.status_code == 200
    assert [m["value"] for m in data(response.json())] == [{"id": "1", "title": "changed"}]
    await client.aclose()


async def test_a_renamed_table_is_a_409(make_engine: EngineFactory, conn: Conn) -> None:
    client = await checked_client(make_engine)
    tasks = await live_requests(client, [{"table": "other"}])
    conn.execute("ALTER TABLE other RENAME TO renamed")
    [response] = await answered(tasks)
    assert_refetch(response, None)
    await client.aclose()


async def test_an_enum_label_renamed_is_a_409(make_engine: EngineFactory, conn: Conn) -> None:
    """RENAME VALUE changes the text of values a shape reading the column holds (and of
    its clause's enum constants), and nothing replicated tells. ADD VALUE does not: the
    labels a shape knows keep their text and order (a row with the new label makes a
    shape whose clause reads it resync: test_where_enums)."""
    client = await checked_client(make_engine)
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok')")
    conn.execute("CREATE TABLE moods (id int PRIMARY KEY, m mood, v int)")
    conn.execute("INSERT INTO moods VALUES (1, 'sad', 1), (2, 'ok', 2)")
    reading = {"table": "moods", "where": "m >= 'ok'"}
    selected = {"table": "moods", "columns": "id,m"}
    untouched = {"table": "moods", "columns": "id,v"}
    tasks = await live_requests(client, [reading, selected, untouched])
    conn.execute("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'")
    await asyncio.sleep(CHECK_INTERVAL * 4)
    assert not any(task.done() for task in tasks)
    conn.execute("ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'")
    for response in await answered(tasks[:2]):
        assert response.status_code == 409, response.text
        assert response.json() == MUST_REFETCH
    # the clause's constant 'ok' is no label of mood now: Postgres refuses it too
    refetched = await client.shape(offset="-1", **reading)
    assert refetched.status_code == 400, refetched.text
    assert 'invalid input value for enum mood: \\"ok\\"' in refetched.text
    _, _, messages = await client.sync(**selected)
    assert sorted(m["value"]["m"] for m in data(messages)) == ["fine", "sad"]
    assert not tasks[2].done()
    conn.execute("UPDATE moods SET v = 3 WHERE id = 1")
    response = await asyncio.wait_for(tasks[2], PROMPTLY)
    assert [m["value"] for m in data(response.json())] == [{"id": "1", "v": "3"}]
    await client.aclose()


async def test_live_clients_of_a_recreated_subquery_table_get_a_409(
    make_engine: EngineFactory, conn: Conn
) -> None:
    client = await checked_client(make_engine)
    conn.execute("CREATE TABLE dep (id int PRIMARY KEY, k int)")
    conn.execute("INSERT INTO dep VALUES (1, 1)")
    tasks = await live_requests(client, [{"table": "items", "where": "id IN (SELECT k FROM dep)"}])
    conn.execute("DROP TABLE dep")
    conn.execute("CREATE TABLE dep (id int PRIMARY KEY, k int)")
    [response] = await answered(tasks)
    assert response.status_code == 409, response.text
    assert response.json() == MUST_REFETCH
    await client.aclose()


@pytest.mark.parametrize(
    "new_client",
    [{"table": "again"}, {"table": "again", "where": "id > 5"}],
    ids=["same-shape", "another-shape"],
)
async def test_a_new_client_finding_the_table_recreated_ends_the_old_shapes_at_once(
    make_engine: EngineFactory, conn: Conn, new_client: dict[str, Any]
) -> None:
    """The first request to see the new table (``offset=-1``, for one of the old shapes
    or another) has every shape of the old one checked then, not at the next interval."""
    client = await checked_client(make_engine, interval=600)
    conn.execute("CREATE TABLE again (id int PRIMARY KEY, v text)")
    tasks = await live_requests(client, [{"table": "again"}, {"table": "again", "where": "id > 0"}])
    conn.execute("DROP TABLE again")
    conn.execute("CREATE TABLE again (id int PRIMARY KEY, v text)")
    assert (await client.shape(offset="-1", **new_client)).status_code == 200
    for response in await answered(tasks):
        assert response.status_code == 409, response.text
    await client.aclose()


async def test_the_check_outlives_an_unreachable_database(
    make_engine: EngineFactory, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed check is logged and tried again at the next interval."""
    client = await checked_client(make_engine)
    engine = client.api.engine
    assert isinstance(engine, Engine)
    tasks = await live_requests(client, [{"table": "other"}])
    reachable = engine.registry.connections
    unreachable = Connections("postgresql://127.0.0.1:1/nowhere", connect_timeout=0.2)
    await unreachable.open()
    engine.registry.connections = unreachable

    def failed() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "pysync.shapes.drift"]

    with caplog.at_level(logging.WARNING):
        await until(lambda: len(failed()) >= 2, timeout=PROMPTLY, what="two failed checks")
    assert all(m.startswith("schema check failed, retried in 0.3 s: ") for m in failed())
    assert engine.crashed is None and not tasks[0].done()
    engine.registry.connections = reachable
    await unreachable.close()
    conn.execute("DROP TABLE other")
    [response] = await answered(tasks)
    assert_refetch(response, None)
    await client.aclose()


@BOTH_SERVERS
async def test_a_table_renamed_and_another_created_under_its_name(
    client: Client, conn: Conn
) -> None:
    conn.execute("CREATE TABLE moved (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO moved VALUES (1, 'old')")
    old_handle, old_offset, _ = await client.sync(table="moved")
    conn.execute("ALTER TABLE moved RENAME TO moved_old")
    conn.execute("CREATE TABLE moved (id int PRIMARY KEY, v text)")
    handle, offset, messages = await client.sync(table="moved")
    assert handle != old_handle
    assert data(messages) == []
    conn.execute("INSERT INTO moved VALUES (2, 'new')")
    assert [m["value"]["v"] for m in await live_rows(client, handle, offset, 1, table="moved")] == [
        "new"
    ]
    response = await client.shape(table="moved", handle=old_handle, offset=old_offset)
    assert response.status_code == 409, response.text
    assert response.headers["electric-handle"] == handle
    _, _, messages = await client.sync(table="moved_old")
    assert [m["value"]["v"] for m in data(messages)] == ["old"]
