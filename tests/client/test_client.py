"""``pysync.Client`` against ``pysync serve``: initial sync, live changes, resume, 409
recovery (truncate, schema change), SSE, back-off on 503, server-defined routes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import pysync
from pysync.client import (
    Backoff,
    ChangeMessage,
    Client,
    ClientError,
    ControlMessage,
    Limits,
    Message,
    ResponseTooLarge,
    ShapeUpdate,
)
from serve_support import Conn, Served, write

KEY = '"public"."{table}"/"{id}"'


@pytest.fixture
async def client(served: Served) -> AsyncIterator[Client]:
    async with Client(served.url, backoff=Backoff(initial=0.05, maximum=1.0)) as client:
        yield client


def table_rows(conn: Conn, table: str, where: str = "true") -> dict[str, dict[str, Any]]:
    cur = conn.execute(f"SELECT * FROM {table} WHERE {where}")
    names = [c.name for c in cur.description or ()]
    return {KEY.format(table=table, id=row[0]): dict(zip(names, row, strict=True)) for row in cur}


async def collect_until_up_to_date(stream: AsyncIterable[Message], count: int = 1) -> list[Message]:
    """Messages up to and including the ``count``-th up-to-date."""
    messages: list[Message] = []
    async for message in stream:
        messages.append(message)
        if isinstance(message, ControlMessage) and message.control == "up-to-date":
            count -= 1
            if count == 0:
                break
    return messages


def changes(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.operation, m.key) for m in messages if isinstance(m, ChangeMessage)]


async def test_initial_sync_then_live_changes(client: Client, db: Conn) -> None:
    db.execute("CREATE TABLE c_items (id int PRIMARY KEY, title text NOT NULL, n int)")
    db.execute("INSERT INTO c_items SELECT g, 'item ' || g, g FROM generate_series(1, 5) g")
    shape = await client.shape("c_items", timeout=60)
    async with shape:
        assert shape.up_to_date
        assert shape.rows == table_rows(db, "c_items")
        assert shape.rows[KEY.format(table="c_items", id=1)] == {"id": 1, "title": "item 1", "n": 1}

        updates = shape.subscribe()
        next_update = asyncio.ensure_future(anext(updates))
        txid = write(
            db,
            "INSERT INTO c_items VALUES (6, 'six', 6)",
            "UPDATE c_items SET title = 'one' WHERE id = 1",
            "DELETE FROM c_items WHERE id = 2",
        )
        await shape.wait_for_txid(txid, timeout=30)
        assert shape.rows == table_rows(db, "c_items")
        update: ShapeUpdate = await asyncio.wait_for(next_update, 30)
        assert txid in update.txids and not update.reset
        by_key = {(c.operation, c.key): c for c in update.changes}
        one = by_key["update", KEY.format(table="c_items", id=1)]
        assert one.row == {"id": 1, "title": "one", "n": 1}
        assert one.old == {"id": 1, "title": "item 1", "n": 1}
        assert by_key["delete", KEY.format(table="c_items", id=2)].row["title"] == "item 2"
        assert by_key["insert", KEY.format(table="c_items", id=6)].old is None
        await updates.aclose()


async def test_stream_yields_typed_messages_and_ends_when_not_live(
    client: Client, db: Conn
) -> None:
    db.execute("CREATE TABLE c_stream (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO c_stream VALUES (1, 'a'), (2, 'b')")
    stream = client.stream("c_stream", where="id > $1", params=[1], live=False)
    messages = [m async for m in stream]  # ends by itself at up-to-date
    assert changes(messages) == [("insert", KEY.format(table="c_stream", id=2))]
    change = next(m for m in messages if isinstance(m, ChangeMessage))
    assert change.value == {"id": 2, "v": "b"}
    assert change.headers.relation == ("public", "c_stream")
    assert isinstance(messages[-1], ControlMessage) and messages[-1].control == "up-to-date"
    assert stream.up_to_date and stream.handle and stream.offset != "-1"
    assert stream.schema == {
        "id": {"type": "int4", "pk_index": 0, "not_null": True},
        "v": {"type": "text"},
    }

    live = client.stream("c_stream", columns=["id"], replica="full")
    first = await collect_until_up_to_date(live)
    assert changes(first) == [
        ("insert", KEY.format(table="c_stream", id=1)),
        ("insert", KEY.format(table="c_stream", id=2)),
    ]
    txid = write(db, "INSERT INTO c_stream VALUES (3, 'c')")
    got = await asyncio.wait_for(collect_until_up_to_date(live), 30)
    (change,) = [m for m in got if isinstance(m, ChangeMessage)]
    assert change.value == {"id": 3} and change.headers.txids == (txid,)
    assert (
        change.headers.lsn is not None
        and change.offset == f"{change.headers.lsn}_{change.headers.op_position}"
    )
    await live.aclose()


async def test_resume_from_saved_offset_and_handle(client: Client, db: Conn) -> None:
    db.execute("CREATE TABLE c_resume (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO c_resume VALUES (1, 'a')")
    first = client.stream("c_resume", live=False)
    assert len(changes([m async for m in first])) == 1
    saved_offset, saved_handle = first.offset, first.handle
    write(db, "INSERT INTO c_resume VALUES (2, 'b')", "UPDATE c_resume SET v = 'A' WHERE id = 1")
    resumed = client.stream("c_resume", offset=saved_offset, handle=saved_handle)
    got = await asyncio.wait_for(collect_until_up_to_date(resumed), 30)
    # Only what happened after the saved offset; a live stream may need a second batch.
    while len(changes(got)) < 2:
        got += await asyncio.wait_for(collect_until_up_to_date(resumed), 30)
    assert changes(got) == [
        ("insert", KEY.format(table="c_resume", id=2)),
        ("update", KEY.format(table="c_resume", id=1)),
    ]
    assert resumed.handle == saved_handle

    with pytest.raises(ValueError, match="handle"):
        client.stream("c_resume", offset=saved_offset)


async def test_must_refetch_after_truncate_resets_rows(client: Client, db: Conn) -> None:
    db.execute("CREATE TABLE c_trunc (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO c_trunc VALUES (1, 'a'), (2, 'b')")
    async with await client.shape("c_trunc", timeout=60) as shape:
        old_handle = shape.handle
        updates = shape.subscribe()
        next_update = asyncio.ensure_future(anext(updates))
        db.execute("TRUNCATE c_trunc")
        db.execute("INSERT INTO c_trunc VALUES (3, 'c')")
        update = await asyncio.wait_for(next_update, 60)
        while not update.reset:
            update = await asyncio.wait_for(anext(updates), 60)
        await shape.wait_up_to_date(timeout=30)
        txid = write(db, "INSERT INTO c_trunc VALUES (4, 'd')")
        await shape.wait_for_txid(txid, timeout=30)
        assert shape.rows == table_rows(db, "c_trunc")
        assert shape.handle != old_handle
        await updates.aclose()


async def test_first_409_is_refetched_at_once_however_long_the_back_off(
    served: Served, db: Conn
) -> None:
    db.execute("CREATE TABLE c_trunc_now (id int PRIMARY KEY)")
    db.execute("INSERT INTO c_trunc_now VALUES (1)")
    events: list[tuple[float, int]] = []  # (when, status); status 0 = a request sent

    async def sent(request: httpx.Request) -> None:
        events.append((time.monotonic(), 0))

    async def answered(response: httpx.Response) -> None:
        events.append((time.monotonic(), response.status_code))

    hooks: dict[str, list[Callable[..., Any]]] = {"request": [sent], "response": [answered]}
    http = httpx.AsyncClient(base_url=served.url, timeout=60, event_hooks=hooks)
    async with Client(http=http, backoff=Backoff(initial=60.0, maximum=60.0)) as client:
        stream = client.stream("c_trunc_now")
        await asyncio.wait_for(collect_until_up_to_date(stream), 60)
        db.execute("TRUNCATE c_trunc_now")
        db.execute("INSERT INTO c_trunc_now VALUES (2)")
        seen: list[Message] = []
        while not any(isinstance(m, ControlMessage) and m.control == "must-refetch" for m in seen):
            seen += await asyncio.wait_for(collect_until_up_to_date(stream), 60)
        after = seen[[getattr(m, "control", None) for m in seen].index("must-refetch") :]
        assert changes(after) == [("insert", KEY.format(table="c_trunc_now", id=2))]
        await stream.aclose()
    await http.aclose()
    conflict = next(i for i, (_, status) in enumerate(events) if status == 409)
    assert events[conflict + 1][1] == 0
    assert events[conflict + 1][0] - events[conflict][0] < 1.0


async def test_response_over_max_response_bytes_from_pysync_serve(served: Served, db: Conn) -> None:
    db.execute("CREATE TABLE c_big (id int PRIMARY KEY, v text)")
    db.execute(
        "INSERT INTO c_big SELECT g, md5(g::text) || repeat('x', 968) FROM generate_series(1, 2000) g"
    )
    limits = Limits(max_response_bytes=256 * 1024)
    async with Client(served.url, limits=limits) as client:
        with pytest.raises(ResponseTooLarge, match="max_response_bytes=262144"):
            [m async for m in client.stream("c_big", live=False)]
    async with Client(served.url) as client:  # the default: far above a 2 MB shape
        messages = [m async for m in client.stream("c_big", live=False)]
    assert len(changes(messages)) == 2000


async def test_stream_sees_must_refetch_on_schema_change(client: Client, db: Conn) -> None:
    db.execute("CREATE TABLE c_schema (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO c_schema VALUES (1, 'a')")
    stream = client.stream("c_schema")
    await collect_until_up_to_date(stream)
    db.execute("ALTER TABLE c_schema ADD COLUMN extra int DEFAULT 7")
    db.execute("INSERT INTO c_schema VALUES (2, 'b')")
    seen: list[Message] = []
    while not any(isinstance(m, ControlMessage) and m.control == "must-refetch" for m in seen):
        seen += await asyncio.wait_for(collect_until_up_to_date(stream), 60)
    after = seen[
        next(
            i
            for i, m in enumerate(seen)
            if isinstance(m, ControlMessage) and m.control == "must-refetch"
        ) :
    ]
    while not any(isinstance(m, ControlMessage) and m.control == "up-to-date" for m in after):
        after += await asyncio.wait_for(collect_until_up_to_date(stream), 60)
    rows = {m.key: m.value for m in after if isinstance(m, ChangeMessage)}
    assert rows == table_rows(db, "c_schema")
    assert stream.schema is not None and stream.schema["extra"] == {"type": "int4"}
    await stream.aclose()


async def test_sse_live_updates(served: Served, db: Conn) -> None:
    db.execute("CREATE TABLE c_sse (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO c_sse VALUES (1, 'a')")
    content_types: list[str] = []

    async def record(response: httpx.Response) -> None:
        if response.request.url.params.get("live_sse") == "true":
            content_types.append(response.headers["content-type"])

    http = httpx.AsyncClient(base_url=served.url, timeout=60, event_hooks={"response": [record]})
    async with (
        Client(http=http, sse=True) as client,
        await client.shape("c_sse", timeout=60) as shape,
    ):
        for i in range(2, 5):
            txid = write(
                db,
                f"INSERT INTO c_sse VALUES ({i}, 'v{i}')",
                f"UPDATE c_sse SET v = 'x{i}' WHERE id = 1",
            )
            await shape.wait_for_txid(txid, timeout=30)
            assert shape.rows == table_rows(db, "c_sse")
        # Resuming from a change's own offset does not deliver it twice.
        stream = client.stream("c_sse", sse=True)
        await collect_until_up_to_date(stream)
        write(db, "INSERT INTO c_sse VALUES (10, 'p')", "INSERT INTO c_sse VALUES (11, 'q')")
        got: list[Message] = []
        while len(changes(got)) < 2:
            got += await asyncio.wait_for(collect_until_up_to_date(stream), 30)
        write(db, "INSERT INTO c_sse VALUES (12, 'r')")
        while len(changes(got)) < 3:
            got += await asyncio.wait_for(collect_until_up_to_date(stream), 30)
        assert [key for _, key in changes(got)] == [
            KEY.format(table="c_sse", id=i) for i in (10, 11, 12)
        ]
        await stream.aclose()
    await http.aclose()
    assert content_types and all(t.startswith("text/event-stream") for t in content_types)


class Flaky:
    """An ASGI proxy to ``pysync serve`` that first answers ``failures`` 503s with
    retry-after; records when each request arrived."""

    def __init__(self, upstream: str, failures: int, retry_after: str) -> None:
        self.upstream = httpx.AsyncClient(base_url=upstream, timeout=60)
        self.failures = failures
        self.retry_after = retry_after
        self.arrivals: list[float] = []
        self.app = Starlette(routes=[Route("/v1/shape", self.endpoint)])

    async def endpoint(self, request: Request) -> Response:
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.failures:
            return JSONResponse({"message": "busy"}, 503, headers={"retry-after": self.retry_after})
        upstream = await self.upstream.get("/v1/shape", params=request.query_params)
        headers = {k: v for k, v in upstream.headers.items() if k.startswith("electric-")}
        return Response(upstream.content, upstream.status_code, headers=headers)


async def test_backs_off_on_503_with_retry_after(served: Served, db: Conn) -> None:
    db.execute("CREATE TABLE c_busy (id int PRIMARY KEY)")
    db.execute("INSERT INTO c_busy VALUES (1)")
    flaky = Flaky(served.url, failures=2, retry_after="1")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(flaky.app), base_url="http://proxy")
    async with Client(http=http, backoff=Backoff(initial=0.01)) as client:
        messages = [m async for m in client.stream("c_busy", live=False)]
    await http.aclose()
    await flaky.upstream.aclose()
    assert changes(messages) == [("insert", KEY.format(table="c_busy", id=1))]
    assert len(flaky.arrivals) >= 3
    # retry-after is the lower bound of each wait, however small the back-off
    assert flaky.arrivals[1] - flaky.arrivals[0] >= 0.99
    assert flaky.arrivals[2] - flaky.arrivals[1] >= 0.99

    flaky = Flaky(served.url, failures=100, retry_after="0")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(flaky.app), base_url="http://proxy")
    async with Client(http=http, backoff=Backoff(initial=0.01, max_retries=3)) as client:
        with pytest.raises(ClientError) as caught:
            [m async for m in client.stream("c_busy", live=False)]
    await http.aclose()
    await flaky.upstream.aclose()
    assert caught.value.status == 503 and caught.value.body == {"message": "busy"}
    assert len(flaky.arrivals) == 4


async def test_client_errors_are_raised_with_the_server_message(client: Client) -> None:
    with pytest.raises(ClientError) as caught:
        [m async for m in client.stream("no_such_table", live=False)]
    assert caught.value.status == 400
    assert "does not exist" in str(caught.value.body)
    with pytest.raises(ClientError) as caught:
        await client.shape("no_such_table")
    assert caught.value.status == 400


async def test_secret_and_headers_are_sent(served: Served) -> None:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    http = httpx.AsyncClient(base_url=served.url, event_hooks={"request": [record]})
    async with Client(http=http, secret="s3", headers={"authorization": "Bearer t"}) as client:
        with pytest.raises(ClientError):  # pysync serve has no secret: the table is checked
            [m async for m in client.stream("no_such_table", live=False)]
    await http.aclose()
    assert seen[0].url.params["secret"] == "s3"
    assert seen[0].headers["authorization"] == "Bearer t"


async def test_server_defined_route_gets_only_offset_handle_live_cursor(
    database_url: str, conn: Conn
) -> None:
    conn.execute("CREATE TABLE todos (id int PRIMARY KEY, title text, done bool)")
    conn.execute("INSERT INTO todos VALUES (1, 'a', false), (2, 'b', true)")
    # Slots are per cluster: not the name the module's pysync serve uses.
    sync = pysync.Sync(
        database_url, long_poll_timeout=1.0, slot=f"route_{uuid.uuid4().hex[:8]}", in_memory=True
    )
    app = Starlette(routes=[sync.route("/open", pysync.shape("todos", where="done = false"))])
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    await sync.start()
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://app", event_hooks={"request": [record]}
    )
    try:
        async with (
            Client(http=http) as client,
            await client.shape(url="/open", timeout=60) as shape,
        ):
            assert set(shape.rows) == {KEY.format(table="todos", id=1)}
            txid = write(conn, "UPDATE todos SET done = false WHERE id = 2")
            await shape.wait_for_txid(txid, timeout=30)
            assert set(shape.rows) == {KEY.format(table="todos", id=i) for i in (1, 2)}
    finally:
        await http.aclose()
        await sync.stop()
    assert {key for request in seen for key in request.url.params} <= {
        "offset",
        "handle",
        "live",
        "cursor",
    }
    assert any(request.url.params.get("live") == "true" for request in seen)


def test_blocking_client(served: Served, db: Conn) -> None:
    db.execute("CREATE TABLE c_block (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO c_block VALUES (1, 'a')")
    with pysync.BlockingClient(served.url) as client:
        messages = list(client.stream("c_block", live=False))
        assert changes(messages) == [("insert", KEY.format(table="c_block", id=1))]
        shape = client.shape("c_block", timeout=60)
        txid = write(db, "INSERT INTO c_block VALUES (2, 'b')")
        shape.wait_for_txid(txid, timeout=30)
        assert shape.rows == table_rows(db, "c_block")
        shape.close()


def test_shape_argument_mirrors_pysync_shape(served: Served) -> None:
    client = Client(served.url)
    definition = pysync.shape(
        'app."My Todos"', where="id = $1", params={1: 5}, columns=["id", "x y"]
    )
    assert (
        client.stream(definition)._shape_query
        == client.stream(
            'app."My Todos"', where="id = $1", params=[5], columns=["id", "x y"]
        )._shape_query
        == [
            ("table", 'app."My Todos"'),
            ("log", "full"),
            ("where", "id = $1"),
            ("params[1]", "5"),
            ("columns", '"id","x y"'),
        ]
    )
    assert client.stream("Weird.Name", namespace="My Schema")._shape_query[0] == (
        "table",
        '"My Schema"."Weird.Name"',
    )
    with pytest.raises(TypeError):
        client.stream(definition, where="x")
    with pytest.raises(pysync.ShapeError):
        client.stream("a.b.c")


def test_txid_visibility_in_a_snapshot_is_wraparound_aware() -> None:
    from pysync.client.shape import _in_snapshot

    snapshot = ControlMessage("snapshot-end", xmin="1000", xmax="1010", xip_list=("1004",))
    assert _in_snapshot(snapshot, 999) and _in_snapshot(snapshot, 1003)
    assert not _in_snapshot(snapshot, 1004) and not _in_snapshot(snapshot, 1010)
    assert not _in_snapshot(snapshot, 1011) and not _in_snapshot(snapshot, 2**31)
    # xid8 in the third epoch: a 32-bit xid just below the epoch boundary is from before.
    wrapped = ControlMessage("snapshot-end", xmin=str(3 * 2**32 + 5), xmax=str(3 * 2**32 + 9))
    assert (
        _in_snapshot(wrapped, 2**32 - 3)
        and _in_snapshot(wrapped, 6)
        and not _in_snapshot(wrapped, 9)
    )
    assert not _in_snapshot(None, 1)
