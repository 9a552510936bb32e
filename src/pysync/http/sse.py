"""Live mode over Server-Sent Events (``live_sse=true``), as Electric's ``Encoder.SSE``.

One event per message, ``data: <json>\\n\\n``; an up-to-date after each batch that
reaches the end of the log; a ``: keep-alive`` comment when nothing was sent for a
while; the stream ends at its timeout, on server shutdown, or when the shape goes (the
client reconnects and then gets the 409).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec

from pysync.http.errors import ShapeAPIError
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.offset import LogOffset

KEEPALIVE_SECONDS = 21.0

Hold = Callable[[ShapeConsumer, LogOffset, float], Awaitable[None]]
"""Waits up to the given seconds for data after the offset (raises to end the stream)."""


def split_entries(payload: bytes) -> list[bytes]:
    """A snapshot chunk holds many comma-joined entries; SSE sends one per event."""
    if not payload.startswith(b'{"key"') or b'},{"' not in payload:
        return [payload]
    return [bytes(raw) for raw in msgspec.json.decode(b"[" + payload + b"]", type=list[msgspec.Raw])]


async def events(
    consumer: ShapeConsumer,
    offset: LogOffset,
    *,
    timeout: float,
    hold: Hold,
    up_to_date: Callable[[int], bytes],
    closing: Callable[[], bool],
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + timeout
    waited = False
    while time.monotonic() < deadline and not closing():
        payloads, end, reached = consumer.read(offset)
        if payloads:
            for payload in payloads:
                for message in split_entries(payload):
                    yield b"data: " + message + b"\n\n"
            offset = end
            if reached:
                yield b"data: " + up_to_date(max(end.tx, 0)) + b"\n\n"
            if not waited:
                # As Electric: data there at once is answered like a long-poll that
                # found data, and the response ends; only a waiting stream stays open.
                return
            continue
        waited = True
        try:
            await hold(consumer, offset, min(KEEPALIVE_SECONDS, deadline - time.monotonic()))
        except ShapeAPIError:
            return  # gone, changed or unavailable: the client reconnects and learns which
        if consumer.gone:
            return
        if not consumer.has_after(offset):
            yield b": keep-alive\n\n"
