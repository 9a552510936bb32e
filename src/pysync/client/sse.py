"""The events of a server-sent-events body, each bounded in size and in time.

Only what the shape protocol uses is read: ``data`` lines, joined by newlines, make an
event, dispatched at a blank line; comments (keep-alives) and other fields are skipped.
Lines end in LF or CRLF (as Electric and pysync write them)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pysync.client.errors import ResponseTooLarge
from pysync.client.fetch import deadline, deadline_from_now
from pysync.client.limits import Limits


async def event_data(chunks: AsyncIterator[bytes], limits: Limits) -> AsyncIterator[bytes]:
    """The data of each event. An event (from its first byte to its blank line) must be
    complete within ``request_timeout`` and at most ``max_response_bytes``; between
    events only the read timeout applies (an idle stream is fine)."""
    line = bytearray()  # the line being received
    data: list[bytes] = []
    size = 0
    until: float | None = None  # the deadline of the event being received, if one is
    while True:
        try:
            if until is None:
                chunk = await anext(chunks)
            else:
                async with deadline(until, "an SSE event"):
                    chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            line += chunk[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                del line[-1]
            if not line:
                until = None  # the next event's time starts with its first byte
                if data:
                    yield b"\n".join(data)
                    data, size = [], 0
            elif line.startswith(b"data:"):
                value = bytes(line[6:] if line.startswith(b"data: ") else line[5:])
                data.append(value)
                size += len(value) + 1
            line.clear()
        line += chunk[start:]
        if size + len(line) > limits.max_response_bytes:
            raise ResponseTooLarge(
                f"an SSE event over Limits.max_response_bytes={limits.max_response_bytes}"
            )
        if not data and not line:
            until = None
        elif until is None:
            until = deadline_from_now(limits)
