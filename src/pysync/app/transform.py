"""``transform=``: an app function over each change message of a shape response, as
Phoenix.Sync 0.6's ``transform`` option (a flat map over the messages).

    def transform(message):             # {"key": ..., "headers": {...}, "value": {...}}
        if message["headers"]["operation"] == "delete":
            return []                   # dropped
        value = {**message["value"], "title": message["value"]["title"].upper()}
        return [{**message, "value": value}]

Control messages (up-to-date, must-refetch, snapshot-end) are never passed to it.
Offsets, handles, ETags and cache headers live in the response headers, which a
transform does not touch: a client resumes and revalidates exactly as without one,
provided the transform is a pure function of the message (see the README for what a
transform may not do). Only successful (200) responses are transformed.

Log bodies are JSON arrays of entries that pysync wrote itself; large ones are streamed in
pieces, so entries are found incrementally: every value in a change message is a JSON
string or null and headers hold only strings, numbers and arrays of those, so outside a
string ``},{"`` followed by a letter occurs only between two top-level messages, and
inside a string that byte sequence would have to end the string (a raw ``"`` cannot be
part of one) and be followed by ``,``, ``:``, ``}`` or ``]``, never by a letter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
from starlette.responses import Response, StreamingResponse

log = logging.getLogger(__name__)

Message = dict[str, Any]
Transform = Callable[[Message], Sequence[Mapping[str, Any]] | Mapping[str, Any] | None]
"""A message -> the messages to send instead (a list, one message, or None / [] to drop it)."""

_BOUNDARY = re.compile(rb'\},(?=\{"[a-z])')
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def transform_response(response: Response, transform: Transform) -> Response:
    """``response`` with ``transform`` applied to its messages (JSON or SSE body)."""
    if response.status_code != 200:
        return response
    if isinstance(response, StreamingResponse):
        content_type = response.headers.get("content-type", "")
        body = response.body_iterator
        if content_type.startswith("text/event-stream"):
            response.body_iterator = _sse_events(_bytes(body), transform)
        else:
            response.body_iterator = _json_array(_bytes(body), transform)
        if "content-length" in response.headers:
            del response.headers["content-length"]
        return response
    content = bytes(response.body)
    if not content:
        return response  # HEAD
    out = b"[" + b",".join(_messages(_decode(content, type=list[msgspec.Raw]), transform)) + b"]"
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return Response(
        out, status_code=response.status_code, headers=headers, background=response.background
    )


def apply(raw: bytes | msgspec.Raw, transform: Transform) -> list[bytes]:
    """One encoded message -> the encoded messages to send."""
    message = _decode(raw)
    if not isinstance(message, dict) or "key" not in message:
        return [bytes(raw)]
    result = transform(message)
    if result is None:
        return []
    if isinstance(result, Mapping):
        return [_encode(result)]
    return [_encode(m) for m in result]


def _messages(raws: Iterable[bytes | msgspec.Raw], transform: Transform) -> Iterable[bytes]:
    for raw in raws:
        yield from apply(raw, transform)


async def _bytes(body: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)


async def _json_array(body: AsyncIterator[bytes], transform: Transform) -> AsyncIterator[bytes]:
    """A streamed ``[m1,m2,...]``, transformed entry by entry (one entry in memory at a time)."""
    pending = b""
    started = False
    first = True
    async for chunk in body:
        pending += chunk
        if not started:
            pending = pending.lstrip()
            if not pending:
                continue
            pending = pending[1:]  # the "["
            started = True
        pieces = _BOUNDARY.split(pending)
        pending = pieces.pop()
        out = [m for piece in pieces for m in apply(piece + b"}", transform)]
        if out:
            yield (b"[" if first else b",") + b",".join(out)
            first = False
    tail = pending.rstrip()
    if tail.endswith(b"]"):
        tail = tail[:-1]
    out = apply(tail, transform) if tail.strip() else []
    yield (b"[" if first else b"," if out else b"") + b",".join(out) + b"]"


async def _sse_events(body: AsyncIterator[bytes], transform: Transform) -> AsyncIterator[bytes]:
    """``data: <message>`` events transformed one by one; comments pass through."""
    pending = b""
    async for chunk in body:
        pending += chunk
        *events, pending = pending.split(b"\n\n")
        out: list[bytes] = []
        for event in events:
            if event.startswith(b"data: "):
                out.extend(b"data: " + m + b"\n\n" for m in apply(event[6:], transform))
            else:
                out.append(event + b"\n\n")
        if out:
            yield b"".join(out)
    if pending:
        yield pending
