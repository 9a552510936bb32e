"""The HTTP Shape API against a real engine and Postgres: the checklist of
docs/shape-http-protocol.md section 10 (offsets, headers, caching, live, 409, CORS, auth,
SSE, chunking)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import psycopg
import pytest

from http_support import (
    CC_409,
    CC_INITIAL,
    CC_LIVE,
    CC_NON_LIVE,
    EXPOSED,
    LONG_POLL,
    MUST_REFETCH,
    Client,
    Conn,
    EngineFactory,
    assert_invalid,
    controls,
    data,
    make_api,
    until,
    waiting,
)
from pysync.engine import Engine
from pysync.http import sse as sse_module

ITEMS = '"public"."items"/'


def schema_of(response: httpx.Response) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(response.headers["electric-schema"])
    return schema


async def live_change(
    client: Client, handle: str, offset: str, conn: Conn, sql: str, **params: str
) -> httpx.Response:
    """Run ``sql`` while a live request waits at ``offset``; the response carrying it."""
    task = asyncio.create_task(client.shape(offset=offset, handle=handle, live="true", **params))
    await until(lambda: len(client.api.interrupts) >= 1, what="a waiting live request")
    conn.execute(sql)
    response = await task
    assert response.status_code == 200, response.text
    return response


# -- offsets and the headers of each response kind ---------------------------------------


async def test_initial_sync_offsets_and_headers(client: Client, engine: Engine) -> None:
    first = await client.shape(table="items", offset="-1")
    assert first.status_code == 200
    h = first.headers
    handle = h["electric-handle"]
    assert h["electric-offset"] == "0_0"
    assert "electric-up-to-date" not in h  # never on the -1 response
    assert "electric-cursor" not in h
    assert h["electric-has-data"] == "true"
    assert h["cache-control"] == CC_INITIAL
    assert h["etag"] == f'"{handle}:-1:0_0"'
    assert h["content-type"].startswith("application/json")
    assert h["access-control-expose-headers"] == EXPOSED
    assert h["access-control-allow-origin"] == "*"
    assert schema_of(first) == {
        "id": {"type": "int4", "pk_index": 0, "not_null": True},
        "title": {"type": "text", "not_null": True},
        "n": {"type": "int4"},
    }
    body = first.json()
    assert sorted(m["key"] for m in data(body)) == [f'{ITEMS}"{i}"' for i in (1, 2, 3)]
    assert all(
        m["headers"] == {"operation": "insert", "relation": ["public", "items"]} for m in data(body)
    )
    assert controls(body) == ["snapshot-end"]
    end = body[-1]["headers"]
    assert {"xmin", "xmax", "xip_list"} <= set(end)

    second = await client.shape(table="items", offset="0_0", handle=handle)
    assert second.status_code == 200
    h = second.headers
    assert h["electric-offset"] == "0_inf"
    assert h["electric-up-to-date"] == ""
    assert h["electric-handle"] == handle
    assert h["cache-control"] == CC_NON_LIVE
    assert "electric-cursor" not in h
    assert "electric-schema" in h
    body = second.json()
    assert controls(body) == ["up-to-date"]
    lsn = body[-1]["headers"]["global_last_seen_lsn"]
    assert isinstance(lsn, str) and lsn.isdigit()
    # Only a long-poll timeout or offset=now is a "no data" response (section 4.1).
    assert h["electric-has-data"] == "true"
    assert h["etag"] == f'"{handle}:0_0:0_inf"'

    # The same shape for the same definition; -1 ignores a given handle.
    again = await client.shape(table="items", offset="-1", handle="whatever")
    assert again.headers["electric-handle"] == handle
    # Allow-origin echoes the request's Origin.
    echoed = await client.shape(
        table="items", offset="-1", headers={"origin": "https://app.example"}
    )
    assert echoed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-credentials" not in echoed.headers


async def test_real_offsets_and_strictly_greater(client: Client, conn: Conn) -> None:
    handle, offset, _ = await client.sync(table="items")
    assert offset == "0_inf"
    await client.sync(table="other")  # so that `other` is replicated too
    response = await live_change(
        client,
        handle,
        offset,
        conn,
        "BEGIN; INSERT INTO items VALUES (10, 'x', 10); INSERT INTO other VALUES (2, 'b');"
        " INSERT INTO items VALUES (11, 'y', 11); COMMIT",
        table="items",
    )
    body = response.json()
    changes = data(body)
    assert [c["key"] for c in changes] == [f'{ITEMS}"10"', f'{ITEMS}"11"']
    lsn = changes[0]["headers"]["lsn"]
    assert lsn.isdigit() and changes[1]["headers"]["lsn"] == lsn
    # Op positions count every change of the transaction, step 2.
    assert [c["headers"]["op_position"] for c in changes] == [0, 4]
    assert "last" not in changes[0]["headers"] and changes[1]["headers"]["last"] is True
    assert response.headers["electric-offset"] == f"{lsn}_4"
    assert controls(body) == ["up-to-date"]
    # A live response with data: the tx of its end offset.
    assert body[-1]["headers"]["global_last_seen_lsn"] == lsn
    assert response.headers["electric-has-data"] == "true"

    async def keys_after(offset: str) -> list[str]:
        r = await client.shape(table="items", offset=offset, handle=handle)
        assert r.status_code == 200, r.text
        assert "electric-up-to-date" in r.headers
        assert r.headers["electric-offset"] == f"{lsn}_4"
        return [m["key"] for m in data(r.json())]

    assert await keys_after("0_inf") == [f'{ITEMS}"10"', f'{ITEMS}"11"']
    assert await keys_after(f"{lsn}_0") == [f'{ITEMS}"11"']  # <lsn>_0 accepted, strictly after
    assert await keys_after(f"{lsn}_3") == [f'{ITEMS}"11"']
    assert await keys_after(f"{int(lsn) - 1}_inf") == [f'{ITEMS}"10"', f'{ITEMS}"11"']
    assert await keys_after(f"{lsn}_4") == []


async def test_offset_now(client: Client) -> None:
    response = await client.shape(table="items", offset="now")
    assert response.status_code == 200
    h = response.headers
    assert h["electric-has-data"] == "false"
    assert h["electric-up-to-date"] == ""
    assert h["electric-offset"] == "0_inf"
    assert h["cache-control"] == CC_NON_LIVE
    assert "electric-schema" in h and "electric-cursor" not in h
    assert controls(response.json()) == ["up-to-date"] and len(response.json()) == 1
    # offset=now ignores the handle too, and resolves the same shape as -1.
    initial = await client.shape(table="items", offset="-1")
    assert initial.headers["electric-handle"] == h["electric-handle"]
    # No-change responses can never be revalidated: their etags are unique.
    other = await client.shape(table="items", offset="now", handle="stale")
    assert other.headers["etag"] != h["etag"]


async def test_long_poll_returns_on_change_and_on_timeout(
    client: Client, engine: Engine, conn: Conn
) -> None:
    handle, offset, _ = await client.sync(table="items")
    patient = Client(make_api(engine, long_poll_timeout=10.0))
    started = time.monotonic()
    response = await live_change(
        patient, handle, offset, conn, "UPDATE items SET n = 20 WHERE id = 2", table="items"
    )
    await patient.aclose()
    assert time.monotonic() - started < 5.0  # on the change, not at the timeout
    h = response.headers
    assert h["cache-control"] == CC_LIVE
    assert h["electric-cursor"].isdigit()
    assert "electric-schema" not in h
    assert h["electric-up-to-date"] == ""
    (change,) = data(response.json())
    assert change["headers"]["operation"] == "update"
    assert change["value"] == {"id": "2", "n": "20"}
    offset = h["electric-offset"]

    started = time.monotonic()
    timeout = await client.shape(
        table="items", offset=offset, handle=handle, live="true", cursor=h["electric-cursor"]
    )
    elapsed = time.monotonic() - started
    assert LONG_POLL * 0.9 <= elapsed < LONG_POLL + 1.0
    assert timeout.status_code == 200  # not 204
    th = timeout.headers
    assert th["electric-has-data"] == "false"
    assert th["electric-offset"] == offset
    assert th["electric-up-to-date"] == ""
    assert th["cache-control"] == CC_LIVE
    assert int(th["electric-cursor"]) > int(h["electric-cursor"])  # cursor always grows
    assert "electric-schema" not in th
    body = timeout.json()
    assert controls(body) == ["up-to-date"] and len(body) == 1
    assert body[0]["headers"]["global_last_seen_lsn"].isdigit()


async def test_live_value_is_true_unless_false(client: Client, conn: Conn) -> None:
    # Anything but the literal "false" is true: with -1 it is rejected as live.
    for value in ("", "1", "0", "yes", "true", "TRUE", "False"):
        r = await client.shape(table="items", offset="-1", live=value)
        assert_invalid(r, {"live": ["can't be true when offset == -1"]})
    ok = await client.shape(table="items", offset="-1", live="false")
    assert ok.status_code == 200 and "electric-schema" in ok.headers

    handle, offset, _ = await client.sync(table="items")
    changed = await live_change(
        client, handle, offset, conn, "INSERT INTO items VALUES (30, 'z', 1)", table="items"
    )
    assert changed.status_code == 200
    # Data is there after `offset`, so these answer at once, each as a live response.
    for value in ("", "1", "live", "true"):
        r = await client.shape(table="items", offset=offset, handle=handle, live=value)
        assert r.status_code == 200
        assert "electric-cursor" in r.headers and "electric-schema" not in r.headers, value
        assert r.headers["cache-control"] == CC_LIVE
    r = await client.shape(table="items", offset=offset, handle=handle, live="false")
    assert "electric-cursor" not in r.headers and "electric-schema" in r.headers
    assert r.headers["cache-control"] == CC_NON_LIVE


async def test_unknown_params_ignored_and_params_deep_object(client: Client) -> None:
    plain = await client.shape(table="items", offset="-1")
    noisy = await client.shape(
        table="items",
        offset="-1",
        log="full",
        cursor="abc",
        **{
            "cache-buster": "1-2",
            "expired_handle": "9-9",
            "experimental_live_sse": "false",
            "subset__where_expr": "x",
            "custom": "v",
            "secret": "unused",
        },
    )
    assert noisy.status_code == 200, noisy.text
    assert noisy.headers["electric-handle"] == plain.headers["electric-handle"]

    one = await client.shape(table="items", offset="-1", where="id = $1", **{"params[1]": "2"})
    assert one.status_code == 200, one.text
    assert [m["key"] for m in data(one.json())] == [f'{ITEMS}"2"']
    two = await client.shape(
        table="items",
        offset="-1",
        where="id >= $1 AND title <> $2",
        **{"params[2]": "item 3", "params[1]": "2"},
    )
    assert [m["key"] for m in data(two.json())] == [f'{ITEMS}"2"']
    other = await client.shape(table="items", offset="-1", where="id = $1", **{"params[1]": "3"})
    handles = {
        plain.headers["electric-handle"],
        one.headers["electric-handle"],
        other.headers["electric-handle"],
    }
    assert len(handles) == 3  # different params, different shapes


async def test_columns_and_log_changes_only(client: Client) -> None:
    r = await client.shape(table="items", offset="-1", columns='"title","id"')
    assert r.status_code == 200, r.text
    assert set(schema_of(r)) == {"id", "title"}
    assert all(set(m["value"]) == {"id", "title"} for m in data(r.json()))
    same = await client.shape(table="items", offset="-1", columns="id,title")
    assert same.headers["electric-handle"] == r.headers["electric-handle"]  # order irrelevant

    first = await client.shape(table="items", offset="-1", log="changes_only")
    assert first.status_code == 200
    assert first.json() == [m for m in first.json() if controls([m]) == ["snapshot-end"]]
    assert controls(first.json()) == ["snapshot-end"]
    assert first.headers["electric-offset"] == "0_0"
    assert "electric-up-to-date" not in first.headers
    handle = first.headers["electric-handle"]
    second = await client.shape(table="items", offset="0_0", handle=handle, log="changes_only")
    assert second.headers["electric-offset"] == "0_inf"
    assert controls(second.json()) == ["up-to-date"]


async def test_snapshot_chunking(make_engine: EngineFactory, conn: Conn) -> None:
    conn.execute(
        "INSERT INTO items SELECT g, repeat('x', 40) || g, g FROM generate_series(4, 200) g"
    )
    engine = await make_engine(chunk_bytes=2000)
    client = Client(make_api(engine))
    try:
        response = await client.shape(table="items", offset="-1")
        handle = response.headers["electric-handle"]
        offsets = [response.headers["electric-offset"]]
        messages = response.json()
        while "electric-up-to-date" not in response.headers:
            assert controls(response.json()) in ([], ["snapshot-end"])
            response = await client.shape(table="items", offset=offsets[-1], handle=handle)
            assert response.status_code == 200
            offsets.append(response.headers["electric-offset"])
            messages += response.json()
        chunks = offsets[:-1]
        assert len(chunks) > 3
        assert chunks == [f"0_{i}" for i in range(len(chunks))]
        assert offsets[-1] == "0_inf"
        assert len(data(messages)) == 200
        assert len({m["key"] for m in data(messages)}) == 200
        assert controls(messages) == ["snapshot-end", "up-to-date"]
        # Each chunk response is cacheable and stable for (handle, offset).
        again = await client.shape(table="items", offset="0_1", handle=handle)
        assert again.headers["electric-offset"] == "0_2"
        assert again.headers["cache-control"] == CC_NON_LIVE
        assert "electric-up-to-date" not in again.headers
    finally:
        await client.aclose()


async def test_out_of_bounds_offset(client: Client) -> None:
    handle, offset, messages = await client.sync(table="items")
    lsn = int(messages[-1]["headers"]["global_last_seen_lsn"] or 0)
    started = time.monotonic()
    r = await client.shape(table="items", offset=f"{lsn + 10_000_000}_0", handle=handle)
    elapsed = time.monotonic() - started
    assert_invalid(r, {"offset": ["out of bounds for this shape"]})
    assert LONG_POLL / 2 * 0.9 <= elapsed < LONG_POLL  # half a long-poll to be right
    # A live request too (it waited a whole long-poll, then got a 200 up-to-date at an
    # offset the log never reached, and came back to it forever).
    started = time.monotonic()
    r = await client.shape(
        table="items", offset=f"{lsn + 10_000_000}_0", handle=handle, live="true"
    )
    elapsed = time.monotonic() - started
    assert_invalid(r, {"offset": ["out of bounds for this shape"]})
    assert LONG_POLL / 2 * 0.9 <= elapsed < LONG_POLL


# -- caching --------------------------------------------------------------------------


async def test_etag_if_none_match_304(client: Client) -> None:
    first = await client.shape(table="items", offset="-1")
    etag = first.headers["etag"]
    cached = await client.shape(table="items", offset="-1", headers={"if-none-match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    assert cached.headers["electric-handle"] == first.headers["electric-handle"]
    assert cached.headers["electric-offset"] == "0_0"
    assert cached.headers["cache-control"] == CC_INITIAL
    assert "electric-schema" not in cached.headers
    # Several tags, weak comparison.
    both = await client.shape(
        table="items", offset="-1", headers={"if-none-match": f'"nope", W/{etag}'}
    )
    assert both.status_code == 304
    miss = await client.shape(table="items", offset="-1", headers={"if-none-match": '"nope"'})
    assert miss.status_code == 200


# -- 409 must-refetch -----------------------------------------------------------------


async def test_wrong_handle_gets_409_with_current_handle(client: Client) -> None:
    handle, offset, _ = await client.sync(table="items")
    r = await client.shape(table="items", offset=offset, handle="123-456")
    assert r.status_code == 409
    assert r.json() == MUST_REFETCH
    assert r.headers["electric-handle"] == handle
    assert r.headers["cache-control"] == CC_409
    assert r.headers["etag"] == f'"{handle}:{offset}:"'
    assert r.headers["access-control-expose-headers"] == EXPOSED
    # A handle of another shape is wrong too.
    other = await client.shape(table="other", offset="-1")
    r = await client.shape(table="items", offset="0_0", handle=other.headers["electric-handle"])
    assert r.status_code == 409 and r.headers["electric-handle"] == handle


async def test_truncate_gives_409_and_a_new_handle(client: Client, conn: Conn) -> None:
    handle, offset, _ = await client.sync(table="items")
    task = asyncio.create_task(
        client.shape(table="items", offset=offset, handle=handle, live="true")
    )
    await waiting(client.api, 1)
    conn.execute("TRUNCATE items")
    r = await task
    assert r.status_code == 409
    assert r.content == b'[{"headers":{"control":"must-refetch"}}]'
    assert r.headers["cache-control"].startswith("public, max-age=")
    # The client comes back with its old handle: 409 again, naming a new shape.
    again = await client.shape(table="items", offset=offset, handle=handle)
    assert again.status_code == 409 and again.json() == MUST_REFETCH
    new = again.headers["electric-handle"]
    assert new != handle
    fresh = await client.shape(table="items", offset="-1", handle=new)
    assert fresh.headers["electric-handle"] == new
    assert data(fresh.json()) == []


async def test_delete_gives_409_and_a_new_handle(engine: Engine) -> None:
    client = Client(make_api(engine, allow_delete=True))
    try:
        handle, offset, _ = await client.sync(table="items")
        task = asyncio.create_task(
            client.shape(table="items", offset=offset, handle=handle, live="true")
        )
        await waiting(client.api, 1)
        deleted = await client.raw("/v1/shape", "DELETE", params={"table": "items"})
        assert deleted.status_code == 202
        assert deleted.content == b""
        assert deleted.headers["electric-handle"] == handle
        assert deleted.headers["cache-control"] == "no-cache"
        r = await task
        assert r.status_code == 409 and r.json() == MUST_REFETCH
        again = await client.shape(table="items", offset=offset, handle=handle)
        assert again.status_code == 409 and again.json() == MUST_REFETCH
        assert again.headers["electric-handle"] not in ("", handle)
        gone = await client.raw("/v1/shape", "DELETE", params={"handle": handle})
        assert gone.status_code == 404 and gone.json() == {"message": "No existing shape found"}
    finally:
        await client.aclose()


# -- routes, CORS, auth -----------------------------------------------------------------


async def test_options_preflight(client: Client) -> None:
    r = await client.raw(
        "/v1/shape",
        "OPTIONS",
        headers={
            "origin": "https://a.example",
            "access-control-request-headers": "If-None-Match, traceparent, authorization",
        },
    )
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-max-age"] == "86400"
    assert r.headers["access-control-allow-headers"] == "If-None-Match,traceparent"
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    # DELETE is off (--allow-delete): not offered to a browser that would get a 405.
    assert r.headers["access-control-allow-methods"] == "GET, POST, HEAD, OPTIONS"
    assert r.headers["connection"] == "keep-alive"
    assert "cache-control" not in r.headers
    only_custom = await client.raw(
        "/v1/shape", "OPTIONS", headers={"access-control-request-headers": "authorization"}
    )
    assert only_custom.status_code == 204
    assert "access-control-allow-headers" not in only_custom.headers
    assert only_custom.headers["access-control-allow-origin"] == "*"


async def test_health_and_root(client: Client) -> None:
    health = await client.raw("/v1/health")
    assert health.status_code == 200
    assert health.json() == {"status": "active"}
    assert health.headers["content-type"].startswith("application/json")
    assert health.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    root = await client.raw("/")
    assert root.status_code == 200 and root.content == b""
    assert root.headers["access-control-allow-methods"] == "GET, HEAD"
    missing = await client.raw("/nope")
    assert missing.status_code == 404


async def test_secret(engine: Engine) -> None:
    client = Client(make_api(engine, secret="s3cret"))
    try:
        for params in (
            {},
            {"secret": "wrong"},
            {"api_secret": "wrong"},
            {"secret": "wrong", "api_secret": "s3cret"},
        ):
            r = await client.shape(table="items", offset="-1", **params)
            assert r.status_code == 401, params
            assert r.content == b'{"message":"Unauthorized - Invalid API secret"}'
            assert not any(k.startswith("access-control-") for k in r.headers), r.headers
            assert "application/json" not in r.headers.get("content-type", "")
        # Validation is not reached without the secret.
        assert (await client.shape(offset="bad")).status_code == 401
        for params in ({"secret": "s3cret"}, {"api_secret": "s3cret"}):
            r = await client.shape(table="items", offset="-1", **params)
            assert r.status_code == 200, params
        # OPTIONS and health are not authenticated.
        assert (await client.raw("/v1/shape", "OPTIONS")).status_code == 204
        assert (await client.raw("/v1/health")).status_code == 200
        # Nor is DELETE let through without it.
        assert (
            await client.raw("/v1/shape", "DELETE", params={"table": "items"})
        ).status_code == 401
    finally:
        await client.aclose()


async def test_delete_disabled(client: Client) -> None:
    r = await client.raw("/v1/shape", "DELETE", params={"table": "items"})
    assert r.status_code == 405
    assert r.json() == {"message": "DELETE not allowed"}
    assert r.headers["cache-control"] == "no-cache"  # every DELETE response (section 6.4)
    assert r.headers["allow"] == "GET, POST, HEAD, OPTIONS"
    assert r.headers["access-control-allow-methods"] == "GET, POST, HEAD, OPTIONS"


async def test_preflight_offers_delete_when_it_is_allowed(engine: Engine) -> None:
    client = Client(make_api(engine, allow_delete=True))
    try:
        r = await client.raw(
            "/v1/shape", "OPTIONS", headers={"access-control-request-method": "DELETE"}
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-methods"] == "GET, POST, HEAD, DELETE, OPTIONS"
    finally:
        await client.aclose()


# -- SSE --------------------------------------------------------------------------------


async def test_sse_streams_changes_then_ends(
    engine: Engine, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse_module, "KEEPALIVE_SECONDS", 0.3)
    client = Client(make_api(engine, sse_timeout=1.0))
    try:
        handle, offset, _ = await client.sync(table="items")
        task = asyncio.create_task(
            client.shape(table="items", offset=offset, handle=handle, live="true", live_sse="true")
        )
        await until(lambda: len(client.api.interrupts) == 1, what="the SSE stream to wait")
        conn.execute("INSERT INTO items VALUES (40, 'sse', 1)")
        r = await task  # ASGITransport buffers: returns when the stream ends (sse_timeout)
        assert r.status_code == 200
        h = r.headers
        assert h["content-type"].startswith("text/event-stream")
        assert h["cache-control"] == "public, max-age=1"  # sse_timeout - 1, at least 1
        assert h["electric-offset"] == offset  # the starting offset
        assert h["electric-handle"] == handle
        assert h["electric-cursor"].isdigit()
        assert "electric-schema" not in h
        text = r.text
        events = [block for block in text.split("\n\n") if block]
        payloads = [json.loads(e.removeprefix("data: ")) for e in events if e.startswith("data: ")]
        assert all(e.startswith(("data: ", ": keep-alive")) for e in events), events
        assert all("\n" not in e for e in events)
        assert [m["key"] for m in data(payloads)] == [f'{ITEMS}"40"']
        assert controls(payloads) == ["up-to-date"]
        lsn = payloads[0]["headers"]["lsn"]
        assert payloads[-1]["headers"]["global_last_seen_lsn"] == lsn
        # The client resumes at <global_last_seen_lsn>_0: accepted, nothing re-delivered
        # but the rest of that transaction.
        resume = await client.shape(table="items", offset=f"{lsn}_0", handle=handle)
        assert resume.status_code == 200 and data(resume.json()) == []
        assert ": keep-alive\n\n" in text
    finally:
        await client.aclose()


async def test_sse_with_data_at_once_ends_at_once(engine: Engine, conn: Conn) -> None:
    client = Client(make_api(engine, sse_timeout=5.0))
    try:
        handle, offset, _ = await client.sync(table="items")
        conn.execute("INSERT INTO items VALUES (41, 'now', 1)")
        # Wait for the change through a plain live request, then ask with SSE from before it.
        r = await client.shape(table="items", offset=offset, handle=handle, live="true")
        assert data(r.json())
        started = time.monotonic()
        sse = await client.shape(
            table="items", offset=offset, handle=handle, live="true", live_sse="true"
        )
        assert time.monotonic() - started < 2.0, "an SSE request with data available ends at once"
        events = [json.loads(e.removeprefix("data: ")) for e in sse.text.split("\n\n") if e]
        assert [m["key"] for m in data(events)] == [f'{ITEMS}"41"']
        assert controls(events) == ["up-to-date"]
    finally:
        await client.aclose()


async def test_refetching_an_existing_shape_is_not_an_initial_request(
    engine: Engine, database_url: str
) -> None:
    """As Electric 1.5.2: admission counts a request as initial when its shape does not
    exist yet, not by ``offset=-1``: clients reconnecting to a shape served already
    are not refused while new shapes' snapshots take the initial budget."""
    api = make_api(engine, max_initial_requests=1)
    client = Client(api)
    handle, _, _ = await client.sync(table="items")
    locker = psycopg.connect(database_url, autocommit=True)
    try:
        locker.execute("BEGIN; LOCK TABLE other IN ACCESS EXCLUSIVE MODE")
        slow = asyncio.create_task(client.shape(table="other", offset="-1"))
        await until(lambda: api.in_flight["initial"] == 1, what="the new shape's snapshot")
        # A third shape is new: over the initial budget.
        refused = await client.shape(table="items", where="id > 0", offset="-1")
        assert refused.status_code == 503, refused.text
        assert "Concurrent initial request limit exceeded" in refused.json()["message"]
        again = await client.shape(table="items", offset="-1")
        assert again.status_code == 200, again.text
        assert again.headers["electric-handle"] == handle
        assert not slow.done()
        locker.execute("COMMIT")
        assert (await slow).status_code == 200
        assert api.in_flight == {"initial": 0, "existing": 0}
    finally:
        locker.close()
        await client.aclose()


