"""The todos app through HTTP: each user syncs only their lists' todos, writes go through
the Writer and are awaited by txid, sharing a list interrupts the other user's live shape
so it refetches at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

import pysync
from conftest import cookie


def titles(rows: dict[str, dict[str, Any]]) -> set[str]:
    return {row["title"] for row in rows.values()}


async def list_id(http: httpx.AsyncClient, user: str) -> int:
    client = pysync.Client(http=http, headers=cookie(user))
    shape = await client.shape(url="/shapes/lists", timeout=30)
    await shape.close()
    (row,) = [r for r in shape.rows.values() if r["owner"] == user]
    return int(row["id"])


async def test_each_user_syncs_only_their_todos(pysync_http: httpx.AsyncClient) -> None:
    for user, expected in (
        ("ann", {"milk", "bread"}),
        ("bob", {"dishes", "laundry"}),
        ("cat", set()),
    ):
        async with pysync.Client(http=pysync_http, headers=cookie(user)) as client:
            shape = await client.shape(url="/shapes/todos", timeout=30)
            await shape.close()
            assert titles(shape.rows) == expected, user
    response = await pysync_http.get("/shapes/todos", params={"offset": "-1"})
    assert response.status_code == 401


async def test_writes_are_awaited_by_txid(
    pysync_http: httpx.AsyncClient, pysync_wait_for_txid: Any, pysync_database_url: str
) -> None:
    lists = await list_id(pysync_http, "ann")
    todo = {
        "id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "list_id": lists,
        "title": "eggs",
        "done": False,
    }
    response = await pysync_http.post(
        "/api/mutations",
        headers=cookie("ann"),
        json=[
            {"type": "insert", "modified": todo, "syncMetadata": {"relation": ["public", "todos"]}},
        ],
    )
    assert response.status_code == 200, response.text
    rows = await pysync_wait_for_txid(
        response.json()["txid"], url="/shapes/todos", headers=cookie("ann")
    )
    assert titles(rows) == {"milk", "bread", "eggs"}
    update = await pysync_http.post(
        "/api/mutations",
        headers=cookie("ann"),
        json=[
            {
                "type": "update",
                "original": todo,
                "changes": {"done": True},
                "syncMetadata": {"relation": ["public", "todos"]},
            },
        ],
    )
    rows = await pysync_wait_for_txid(
        update.json()["txid"], url="/shapes/todos", headers=cookie("ann")
    )
    assert [r["done"] for r in rows.values() if r["title"] == "eggs"] == [True]
    # Bob may not write into Ann's list, nor move a todo there.
    refused = await pysync_http.post(
        "/api/mutations",
        headers=cookie("bob"),
        json=[
            {"type": "delete", "original": todo, "syncMetadata": {"relation": ["public", "todos"]}},
        ],
    )
    assert refused.status_code == 403 and "not yours" in refused.json()["message"]
    # Nor by claiming Ann's todo is in his own list: the rules judge the stored row.
    bobs = await list_id(pysync_http, "bob")
    for lie in (
        {"type": "update", "changes": {"title": "mine now"}},
        {"type": "update", "changes": {"list_id": bobs}},
        {"type": "delete"},
    ):
        refused = await pysync_http.post(
            "/api/mutations",
            headers=cookie("bob"),
            json=[
                {
                    **lie,
                    "original": {**todo, "list_id": bobs},
                    "syncMetadata": {"relation": ["public", "todos"]},
                },
            ],
        )
        assert refused.status_code == 403, (lie, refused.text)
    with psycopg.connect(pysync_database_url) as conn:
        stored = conn.execute(
            "SELECT title, list_id, done FROM todos WHERE id = %s", (todo["id"],)
        ).fetchall()
    assert stored == [("eggs", lists, True)]


async def test_sharing_interrupts_the_other_users_shape(
    pysync_http: httpx.AsyncClient, pysync_database_url: str
) -> None:
    ann_list = await list_id(pysync_http, "ann")
    async with pysync.Client(http=pysync_http, headers=cookie("bob")) as bob:
        shape = await bob.shape(url="/shapes/todos", timeout=30)
        try:
            assert titles(shape.rows) == {"dishes", "laundry"}
            response = await pysync_http.post(
                f"/api/lists/{ann_list}/shares/bob", headers=cookie("ann")
            )
            assert response.status_code == 200
            await _until(lambda: titles(shape.rows) == {"dishes", "laundry", "milk", "bread"})
            # A todo moved out of Bob's lists leaves his shape; unsharing takes Ann's away.
            with psycopg.connect(pysync_database_url, autocommit=True) as conn:
                conn.execute("UPDATE todos SET list_id = %s WHERE title = 'dishes'", (ann_list,))
                conn.execute("INSERT INTO lists (owner, name) VALUES ('cat', 'Cat''s')")
                (cats,) = conn.execute("SELECT id FROM lists WHERE owner = 'cat'").fetchone()  # type: ignore[misc]
                conn.execute("UPDATE todos SET list_id = %s WHERE title = 'laundry'", (cats,))
            await _until(lambda: titles(shape.rows) == {"dishes", "milk", "bread"})
            response = await pysync_http.delete(
                f"/api/lists/{ann_list}/shares/bob", headers=cookie("ann")
            )
            assert response.status_code == 200
            await _until(lambda: titles(shape.rows) == set())
        finally:
            await shape.close()


async def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
