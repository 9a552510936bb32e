"""The live path of ``pysync serve`` (``http/parking.py``): plain long-polls answered
from the connection or parked without a task, and everything else as the app does it.

Each test checks an outcome of a parked request against what the ASGI path gives the
same request (tests/test_http_protocol.py covers those in-process): data, timeout,
the shape gone, shutdown, a client that leaves, and responses equal to the app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.responses import StreamingResponse

from asgi_server import serving
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.http.body import INLINE_BYTES
from pysync.http.parking import LivePolls
from pysync.http.server import bounded_protocol, quiet_server_logs
from pysync.log.offset import LogOffset
from pysync.log.storage import LogCutError
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess

LONG_POLL = 20.0
"""Longer than any test waits: an answer before it is not a timeout."""
SHORT_POLL = 2.0


class Served:
    def __init__(self, server: ServeProcess, port: int, database_url: str) -> None:
        self.server = server
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.database_url = database_url

    def metric(self, name: str) -> float:
        for line in httpx.get(f"{self.base}/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def sync(self, http: httpx.Client, **shape: str) -> tuple[str, str]:
        shape = shape or {"table": "items"}
        response = http.get(f"{self.base}/v1/shape", params={**shape, "offset": "-1"})
        while "electric-up-to-date" not in response.headers:
            response = http.get(
                f"{self.base}/v1/shape",
                params={
                    **shape,
                    "offset": response.headers["electric-offset"],
                    "handle": response.headers["electric-handle"],
                },
            )
        return response.headers["electric-handle"], response.headers["electric-offset"]


def serve(database_url: str, tmp_path: Path, long_poll: float) -> Iterator[Served]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 0)")
    port = free_port()
    server = ServeProcess(
        [
            "--database-url",
            database_url,
            "--port",
            str(port),
            "--storage-dir",
            str(tmp_path / "storage"),
            "--long-poll-timeout",
            str(long_poll),
            "--allow-delete",
            "--log-level",
            "warning",
        ]
    )
    server.wait_ready()
    try:
        yield Served(server, port, database_url)
    finally:
        server.stop()


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    yield from serve(database_url, tmp_path, LONG_POLL)


@pytest.fixture
def served_short(database_url: str, tmp_path: Path) -> Iterator[Served]:
    yield from serve(database_url, tmp_path, SHORT_POLL)


def raw_get(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def until(condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def comparable(response: httpx.Response) -> dict[str, str]:
    """Headers that do not depend on the moment or the request."""
    return {
        k: v
        for k, v in response.headers.items()
        if k not in ("date", "x-request-id", "electric-cursor", "etag")
    }


def test_parked_request_gets_the_commit_and_equals_the_apps_answer(served: Served) -> None:
    with httpx.Client(timeout=30) as http:
        handle, offset = served.sync(http)
        live = {"table": "items", "offset": offset, "handle": handle, "live": "true"}
        with httpx.Client(timeout=30) as other:
            sock = raw_get(served.port, "/v1/shape?" + str(httpx.QueryParams(live)))
            until(lambda: served.metric("pysync_waiting_requests") == 1, what="the request to park")
            with psycopg.connect(served.database_url, autocommit=True) as conn:
                conn.execute("UPDATE items SET n = 1 WHERE id = 1")
            sock.settimeout(20)
            received = b""
            while b"\r\n\r\n" not in received or not received.endswith(b"]"):
                received += sock.recv(65536)
            sock.close()
            head, body = received.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200 OK")
            messages = json.loads(body)
            assert [m["value"] for m in messages if "key" in m] == [{"id": "1", "n": "1"}]
            # The same request now (data at hand: answered by the fast path at once) and
            # with a header that makes the app serve it: the same response.
            fast = other.get(f"{served.base}/v1/shape", params=live)
            app = other.get(
                f"{served.base}/v1/shape", params=live, headers={"if-none-match": '"nothing"'}
            )
        assert fast.content == app.content == body
        assert comparable(fast) == comparable(app)
        assert fast.headers["etag"] == app.headers["etag"]
        assert (
            fast.headers["electric-cursor"].isdigit() and app.headers["electric-cursor"].isdigit()
        )
        assert int(fast.headers["content-length"]) == len(body)


def test_compaction_of_a_subquery_shape_is_refused_on_the_live_path_too(served: Served) -> None:
    """The app's 400 (``steps.check_shape``): the live path answered such a request
    with the shape's changes (a 200) when they were at hand, or parked it."""
    with psycopg.connect(served.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE picked (item_id int PRIMARY KEY)")
        conn.execute("INSERT INTO picked VALUES (1)")
    shape = {"table": "items", "where": "id IN (SELECT item_id FROM picked)"}
    with httpx.Client(timeout=30) as http:
        handle, offset = served.sync(http, **shape)
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            conn.execute("UPDATE items SET n = 1 WHERE id = 1")
        live = {**shape, "offset": offset, "handle": handle, "live": "true"}
        changes = http.get(f"{served.base}/v1/shape", params=live)
        assert changes.status_code == 200  # the shape is served, the change at hand
        assert any(m.get("value") == {"id": "1", "n": "1"} for m in changes.json())
        compacted = {**live, "experimental_compaction": "true"}
        fast = http.get(f"{served.base}/v1/shape", params=compacted)
        app = http.get(
            f"{served.base}/v1/shape", params=compacted, headers={"if-none-match": '"nothing"'}
        )
    for response in (fast, app):
        assert response.status_code == 400, response.text
        assert response.json() == {
            "message": "Invalid request",
            "errors": {"experimental_compaction": ["can't be enabled for shapes with subqueries"]},
        }


def test_parked_request_times_out_with_no_change(served_short: Served) -> None:
    served = served_short
    with httpx.Client(timeout=30) as http:
        handle, offset = served.sync(http)
        started = time.monotonic()
        response = http.get(
            f"{served.base}/v1/shape",
            params={"table": "items", "offset": offset, "handle": handle, "live": "true"},
        )
        waited = time.monotonic() - started
    assert response.status_code == 200
    assert waited >= SHORT_POLL - 0.1  # not before its time
    assert response.headers["electric-has-data"] == "false"
    assert "electric-up-to-date" in response.headers
    assert response.headers["electric-offset"] == offset
    assert [m["headers"]["control"] for m in response.json()] == ["up-to-date"]


def test_shape_gone_while_parked_is_a_409_naming_the_new_shape(served: Served) -> None:
    with httpx.Client(timeout=30) as http, httpx.Client(timeout=30) as other:
        handle, offset = served.sync(http)
        sock = raw_get(
            served.port, f"/v1/shape?table=items&offset={offset}&handle={handle}&live=true"
        )
        until(lambda: served.metric("pysync_waiting_requests") == 1, what="the request to park")
        deleted = other.delete(
            f"{served.base}/v1/shape", params={"table": "items", "handle": handle}
        )
        assert deleted.status_code == 202
        sock.settimeout(20)
        received = b""
        while not received.endswith(b"]"):
            received += sock.recv(65536)
        sock.close()
    head = received.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 409")
    new_handle = next(
        line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("electric-handle:")
    )
    assert new_handle != handle


def read_response(sock: socket.socket) -> tuple[str, bytes]:
    """A whole response of a raw socket (bodies here are JSON arrays): head, body."""
    sock.settimeout(20)
    received = b""
    while b"\r\n\r\n" not in received or not received.endswith(b"]"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {received!r}"
        received += chunk
    sock.close()
    head, body = received.split(b"\r\n\r\n", 1)
    return head.decode().lower(), body


def test_deleted_shape_whose_table_went_meanwhile_is_a_409_for_each_parked_request(
    served: Served,
) -> None:
    """Not the 400 of a new request for the dropped table (Electric: a 409 to each)."""
    with httpx.Client(timeout=30) as http:
        handle, offset = served.sync(http)
        path = f"/v1/shape?table=items&offset={offset}&handle={handle}&live=true"
        socks = [raw_get(served.port, path) for _ in range(3)]
        until(lambda: served.metric("pysync_waiting_requests") == 3, what="3 parked requests")
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE items")
        deleted = http.delete(f"{served.base}/v1/shape", params={"handle": handle})
        assert deleted.status_code == 202
        for sock in socks:
            head, body = read_response(sock)
            assert head.startswith("http/1.1 409"), head
            assert json.loads(body) == [{"headers": {"control": "must-refetch"}}]
            assert "electric-handle:" not in head  # no shape can replace it
        assert served.metric("pysync_waiting_requests") == 0


def test_dropped_column_is_a_409_for_the_parked_request_then_a_400(served: Served) -> None:
    """As Electric: the live request gets the 409, the refetch the 400."""
    shape = {"table": "items", "columns": "id,n"}
    with httpx.Client(timeout=30) as http:
        first = http.get(f"{served.base}/v1/shape", params={**shape, "offset": "-1"})
        handle = first.headers["electric-handle"]
        live = {
            **shape,
            "offset": first.headers["electric-offset"],
            "handle": handle,
            "live": "true",
        }
        sock = raw_get(served.port, "/v1/shape?" + str(httpx.QueryParams(live)))
        until(lambda: served.metric("pysync_waiting_requests") == 1, what="the request to park")
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE items DROP COLUMN n")
            conn.execute("INSERT INTO items VALUES (2)")  # its Relation message tells
        head, body = read_response(sock)
        assert head.startswith("http/1.1 409"), head
        assert json.loads(body) == [{"headers": {"control": "must-refetch"}}]
        refetch = http.get(f"{served.base}/v1/shape", params={**shape, "offset": "-1"})
        assert refetch.status_code == 400
        assert refetch.json()["errors"] == {
            "columns": ["The following columns are not found on the table: n"]
        }


def test_sse_stream_of_a_deleted_shape_ends_cleanly(served: Served) -> None:
    """Deleted while the stream is sending (the client reads slowly): the stream ends
    as Electric ends it (no more events, the response complete), with no traceback."""
    with psycopg.connect(served.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, t text NOT NULL)")
    with httpx.Client(timeout=30) as http:
        first = http.get(f"{served.base}/v1/shape", params={"table": "big", "offset": "-1"})
        handle = first.headers["electric-handle"]
        params = {
            "table": "big",
            "handle": handle,
            "offset": first.headers["electric-offset"],
            "live": "true",
            "live_sse": "true",
        }
        # A client that reads slowly: the server's socket buffers fill and the stream
        # waits to send (more than they hold is coming: 12 MB, 250 KB a row).
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", served.port))
        sock.sendall(
            f"GET /v1/shape?{httpx.QueryParams(params)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        until(lambda: served.metric("pysync_waiting_requests") == 1, what="the stream to wait")
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO big SELECT g, string_agg(md5(g::text || i::text), '') "
                "FROM generate_series(1, 48) g, generate_series(1, 8000) i GROUP BY g"
            )
        sock.settimeout(20)
        received = sock.recv(4096, socket.MSG_PEEK)
        assert received.startswith(b"HTTP/1.1 200 OK"), received
        time.sleep(1.0)  # the stream is sending, blocked on the full buffers
        deleted = http.delete(f"{served.base}/v1/shape", params={"handle": handle})
        assert deleted.status_code == 202
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the last chunk: a complete response
            chunk = sock.recv(1 << 20)
            assert chunk, f"the stream broke off: ...{received[-200:]!r}\n{served.server.output()}"
            received += chunk
        sock.close()
    assert b"must-refetch" not in received  # the client's next request gets the 409
    served.server.stop()
    output = served.server.output()
    assert "Traceback" not in output and "Exception" not in output, output


def test_client_that_leaves_frees_its_place_at_once(served: Served) -> None:
    with httpx.Client(timeout=30) as http:
        handle, offset = served.sync(http)
    socks = [
        raw_get(served.port, f"/v1/shape?table=items&offset={offset}&handle={handle}&live=true")
        for _ in range(20)
    ]
    until(lambda: served.metric("pysync_waiting_requests") == 20, what="20 parked requests")
    for sock in socks:
        sock.close()
    # Long before the long-poll timeout would have ended them.
    until(lambda: served.metric("pysync_waiting_requests") == 0, what="the places to be freed")


def test_shutdown_answers_parked_requests(served: Served) -> None:
    with httpx.Client(timeout=30) as http:
        handle, offset = served.sync(http)
    socks = [
        raw_get(served.port, f"/v1/shape?table=items&offset={offset}&handle={handle}&live=true")
        for _ in range(5)
    ]
    until(lambda: served.metric("pysync_waiting_requests") == 5, what="5 parked requests")
    started = time.monotonic()
    served.server.stop()  # SIGTERM
    assert served.server.process.returncode in (0, -signal.SIGTERM), served.server.output()
    assert time.monotonic() - started < LONG_POLL, "shutdown waited for the long-polls to time out"
    for sock in socks:
        sock.settimeout(10)
        received = sock.recv(65536)
        sock.close()
        assert received.startswith(b"HTTP/1.1 200 OK"), received[:200]
        assert b"electric-has-data: false" in received


# -- in process: the parking itself --------------------------------------------------


class Recorder:
    """The connection side of the fast path, recording what it is asked to send."""

    def __init__(self) -> None:
        self.parked: Any = None
        self.sent: list[Any] = []
        self.replayed: list[bytes] = []

    def respond(self, response: Any) -> None:
        self.sent.append(response)

    def replay(self, query: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.replayed.append(query)


@contextlib.asynccontextmanager
async def items_engine(database_url: str) -> AsyncIterator[Engine]:
    """A started engine on a table ``items`` of one row."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 0)")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


@contextlib.asynccontextmanager
async def live_polls(
    database_url: str, **options: Any
) -> AsyncIterator[tuple[Engine, ShapeAPI, LivePolls, httpx.AsyncClient]]:
    """``items_engine`` with its ShapeAPI (``options``), live path and an in-process
    client of the app."""
    async with items_engine(database_url) as engine:
        api = ShapeAPI(engine, long_poll_timeout=20.0, **options)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://t"
        ) as http:
            yield engine, api, LivePolls(api), http


async def initial(http: httpx.AsyncClient) -> tuple[str, str]:
    """The initial request for ``items`` (the whole table in one response): its handle
    and the offset it ends at."""
    r = await http.get("/v1/shape", params={"table": "items", "offset": "-1"})
    return r.headers["electric-handle"], r.headers["electric-offset"]


async def test_answered_requests_leave_nothing_behind(database_url: str) -> None:
    async with live_polls(database_url) as (engine, api, polls, http):
        handle, offset = await initial(http)
        conns = [Recorder() for _ in range(10)]
        counted = responses_200(engine)
        with psycopg.connect(database_url, autocommit=True) as conn:
            for k in range(1, 6):
                query = f"table=items&offset={offset}&handle={handle}&live=true".encode()
                assert all(polls.take(c, query, []) for c in conns)
                assert len(api.interrupts) == 10 and api.in_flight["existing"] == 10
                conn.execute("UPDATE items SET n = %s WHERE id = 1", (k,))
                await until_async(lambda k=k: all(len(c.sent) == k for c in conns))
                bodies = {c.sent[-1].body for c in conns}
                assert len(bodies) == 1 and f'"n":"{k}"'.encode() in bodies.pop()
                offset = next(
                    v.decode() for n, v in conns[0].sent[-1].raw_headers if n == b"electric-offset"
                )
        assert responses_200(engine) == counted + 50  # in /metrics like the app's responses
        # Nothing kept of the 50 answered requests: not parked, not due, not registered.
        assert all(c.parked is None for c in conns)
        assert sum(len(due) for due in polls._due.values()) == 0
        assert not any(polls._groups.values())
        assert len(api.interrupts) == 0 and api.in_flight["existing"] == 0
        assert not any(c.replayed for c in conns)
        # A parked request is registered, but an interrupt leaves it waiting: its shape
        # is fixed, only app-defined shapes are re-evaluated (as ShapeAPI.hold does).
        query = f"table=items&offset={offset}&handle={handle}&live=true".encode()
        assert polls.take(conns[0], query, [])
        assert len(api.interrupts) == 1
        assert api.interrupts.interrupt("items") == 0
        await asyncio.sleep(0.2)
        assert len(conns[0].sent) == 5 and conns[0].parked is not None


def responses_200(engine: Engine) -> float:
    for line in engine.metrics.render().decode().splitlines():
        if line.startswith('pysync_http_responses_total{status="200"}'):
            return float(line.split()[1])
    return 0.0


async def until_async(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_parked_requests_and_the_apps_share_one_admission_count(database_url: str) -> None:
    """A parked request holds a place the app counts: at the limit the live path hands
    the next request to the app, which refuses it (Electric's 503, counted once)."""
    async with live_polls(database_url, max_existing_requests=2) as (engine, api, polls, http):
        handle, offset = await initial(http)
        query = f"table=items&offset={offset}&handle={handle}&live=true"
        conns = [Recorder() for _ in range(3)]
        assert polls.take(conns[0], query.encode(), [])
        assert polls.take(conns[1], query.encode(), [])
        assert api.in_flight == {"initial": 0, "existing": 2}
        assert not polls.take(conns[2], query.encode(), [])  # for the app to refuse
        assert api.in_flight == {"initial": 0, "existing": 2}
        refused = await http.get(f"/v1/shape?{query}")
        assert refused.status_code == 503
        assert refused.json()["code"] == "concurrent_request_limit_exceeded"
        assert rejects(engine, "existing") == 1
        polls.drop(conns[0].parked)  # a client leaves: its place is free at once
        assert api.in_flight == {"initial": 0, "existing": 1}
        assert polls.take(conns[2], query.encode(), [])
        assert api.in_flight == {"initial": 0, "existing": 2}


def rejects(engine: Engine, kind: str) -> float:
    for line in engine.metrics.render().decode().splitlines():
        if line.startswith(f'electric_admission_control_reject_count{{kind="{kind}"}}'):
            return float(line.split()[1])
    raise AssertionError("no electric_admission_control_reject_count")


async def test_a_log_cut_under_the_live_path_hands_the_request_to_the_app(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's read past a cut its writer made (a failed sync) raises LogCutError:
    the live path must not let it out (out of the parser callback it became uvicorn's
    '400 Invalid HTTP request'), the app serves the request and reads again."""
    async with live_polls(database_url) as (engine, api, polls, http):
        handle, offset = await initial(http)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE items SET n = 1 WHERE id = 1")
        consumer = engine.get(handle)
        assert consumer is not None
        await until_async(lambda: consumer.has_after(LogOffset.parse(offset)))
        query = f"table=items&offset={offset}&handle={handle}&live=true"

        def cut(*args: object, **kwargs: object) -> None:
            raise LogCutError(270, 185, 200)

        # What a worker's read of its followed storage raises as the response is
        # built (tests/test_storage.py makes it so).
        monkeypatch.setattr(api.log_responses, "response", cut)
        recorder = Recorder()
        assert not polls.take(recorder, query.encode(), [])
        assert not recorder.sent and recorder.parked is None
        assert api.in_flight["existing"] == 0  # its place was given back
        refused = await http.get(f"/v1/shape?{query}")
        assert refused.status_code == 503 and "storage failure" in refused.json()["message"]
        monkeypatch.undo()  # the writer's replay: the log reads again
        answered = await http.get(f"/v1/shape?{query}")
        assert answered.status_code == 200 and '"n":"1"' in answered.text


class Failing:
    """A fast path with a bug: it raises on every request."""

    def take(self, conn: Any, query: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        raise RuntimeError("a bug in the live path")

    def drop(self, parked: Any) -> None:
        raise AssertionError("nothing was parked")


async def test_a_failing_live_path_leaves_the_request_to_the_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"from the app"})

    protocol = bounded_protocol(100, 10.0, Failing())
    async with serving(app, http=protocol) as base, httpx.AsyncClient() as http:
        for _ in range(2):  # the same connection, kept alive, serves the next one
            response = await http.get(f"{base}/v1/shape?table=items&offset=0_0&live=true")
            assert response.status_code == 200 and response.text == "from the app"


async def test_a_response_cut_off_is_logged_once() -> None:
    """A body ended unfinished by a cut of its log is one warning of pysync's, not also
    uvicorn's 'Exception in ASGI application' traceback (no bug: a storage failure)."""

    async def pieces() -> AsyncIterator[bytes]:
        yield b"[" + b" " * 70_000
        raise LogCutError(270, 185, 200)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await StreamingResponse(pieces())(scope, receive, send)

    records: list[logging.LogRecord] = []

    class Recording(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Recording()
    uvicorn_log = logging.getLogger("uvicorn.error")
    quiet_server_logs()
    try:
        async with serving(app) as base, httpx.AsyncClient() as http:
            uvicorn_log.addHandler(handler)  # after serving(): uvicorn's config resets them
            with pytest.raises(httpx.RemoteProtocolError):  # the connection dropped
                await http.get(base)
    finally:
        uvicorn_log.removeHandler(handler)
    assert not [r for r in records if r.exc_info is not None], [r.getMessage() for r in records]


async def test_a_bug_answering_one_parked_request_leaves_the_others_answered(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One commit wakes every parked request of its shape at once: a failure building
    one answer is that request's 500; the others get theirs (they waited for their
    timeouts, or their clients gave up)."""
    async with live_polls(database_url) as (engine, api, polls, http):
        handle, offset = await initial(http)
        query = f"table=items&offset={offset}&handle={handle}&live=true".encode()
        conns = [Recorder() for _ in range(3)]
        assert all(polls.take(c, query, []) for c in conns)
        built = api.live_response
        calls = 0

        def failing_once(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            return built(*args)

        monkeypatch.setattr(api, "live_response", failing_once)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE items SET n = 7 WHERE id = 1")
        await until_async(lambda: all(c.sent for c in conns), timeout=5)
        statuses = sorted(c.sent[0].status_code for c in conns)
        assert statuses == [200, 200, 500], statuses
        assert api.in_flight["existing"] == 0


def pipelined(port: int, *paths: str, small_buffer: bool = True) -> socket.socket:
    """``paths`` as GETs pipelined on one connection (sent in one write). Its receive
    buffer is small unless told otherwise: a large response unread holds the server in
    its middle (and takes seconds to read: a 4 KiB window per round trip)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
    return sock


def read_responses(
    sock: socket.socket, count: int, *, close: bool = True
) -> list[tuple[str, bytes]]:
    """``count`` responses of a raw socket, in the order they came (each has a
    content-length or is chunked), as (head, body); then the socket is closed unless
    ``close`` is false (nothing past the last response may have come yet)."""
    sock.settimeout(20)
    received = b""
    responses: list[tuple[str, bytes]] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(responses)} responses"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode().lower().split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        body = b""
        if "content-length" in fields:
            size = int(fields["content-length"])
            while len(rest) < size:
                chunk = sock.recv(65536)
                assert chunk, "connection closed in a body"
                rest += chunk
            body, received = rest[:size], rest[size:]
        else:
            assert fields.get("transfer-encoding") == "chunked", head
            while True:
                while b"\r\n" not in rest:
                    chunk = sock.recv(65536)
                    assert chunk, "connection closed in a chunk"
                    rest += chunk
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    chunk = sock.recv(65536)
                    assert chunk, "connection closed in a chunk"
                    rest += chunk
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
            received = rest
        responses.append((head.decode().lower(), body))
    assert close or not received, "more than the responses asked for came"
    if close:
        sock.close()
    return responses


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    """HTTP/1.1 answers pipelined requests in the order they came (RFC 9112 9.3). The
    live path answered a long-poll behind a request the app was still serving at once,
    ahead of that one's response: the client (or a caching proxy) took the live body
    for the first request's. A request behind a parked long-poll closed the connection,
    without an answer to either."""
    with psycopg.connect(served.database_url, autocommit=True) as conn:
        # A first response big enough to be still streaming when the second is taken.
        conn.execute("INSERT INTO items SELECT g, g FROM generate_series(2, 30000) g")
    with httpx.Client(timeout=30) as http:
        handle, offset = served.sync(http)
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            conn.execute("UPDATE items SET n = 7 WHERE id = 1")
        live = f"/v1/shape?table=items&offset={offset}&handle={handle}&live=true"
        initial = "/v1/shape?table=items&offset=-1"
        until(lambda: http.get(served.base + live).status_code == 200, what="the update")
        # Data there: the live one is answered at once, but only after the first.
        first, second = read_responses(pipelined(served.port, initial, live), 2)
        assert len(json.loads(first[1])) == 30001, first[0]  # 30000 rows, snapshot-end
        assert json.loads(second[1])[0]["value"] == {"id": "1", "n": "7"}, second
        # Behind a parked long-poll: both answered, in order.
        handle, offset = served.sync(http)
        live = f"/v1/shape?table=items&offset={offset}&handle={handle}&live=true"
        sock = pipelined(served.port, live, initial)
        until(lambda: served.metric("pysync_waiting_requests") == 1, what="a parked request")
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            conn.execute("UPDATE items SET n = 8 WHERE id = 1")
        first, second = read_responses(sock, 2)
        assert json.loads(first[1])[0]["value"] == {"id": "1", "n": "8"}, first
        assert len(json.loads(second[1])) == 30001, second[0]
        # Behind a parked long-poll whose answer is too large to build (replayed through
        # the app): a long-poll of another shape, which waits in the app; a request
        # sent meanwhile is answered after it, not at once beside it.
        handle, offset = served.sync(http)
        live = f"/v1/shape?table=items&offset={offset}&handle={handle}&live=true"
        big = {"table": "items", "where": "n > 1000000"}
        big_handle, big_offset = served.sync(http, **big)
        waits = "/v1/shape?" + str(
            httpx.QueryParams({**big, "offset": big_offset, "handle": big_handle, "live": "true"})
        )
        sock = pipelined(served.port, live, waits, small_buffer=False)
        until(lambda: served.metric("pysync_waiting_requests") == 1, what="a parked request")
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            # 6000 changes: a body over INLINE_BYTES (256 KiB), streamed by the app
            conn.execute("UPDATE items SET n = n + 1 WHERE id <= 6000")
        # The replay's whole answer read: its cycle is complete, the second long-poll
        # waits in the app, and only now is a third request sent. (Sent while the
        # replay still streamed, uvicorn queued it behind that, whatever pysync did.)
        (first,) = read_responses(sock, 1, close=False)
        assert len(json.loads(first[1])) == 6001, first[0]  # the changes, up-to-date
        assert len(first[1]) > INLINE_BYTES, len(first[1])
        sock.sendall(f"GET {initial} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)  # read by now: started at once, its answer would come next
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (0, 2000000)")
        second, third = read_responses(sock, 2)
        assert json.loads(second[1])[0]["value"] == {"id": "0", "n": "2000000"}, second
        assert len(json.loads(third[1])) == 30001, third[0]  # the snapshot, as first asked