async def test_same_route_with_trailing_slash(client: Client) -> None:
    r = await client.shape("/v1/shape/", table="items", offset="-1")
    assert r.status_code == 200 and r.headers["electric-offset"] == "0_0"


async def test_head_request(client: Client) -> None:
    r = await client.raw("/v1/shape", "HEAD", params={"table": "items", "offset": "-1"})
    assert r.status_code == 200 and r.content == b""
    assert r.headers["electric-offset"] == "0_0"


async def test_admission_control_limits_concurrent_requests(engine: Engine) -> None:
    """As Electric: separate budgets for initial (offset=-1) and other requests; over
    budget a 503 with retry-after, freed as requests finish."""
    api = make_api(engine, max_initial_requests=1, max_existing_requests=1)
    client = Client(api)
    try:
        handle, offset, _ = await client.sync(table="items")
        holding = asyncio.create_task(
            client.shape(table="items", offset=offset, handle=handle, live="true")
        )
        await waiting(api, 1)
        refused = await client.shape(table="items", offset=offset, handle=handle)
        assert refused.status_code == 503
        assert refused.json() == {
            "code": "concurrent_request_limit_exceeded",
            "message": "Concurrent existing request limit exceeded (limit: 1), please retry",
        }
        assert 5 <= int(refused.headers["retry-after"]) <= 10
        assert refused.headers["electric-internal-known-error"] == "true"
        assert refused.headers["cache-control"] == "no-store"
        # The initial budget (new shapes) is separate.
        assert (await client.shape(table="items", where="id > 0", offset="-1")).status_code == 200
        assert (await holding).status_code == 200  # the long-poll times out normally
        assert api.in_flight == {"initial": 0, "existing": 0}
        assert (await client.shape(table="items", offset=offset, handle=handle)).status_code == 200
    finally:
        await client.aclose()
