"""Embedding: server-defined shape routes, interrupt with a re-checked shape function,
and subset snapshots, through the real engine and Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request

import pysync
from pysync import ShapeDefinition, Sync


@pytest.fixture
async def app_client(
    database_url: str,
) -> AsyncIterator[tuple[Sync, httpx.AsyncClient, dict[str, str]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE todos (id int PRIMARY KEY, owner text, title text, prio int)")
        conn.execute(
            "INSERT INTO todos SELECT g, CASE WHEN g % 2 = 0 THEN 'ann' ELSE 'bob' END, 't' || g, g % 3 "
            "FROM generate_series(1, 10) g"
        )
    sync = Sync(database_url, long_poll_timeout=5, in_memory=True)
    state = {"owner": "ann"}

    def mine(request: Request) -> ShapeDefinition:
        return pysync.shape("todos", where="owner = $1", params=[state["owner"]])

    app = Starlette(
        routes=[
            *sync.routes(),
            sync.route("/all", pysync.shape("todos", columns=["id", "title"])),
            sync.route("/mine", mine),
        ]
    )
    await sync.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://t"
        ) as client:
            yield sync, client, state
    finally:
        await sync.stop()


async def catch_up(
    client: httpx.AsyncClient, path: str
) -> tuple[str, str, list[dict[str, object]]]:
    sep = "&" if "?" in path else "?"
    response = await client.get(f"{path}{sep}offset=-1")
    handle = response.headers["electric-handle"]
    messages = response.json()
    offset = response.headers["electric-offset"]
    while "electric-up-to-date" not in response.headers:
        response = await client.get(f"{path}{sep}offset={offset}&handle={handle}")
        messages += response.json()
        offset = response.headers["electric-offset"]
    return handle, offset, messages


async def test_server_defined_shape_ignores_client_shape_params(app_client) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = app_client
    _, _, messages = await catch_up(client, "/all?table=other&where=false")
    rows = [m["value"] for m in messages if "key" in m]
    assert len(rows) == 10 and all(set(r) == {"id", "title"} for r in rows)  # type: ignore[call-overload]


async def test_interrupt_rechecks_shape_function(app_client) -> None:  # type: ignore[no-untyped-def]
    sync, client, state = app_client
    handle, offset, messages = await catch_up(client, "/mine")
    assert {m["value"]["owner"] for m in messages if "key" in m} == {"ann"}  # type: ignore[index]
    unchanged = asyncio.create_task(client.get(f"/mine?offset={offset}&handle={handle}&live=true"))
    await asyncio.sleep(0.2)
    assert sync.interrupt("todos") == 1
    await asyncio.sleep(0.2)
    assert not unchanged.done()  # same definition: it goes on waiting
    state["owner"] = "bob"
    start = time.perf_counter()
    assert pysync.interrupt("todos", where="owner = $1") == 1
    response = await unchanged
    assert time.perf_counter() - start < 1.0
    assert response.status_code == 409
    assert response.json() == [{"headers": {"control": "must-refetch"}}]
    new_handle = response.headers["electric-handle"]
    assert new_handle != handle
    _, _, messages = await catch_up(client, "/mine")
    assert {m["value"]["owner"] for m in messages if "key" in m} == {"bob"}  # type: ignore[index]


async def test_subset_snapshot_get_and_post(app_client) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = app_client
    response = await client.get(
        "/v1/shape",
        params={
            "table": "todos",
            "offset": "-1",
            "log": "changes_only",
            "subset__where": "prio = $1",
            "subset__params": '{"1": "2"}',
            "subset__order_by": "id DESC",
            "subset__limit": "2",
        },
    )
    assert response.status_code == 200
    assert response.headers["electric-snapshot"] == "true"
    assert response.headers["cache-control"] == "no-cache"
    body = response.json()
    assert [row["value"]["id"] for row in body["data"]] == ["8", "5"]
    mark = body["metadata"]["snapshot_mark"]
    assert all(row["headers"]["snapshot_mark"] == mark for row in body["data"])
    assert (
        isinstance(body["metadata"]["database_lsn"], str)
        and body["metadata"]["database_lsn"].isdigit()
    )
    handle = response.headers["electric-handle"]
    response = await client.post(
        f"/v1/shape?table=todos&offset={response.headers['electric-offset']}&handle={handle}&log=changes_only",
        json={
            "where": "owner = $1",
            "params": {"1": "bob"},
            "order_by": "title",
            "limit": 3,
            "offset": 1,
        },
    )
    assert response.status_code == 200, response.text
    assert [row["value"]["title"] for row in response.json()["data"]] == ["t3", "t5", "t7"]
    response = await client.post(
        f"/v1/shape?table=todos&offset=0_0&handle={handle}&log=changes_only",
        json={"where": "prio = 1", "limit": 3},
    )
    assert response.status_code == 400
    assert response.json() == {
        "message": "Invalid request",
        "errors": {
            "subset": {"order_by": ["order_by is required when limit or offset is present"]}
        },
    }
    response = await client.post("/v1/shape?table=todos&offset=-1", content=b"[1]")
    assert response.status_code == 400 and response.json() == {
        "error": "Request body must be a JSON object"
    }
    response = await client.get(
        "/v1/shape",
        params={
            "table": "todos",
            "offset": "-1",
            "subset__order_by": "lower(title)",
            "subset__limit": "1",
        },
    )
    assert response.status_code == 400
    assert "ORDER BY" in response.json()["errors"]["subset"]["order_by"][0]
