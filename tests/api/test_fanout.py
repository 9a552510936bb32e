"""One body per commit: the long-polls (and SSE streams) of a shape woken by the same
transaction share the response built once; only the request's own headers differ."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from http_support import Client, Conn, data, make_api, waiting
from pysync.engine import Engine
from pysync.http import log_response as log_response_module
from pysync.http import sse as sse_module

WAITERS = 20


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of ``module.name`` (the real function still runs)."""
    calls = [0]
    real = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


async def test_waiters_woken_by_one_commit_share_one_body(
    engine: Engine, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(make_api(engine, long_poll_timeout=10.0))
    try:
        handle, offset, _ = await client.sync(table="items")
        builds = counting(monkeypatch, log_response_module, "inline_body")
        polls = [
            asyncio.create_task(
                client.shape(table="items", offset=offset, handle=handle, live="true")
            )
            for _ in range(WAITERS)
        ]
        await waiting(client.api, WAITERS)
        conn.execute("INSERT INTO items VALUES (50, 'fan', 1)")
        responses = await asyncio.gather(*polls)
        assert builds[0] == 1, f"{builds[0]} bodies built for {WAITERS} waiters of one commit"
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert [m["value"]["id"] for m in data(json.loads(responses[0].content))] == ["50"]
        shared = ("electric-offset", "electric-handle", "etag", "cache-control", "content-length")
        for name in shared:
            assert len({r.headers[name] for r in responses}) == 1, name
        # The request's own: every response has its request id.
        assert len({r.headers["x-request-id"] for r in responses}) == WAITERS
        assert all(r.headers["electric-cursor"].isdigit() for r in responses)
        # A later request for the same offsets is answered from what was built.
        again = await client.shape(table="items", offset=offset, handle=handle, live="true")
        assert again.content == responses[0].content and builds[0] == 1
        # The origin header is the request's, not the first waiter's.
        cors = await client.shape(
            table="items",
            offset=offset,
            handle=handle,
            live="true",
            headers={"origin": "https://app.example"},
        )
        assert cors.headers["access-control-allow-origin"] == "https://app.example"
        assert cors.content == responses[0].content and builds[0] == 1
    finally:
        await client.aclose()


async def test_sse_subscribers_share_the_encoded_events(
    engine: Engine, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(make_api(engine, sse_timeout=1.0))
    try:
        handle, offset, _ = await client.sync(table="items")
        batches = counting(monkeypatch, sse_module, "_batch")
        streams = [
            asyncio.create_task(
                client.shape(
                    table="items", offset=offset, handle=handle, live="true", live_sse="true"
                )
            )
            for _ in range(5)
        ]
        await waiting(client.api, 5)
        reads_before = batches[0]
        conn.execute("INSERT INTO items VALUES (51, 'sse fan', 1)")
        responses = await asyncio.gather(*streams)
        # After the commit each stream reads the change, then finds nothing after it:
        # for all five streams, one encoding of each (ten without sharing).
        assert batches[0] - reads_before == 2, batches[0] - reads_before
        texts = {r.text.replace(": keep-alive\n\n", "") for r in responses}
        assert len(texts) == 1
        events = [json.loads(e.removeprefix("data: ")) for e in texts.pop().split("\n\n") if e]
        assert [m["value"]["id"] for m in data(events)] == ["51"]
    finally:
        await client.aclose()
