"""Live mode over Server-Sent Events (``live_sse=true``), as Electric's ``Encoder.SSE``.

One event per message, ``data: <json>\\n\\n``; an up-to-date after each batch that
reaches the end of the log; a ``: keep-alive`` comment when nothing was sent for a
while; the stream ends at its timeout, on server shutdown, or when the shape goes (the
client reconnects and then gets the 409).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from pysync.http.cursor import next_cursor
from pysync.http.errors import ShapeAPIError
from pysync.http.log_response import up_to_date
from pysync.http.params import ShapeRequest
from pysync.http.responses import cache_headers, common, etag
from pysync.http.shared import SharedResponses
from pysync.http.waiters import Recheck
from pysync.log.offset import LogOffset
from pysync.shapes.consumer import ShapeConsumer

if TYPE_CHECKING:
    from pysync.http.api import ShapeAPI

KEEPALIVE_SECONDS = 21.0
BATCH_BYTES = 256 * 1024

Hold = Callable[[ShapeConsumer, LogOffset, float], Awaitable[None]]
"""Waits up to the given seconds for data after the offset (raises to end the stream)."""


def split_entries(payload: bytes) -> list[bytes]:
    """A snapshot chunk holds many comma-joined entries; SSE sends one per event."""
    if not payload.startswith(b'{"key"') or b'},{"' not in payload:
        return [payload]
    return [
        bytes(raw) for raw in msgspec.json.decode(b"[" + payload + b"]", type=list[msgspec.Raw])
    ]


Batch = tuple[bytes, LogOffset, bool]
"""Encoded events of one read (with the up-to-date when it reached the end), its end
offset, whether it reached the end."""


def _batch(consumer: ShapeConsumer, offset: LogOffset) -> Batch:
    # In bounded batches: a reader far behind holds one batch, not the whole log.
    payloads, end, reached = consumer.read(offset, BATCH_BYTES)
    events = [
        b"data: " + message + b"\n\n" for payload in payloads for message in split_entries(payload)
    ]
    if payloads and reached:
        events.append(b"data: " + up_to_date(max(end.tx, 0)) + b"\n\n")
    return b"".join(events), end, reached


async def events(
    consumer: ShapeConsumer,
    offset: LogOffset,
    *,
    timeout: float,
    hold: Hold,
    closing: Callable[[], bool],
    shared: SharedResponses[Batch],
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + timeout
    waited = False
    while time.monotonic() < deadline and not closing():
        if consumer.gone:
            # Deleted or invalidated while the stream was being sent: as Electric, the
            # stream ends (the client's next request gets the 409).
            return
        # Every subscriber woken by the same append reads the same batch: encoded once.
        key = (offset, consumer.last_offset)
        batch = shared.get(consumer, key)
        if batch is None:
            batch = _batch(consumer, offset)
            shared.put(consumer, key, batch)
        block, end, reached = batch
        if block:
            yield block
            offset = end
            if reached and not waited:
                # As Electric: data there at once is answered like a long-poll that
                # found data, and the response ends; only a waiting stream stays open.
                return
            continue
        waited = True
        try:
            await hold(consumer, offset, min(KEEPALIVE_SECONDS, deadline - time.monotonic()))
        except ShapeAPIError:
            return  # gone, changed or unavailable: the client reconnects and learns which
        if not consumer.has_after(offset):
            yield b": keep-alive\n\n"


def response(
    api: ShapeAPI,
    request: Request,
    parsed: ShapeRequest,
    consumer: ShapeConsumer,
    offset: LogOffset,
    recheck: Recheck | None,
) -> Response:
    """The SSE response; headers as at its start (the client takes its resume offset
    from the up-to-date messages)."""
    payloads, end, reached = consumer.read(offset)
    headers = {
        "electric-handle": consumer.handle,
        "electric-offset": str(offset if not payloads else end),
        "electric-cursor": next_cursor(int(api.long_poll_timeout * 1000), parsed.cursor),
        "etag": etag(consumer.handle, offset, end, not payloads),
        "connection": "keep-alive",
        "x-accel-buffering": "no",
    }
    if reached:
        headers["electric-up-to-date"] = ""
    headers.update(
        cache_headers(
            "GET",
            200,
            offset_is_before_all=False,
            live=True,
            sse=True,
            has_replacement_handle=True,
            sse_timeout_s=int(api.sse_timeout),
        )
    )

    async def hold(consumer: ShapeConsumer, offset: LogOffset, timeout: float) -> None:
        await api.hold(parsed, consumer, offset, timeout, recheck)

    stream = events(
        consumer,
        offset,
        timeout=api.sse_timeout,
        hold=hold,
        closing=lambda: api.closing,
        shared=api.sse_batches,
    )
    return StreamingResponse(
        stream, media_type="text/event-stream", headers=common(headers, request)
    )
