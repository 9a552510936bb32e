"""``pysync.Client`` against a broken or hostile server (``hostile_server.Hostile``, one behaviour
per test): every answer is bounded in size and time, loops back off and end in an error,
and whatever is not the protocol raises a ``ClientError`` subclass naming it.

Each test bounds its own time (``asyncio.wait_for``): a regression fails in seconds
instead of hanging."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hostile_server import UP_TO_DATE, Hostile, Query, head, response, shape_headers
from pysync.client import (
    Backoff,
    Client,
    ClientError,
    ControlMessage,
    Limits,
    MalformedResponse,
    Message,
    OffsetWentBack,
    ResponseTimeout,
    ResponseTooLarge,
    ServerLoop,
)

FAST = Backoff(initial=0.05, maximum=0.2)
PACED = Backoff(initial=0.1, maximum=0.5)
"""For counting requests: about 10 in 1.5 s; 40 would take delays 7 times below their mean."""
BOUND = 15.0
"""Seconds any one stream of these tests may take."""

ROW = b'{"key":"k%d","value":{"id":"%d"},"headers":{"operation":"insert"}}'


async def follow(
    server: Hostile,
    *,
    live: bool = False,
    sse: bool = False,
    limits: Limits | None = None,
    backoff: Backoff = FAST,
    seconds: float = BOUND,
) -> list[Message]:
    """All messages of a stream of table ``t`` until it ends (or raises)."""
    async with Client(server.url, backoff=backoff, limits=limits, sse=sse, timeout=10) as client:
        stream = client.stream("t", live=live)

        async def collect() -> list[Message]:
            return [message async for message in stream]

        try:
            return await asyncio.wait_for(collect(), seconds)
        finally:
            await stream.aclose()


async def requests_within(server: Hostile, seconds: float, **options: Any) -> int:
    """How many requests a stream sends in ``seconds`` (it must not end before)."""
    with pytest.raises(TimeoutError):
        await follow(server, seconds=seconds, **options)
    return server.count


def rows(n: int) -> bytes:
    return b"[" + b",".join(ROW % (i, i) for i in range(n)) + b"]"


async def test_body_over_max_response_bytes_is_refused_once() -> None:
    body = rows(60_000)  # about 4 MB, a valid shape log without an up-to-date

    async def chunked(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, shape_headers(offset=f"{n}_0"), length=None))  # ends at close
        for start in range(0, len(body), 65536):
            writer.write(body[start : start + 65536])
            await writer.drain()

    async with Hostile(chunked).running() as server:
        with pytest.raises(ResponseTooLarge, match="max_response_bytes=1048576"):
            await follow(server, limits=Limits(max_response_bytes=1024 * 1024))
        assert server.count == 1  # not retried

    async def declared(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, shape_headers(), length=700_000_000) + b"[")
        await writer.drain()
        await asyncio.sleep(60)  # refused on the header alone, not after reading

    async with Hostile(declared).running() as server:
        started = time.monotonic()
        with pytest.raises(ResponseTooLarge, match="700000000 bytes"):
            await follow(server)  # the default limit
        assert time.monotonic() - started < 5
        assert server.count == 1


async def test_sse_event_over_max_response_bytes_is_refused() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            writer.write(response(200, UP_TO_DATE, shape_headers()))
            return
        headers = shape_headers(**{"content-type": "text/event-stream"})
        writer.write(head(200, headers, length=None) + b"data: ")
        for _ in range(40):  # 2.6 MB of one line
            writer.write(b"x" * 65536)
            await writer.drain()

    async with Hostile(answer).running() as server:
        limits = Limits(max_response_bytes=1024 * 1024)
        with pytest.raises(ResponseTooLarge, match="SSE event"):
            await follow(server, live=True, sse=True, limits=limits)
        assert server.count == 2


async def test_always_409_backs_off_and_ends_in_server_loop() -> None:
    async def conflict(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(
            response(409, b'[{"headers":{"control":"must-refetch"}}]', {"electric-handle": f"h{n}"})
        )

    async with Hostile(conflict).running() as server:
        with pytest.raises(ServerLoop, match=r"409 .* 5 in a row, more than Limits.max_loops=4"):
            await follow(server, limits=Limits(max_loops=4))
        assert server.count == 5
        # Each request went under the handle of the 409 before it.
        assert [q.get("handle") for _, q in server.requests] == [None, "h1", "h2", "h3", "h4"]

    async with Hostile(conflict).running() as server:
        count = await requests_within(server, 1.5, backoff=PACED, limits=Limits(max_loops=1000))
        assert 3 <= count <= 40  # without back-off: about 1,000 a second


async def test_first_409_refetches_at_once_and_up_to_date_resets_the_count() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        if n in (1, 3):  # each 409 is the first since an up-to-date
            writer.write(response(409, b"[]", {"electric-handle": f"h{n}"}))
        elif n in (2, 4):
            writer.write(response(200, UP_TO_DATE, shape_headers(handle=f"h{n - 1}")))
        else:
            await asyncio.sleep(60)  # a long-poll with nothing new

    async with Hostile(answer).running() as server:
        messages = await follow(server, backoff=Backoff(initial=30.0), limits=Limits(max_loops=1))
        assert [m.control for m in messages if isinstance(m, ControlMessage)] == [
            "must-refetch",
            "up-to-date",
        ]
        assert server.count == 2
        assert server.gaps()[0] < 1.0  # not the 30 s back-off

    async with Hostile(answer).running() as server:
        # live: the second 409 comes after an up-to-date, so it is a first one again
        count = await requests_within(
            server, 3.0, live=True, backoff=Backoff(initial=30.0), limits=Limits(max_loops=1)
        )
        assert count == 5
        assert server.gaps()[0] < 1.0 and server.gaps()[2] < 1.0
        assert server.requests[3][1]["handle"] == "h3"


@pytest.mark.parametrize("value", ["86400000", "inf", "1e308"])
async def test_retry_after_is_capped(value: str) -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            writer.write(response(503, b'{"message":"busy"}', {"retry-after": value}))
        else:
            writer.write(response(200, UP_TO_DATE, shape_headers()))

    async with Hostile(answer).running() as server:
        backoff = Backoff(initial=0.01, max_retry_after=0.5)
        messages = await follow(server, backoff=backoff)
        assert messages == [ControlMessage("up-to-date")]
        assert 0.45 <= server.gaps()[0] < 5

    assert Backoff().delay(0, float(value)) == 60.0  # the default cap


async def test_offset_going_back_raises() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, b"[]", shape_headers(offset="5_3" if n == 1 else "2_0")))

    async with Hostile(answer).running() as server:
        with pytest.raises(
            OffsetWentBack, match="electric-offset 2_0 to a request from offset 5_3"
        ):
            await follow(server)
        assert server.count == 2


async def test_offset_that_stays_backs_off_and_ends_in_server_loop() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, b"[]", shape_headers(offset="5_3")))

    async with Hostile(answer).running() as server:
        with pytest.raises(ServerLoop, match="stay at 5_3: 4 in a row"):
            await follow(server, limits=Limits(max_loops=3))
        assert server.count == 5  # the first advanced from -1, then 4 that stayed


async def test_handle_rotating_on_every_response_raises() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, UP_TO_DATE, shape_headers(handle=f"h{n}")))

    async with Hostile(answer).running() as server:
        with pytest.raises(ServerLoop, match="handle other than the one asked for"):
            await follow(server, live=True, limits=Limits(max_loops=3))
        # h1 taken; then each answer under another handle is refetched, backing off
        assert [q.get("handle") for _, q in server.requests] == [None, "h1", "h2", "h3", "h4"]


async def test_trickling_body_times_out() -> None:
    async def trickle(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, shape_headers(), length=10_000))
        for _ in range(10_000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with Hostile(trickle).running() as server:
        started = time.monotonic()
        with pytest.raises(ResponseTimeout, match="request_timeout"):
            await follow(server, limits=Limits(request_timeout=1.0))
        assert time.monotonic() - started < 3
        assert server.count == 1


async def test_trickling_headers_time_out() -> None:
    async def trickle(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(10_000):
            writer.write(b"x-a: b\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with Hostile(trickle).running() as server:
        with pytest.raises(ResponseTimeout):
            await follow(server, limits=Limits(request_timeout=1.0))


async def test_trickling_sse_event_times_out() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            writer.write(response(200, UP_TO_DATE, shape_headers()))
            return
        headers = shape_headers(**{"content-type": "text/event-stream"})
        writer.write(head(200, headers, length=None) + b": keep-alive\n\n")
        await writer.drain()
        for byte in b'data: {"headers":{"control":"up-to-date"}}' * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    async with Hostile(answer).running() as server:
        with pytest.raises(ResponseTimeout, match="SSE event"):
            await follow(server, live=True, sse=True, limits=Limits(request_timeout=1.0))


async def test_huge_header_is_refused_once() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, UP_TO_DATE, shape_headers(**{"x-big": "a" * 300_000})))

    async with Hostile(answer).running() as server:
        with pytest.raises(ResponseTooLarge, match="headers"):
            await follow(server)
        assert server.count == 1


async def test_garbage_instead_of_http_ends_in_malformed_response() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    async with Hostile(answer).running() as server:
        with pytest.raises(MalformedResponse, match="HTTP protocol errors"):
            await follow(server, limits=Limits(max_loops=3))
        assert server.count == 4


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        (
            {"electric-schema": "[1,2]"},
            UP_TO_DATE,
            "electric-schema header that is not a JSON object",
        ),
        (
            {"electric-schema": "[" * 5000 + "]" * 5000},
            UP_TO_DATE,
            "electric-schema header that is not JSON",
        ),
        ({"electric-offset": "five"}, UP_TO_DATE, "offset that is not <tx>_<op>: 'five'"),
        ({"electric-handle": None}, UP_TO_DATE, "without electric-handle"),
        (
            {},
            b'[{"key":"k","value":{"id":'
            + b"[" * 5000
            + b"]" * 5000
            + b'},"headers":{"operation":"insert"}}]',
            "nested deeper",
        ),
        (
            {},
            b'[{"headers":{"control":"snapshot-end","xmin":"abc","xmax":"1"}}]',
            "snapshot-end whose xmin",
        ),
        ({}, b'{"not":"a list"}', "not a shape log"),
        ({"content-encoding": "gzip"}, b"not gzip at all", "cannot be decoded"),
    ],
)
async def test_malformed_response_names_the_problem(
    headers: dict[str, str | None], body: bytes, problem: str
) -> None:
    sent = {k: v for k, v in {**shape_headers(), **headers}.items() if v is not None}

    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, body, sent))

    async with Hostile(answer).running() as server:
        with pytest.raises(MalformedResponse, match=problem.replace("(", r"\(")) as caught:
            await follow(server)
        assert caught.value.status == 0
        assert server.count == 1


async def test_deeply_nested_error_body_is_kept_as_text() -> None:
    deep = b"[" * 5000 + b"]" * 5000

    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(response(400, deep, {"content-type": "application/json"}))

    async with Hostile(answer).running() as server:
        with pytest.raises(ClientError) as caught:
            await follow(server)
        assert caught.value.status == 400
        assert caught.value.body == deep.decode()


async def test_empty_live_answers_at_once_are_backed_off() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, UP_TO_DATE, shape_headers()))

    async with Hostile(answer).running() as server:
        count = await requests_within(server, 1.5, live=True, backoff=PACED)
        assert 3 <= count <= 40  # without back-off: hundreds


async def test_sse_connections_closed_at_once_are_backed_off() -> None:
    async def answer(n: int, query: Query, writer: asyncio.StreamWriter) -> None:
        if query.get("live_sse") == "true":
            headers = shape_headers(**{"content-type": "text/event-stream"})
            writer.write(head(200, headers, length=None))  # and close: no event
        else:
            writer.write(response(200, UP_TO_DATE, shape_headers()))

    async with Hostile(answer).running() as server:
        count = await requests_within(server, 1.5, live=True, sse=True, backoff=PACED)
        assert 3 <= count <= 40
