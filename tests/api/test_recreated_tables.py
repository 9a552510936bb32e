"""A table dropped and created again under the same name (its shape's own, or a
subquery's): Postgres drops it from the publication and sends nothing, so only the
catalog tells. A new client (``offset=-1``) gets a new shape on the new table, published
and synced live; the old shape's clients get a 409; a table that is gone is a 400."""

from __future__ import annotations

from typing import Any

import pytest

from http_support import BOTH_SERVERS, Client, Conn, assert_invalid, data


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
