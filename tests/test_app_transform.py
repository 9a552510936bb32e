"""Transforms over response bodies: JSON arrays split at any byte (as large log bodies
are streamed), SSE events, and a streamed snapshot through an app route."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import psycopg
from starlette.applications import Starlette

import pysync
from pysync.app.transform import _json_array, _sse_events
from pysync.http.body import INLINE_BYTES

TRICKY = ['},{"key":"x"}', 'a"b', "\\", '},{"headers":', "ünï", "", "]", "[", '{"key"}']


def messages(count: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(count):
        value = {"id": str(i), "title": rnd.choice(TRICKY) + rnd.choice(TRICKY), "note": None}
        operation = rnd.choice(["insert", "update", "delete"])
        out.append(
            {
                "key": f'"public"."t"/"{i}"',
                "value": value,
                "headers": {"operation": operation, "relation": ["public", "t"], "txids": [i]},
            }
        )
        if rnd.random() < 0.1:
            out.append(
                {"headers": {"control": "snapshot-end", "xmin": "1", "xmax": "2", "xip_list": []}}
            )
    out.append({"headers": {"control": "up-to-date", "global_last_seen_lsn": "5"}})
    return out


def transform(message: dict[str, Any]) -> list[dict[str, Any]]:
    operation = message["headers"]["operation"]
    if operation == "delete":
        return []
    if operation == "update":  # one message into two
        return [message, {**message, "value": {**message["value"], "copy": "yes"}}]
    return [
        {**message, "value": {**message["value"], "title": str(message["value"]["title"]).upper()}}
    ]


def expected(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for item in items for m in (transform(item) if "key" in item else [item])]


async def chunks(data: bytes, rnd: random.Random) -> AsyncIterator[bytes]:
    position = 0
    while position < len(data):
        size = rnd.choice([1, 2, 3, 7, 50, 4096])
        yield data[position : position + size]
        position += size


async def collect(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


async def test_json_array_split_anywhere() -> None:
    for seed in range(40):
        items = messages(random.Random(seed).randint(0, 30), seed)
        data = msgspec.json.encode(items)
        out = await collect(_json_array(chunks(data, random.Random(seed)), transform))
        assert msgspec.json.decode(out) == expected(items), seed


async def test_sse_events_split_anywhere() -> None:
    for seed in range(20):
        items = messages(20, seed)
        data = (
            b"".join(b"data: " + msgspec.json.encode(m) + b"\n\n" for m in items)
            + b": keep-alive\n\n"
        )
        out = await collect(_sse_events(chunks(data, random.Random(seed)), transform))
        events = out.split(b"\n\n")
        assert events[-1] == b"" and events[-2] == b": keep-alive"
        assert [msgspec.json.decode(e[6:]) for e in events[:-2]] == expected(items)


async def test_streamed_snapshot_is_transformed_whole(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, title text)")
        conn.execute(
            "INSERT INTO big SELECT g, repeat('x', 200) || g FROM generate_series(1, 3000) g"
        )
    sync = pysync.Sync(database_url, in_memory=True, env=False)
    app = Starlette(
        routes=[
            sync.route("/plain", "big"),
            sync.route(
                "/upper",
                "big",
                transform=lambda m: [
                    {**m, "value": {**m["value"], "title": m["value"]["title"].upper()}}
                ],
            ),
        ]
    )
    async with (
        sync,
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        plain = await http.get("/plain", params={"offset": "-1"})
        upper = await http.get("/upper", params={"offset": "-1"})
        assert len(plain.content) > INLINE_BYTES  # the streamed path
        assert upper.headers["etag"] == plain.headers["etag"]
        assert "content-length" not in upper.headers or int(upper.headers["content-length"]) == len(
            upper.content
        )
        want = [
            {**m, "value": {**m["value"], "title": m["value"]["title"].upper()}}
            if "key" in m
            else m
            for m in plain.json()
        ]
        assert upper.json() == want and len(want) >= 3000
