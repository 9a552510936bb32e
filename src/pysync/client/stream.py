"""The protocol loop: follow a shape log from an offset, as Electric's clients do.

Catch up with non-live requests until a batch ends in ``up-to-date``, then (if ``live``)
long-poll (or hold an SSE connection) with the last ``electric-cursor``. A 409 resets
the stream to ``offset=-1`` under the new handle and yields a ``must-refetch`` control
message; 429, 5xx and network errors are retried with full-jitter exponential back-off
(``retry-after`` as its lower bound); other 4xx raise ClientError.

Against a broken server every answer is bounded (``Limits``): its size and duration, 409s
and stalled offsets in a row (backed off, then ``ServerLoop``), live answers that come
back at once with nothing (backed off); an offset that goes back, or anything else that
is not the protocol, raises a ``ClientError`` subclass naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx
import msgspec

from pysync.client.backoff import Backoff, Loop, retry_after
from pysync.client.errors import ClientError, MalformedResponse, OffsetWentBack, ServerLoop
from pysync.client.fetch import deadline, deadline_from_now, fetch, open_response, read_body
from pysync.client.limits import Limits
from pysync.client.messages import (
    MUST_REFETCH,
    UP_TO_DATE,
    ChangeMessage,
    ControlMessage,
    Message,
    decode_batch,
    decode_one,
)
from pysync.client.sse import event_data
from pysync.client.values import Parser, column_parsers
from pysync.log.offset import BEFORE_ALL, LogOffset, OffsetError

QUICK_LIVE_ANSWER = 1.0
"""Seconds: a live request that comes back sooner than this with no change was not held
by the server (which holds it about 20 s); a second such answer in a row is backed off."""


class ShapeStream:
    """The messages of one shape, from ``offset`` on: ``async for message in stream``.

    ``offset``, ``handle`` and ``cursor`` follow the responses; save ``offset`` and
    ``handle`` to resume later (``client.stream(..., offset=..., handle=...)``).
    ``schema`` is the decoded ``electric-schema`` header."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        shape_query: list[tuple[str, str]],
        *,
        live: bool,
        sse: bool,
        offset: str,
        handle: str | None,
        extra_query: Mapping[str, str],
        headers: Mapping[str, str],
        backoff: Backoff,
        parsers: Mapping[str, Parser] | None,
        limits: Limits | None = None,
    ) -> None:
        if offset != "-1" and handle is None:
            raise ValueError("resuming from an offset needs the shape's handle")
        self._http = http
        self._url = url
        self._shape_query = shape_query
        self._extra_query = dict(extra_query)
        self._headers = dict(headers)
        self._live = live
        self._sse = sse
        self._backoff = backoff
        self._limits = limits or Limits()
        self._custom_parsers = parsers
        self.offset = offset
        self.handle = handle
        self.cursor: str | None = None
        self.schema: dict[str, Any] | None = None
        self.up_to_date = False
        """True once a batch ended in up-to-date (until a must-refetch)."""
        self._parsers: dict[str, Parser] = {}
        self._expired_handle: str | None = None
        self._cache_buster: str | None = None
        self._iterator: AsyncGenerator[Message] | None = None
        max_loops = self._limits.max_loops
        self._refetches = Loop(backoff, max_loops)
        """409s (or other handles) since the last up-to-date."""
        self._stalls = Loop(backoff, max_loops)
        """Catch-up responses in a row that left the offset where it was."""
        self._garbled = Loop(backoff, max_loops)
        """HTTP protocol errors in a row."""
        self._idle = Loop(backoff, None)
        """Live answers in a row that came back at once with nothing."""

    def __aiter__(self) -> AsyncIterator[Message]:
        """One iterator: a loop that breaks out and a later ``async for`` go on from there."""
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    async def aclose(self) -> None:
        """End the stream (and its open request)."""
        if self._iterator is not None:
            await self._iterator.aclose()

    async def _run(self) -> AsyncGenerator[Message]:
        attempt = 0
        while True:
            try:
                # aclosing: a stream closed while a message is out closes its connection now
                async with contextlib.aclosing(
                    self._request(self._live and self.up_to_date)
                ) as request:
                    async for message in request:
                        yield message
            except httpx.RemoteProtocolError as exc:
                # Not HTTP (or cut short): once is a dropped connection, in a row a broken server.
                self._garbled.again(MalformedResponse, f"HTTP protocol errors ({exc})")
                attempt = await self._wait(attempt, None, b"")
                continue
            except httpx.TransportError:
                attempt = await self._wait(attempt, None, b"")
                continue
            except _Retry as retry:
                attempt = await self._wait(attempt, retry.response, retry.body)
                continue
            attempt = 0
            self._garbled.reset()
            if not self._live and self.up_to_date:
                return

    async def _request(self, live: bool) -> AsyncGenerator[Message]:
        """One request and the messages of its answer."""
        sent = Sent(self.handle, self.offset, time.monotonic())
        if live and self._sse:
            async for message in self._sse_request(sent):
                yield message
            return
        request = self._http.build_request(
            "GET", self._url, params=self._query(live), headers=self._headers
        )
        response, body = await fetch(self._http, request, self._limits)
        async for message in self._answer(response, body, sent, live):
            yield message

    async def _answer(
        self, response: httpx.Response, body: bytes, sent: Sent, live: bool
    ) -> AsyncGenerator[Message]:
        """The messages of a complete response to a request sent at ``sent``."""
        elapsed = time.monotonic() - sent.at
        status = response.status_code
        if status == 409:
            handle = response.headers.get("electric-handle")
            async for message in self._refetch(handle, _CONFLICTS):
                yield message
            return
        if status == 429 or status >= 500:
            raise _Retry(response, body)
        if status >= 400:
            raise _refused(response, body)
        if not self._take_headers(response, sent):
            async for message in self._refetch(response.headers["electric-handle"], _ROTATED):
                yield message
            return
        messages = self._messages(response, body)
        for message in messages:
            yield message
        if live:
            changes = not all(isinstance(m, ControlMessage) for m in messages)
            await self._pace_live(changes, elapsed)
        elif self.up_to_date or self._offset(self.offset) > sent.log_offset:
            self._stalls.reset()
        else:
            await asyncio.sleep(
                self._stalls.again(ServerLoop, f"responses that stay at {self.offset}")
            )

    async def _refetch(self, handle: str | None, why: str) -> AsyncGenerator[Message]:
        """Start over at -1 under the shape's new handle; the old one is never valid again.
        The first refetch since an up-to-date goes at once, later ones back off."""
        delay = self._refetches.again(ServerLoop, why)
        self._expired_handle = self.handle
        self.handle = handle
        self.offset = "-1"
        self.cursor = None
        self.schema = None
        self._parsers = {}
        self.up_to_date = False
        # A CDN may hold the 409 or an old -1 response: make the next URL new.
        self._cache_buster = f"{time.time_ns()}-{random.getrandbits(32):08x}"
        yield ControlMessage(MUST_REFETCH)
        await asyncio.sleep(delay)

    async def _pace_live(self, changes: bool, elapsed: float) -> None:
        if elapsed < QUICK_LIVE_ANSWER and not changes:
            await asyncio.sleep(self._idle.again(ServerLoop, "empty live answers"))
        else:
            self._idle.reset()

    def _query(self, live: bool) -> httpx.QueryParams:
        query = [*self._shape_query, *self._extra_query.items(), ("offset", self.offset)]
        if self.handle is not None:
            query.append(("handle", self.handle))
        if live:
            query += [("live", "true"), ("cursor", self.cursor or "")]
            if self._sse:
                query += [("live_sse", "true"), ("experimental_live_sse", "true")]
        if self._cache_buster is not None:
            query.append(("cache-buster", self._cache_buster))
            if self._expired_handle is not None:
                query.append(("expired_handle", self._expired_handle))
        query.sort()  # stable URLs for HTTP caches, as the TypeScript client
        return httpx.QueryParams(tuple(query))

    def _messages(self, response: httpx.Response, body: bytes) -> list[Message]:
        """The body of a 2xx response whose headers were taken."""
        if response.status_code == 204:  # an old server's long-poll timeout: caught up
            self._reached_up_to_date()
            return []
        try:
            messages = decode_batch(body, self._parsers)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise MalformedResponse(f"a response body that is not a shape log: {exc}") from None
        self._cache_buster = None
        if (
            messages
            and isinstance(messages[-1], ControlMessage)
            and messages[-1].control == UP_TO_DATE
        ):
            self._reached_up_to_date()
        return messages

    def _reached_up_to_date(self) -> None:
        self.up_to_date = True
        self._refetches.reset()

    def _take_headers(self, response: httpx.Response, sent: Sent) -> bool:
        """Take a 2xx response's headers; False if it is of another handle than asked for
        (the shape was replaced: refetch)."""
        headers = response.headers
        handle, offset = headers.get("electric-handle"), headers.get("electric-offset")
        if handle is None or offset is None:
            raise MalformedResponse(
                f"a {response.status_code} response without electric-handle and "
                "electric-offset headers"
            )
        if sent.handle is not None and handle != sent.handle:
            return False
        if self._offset(offset) < sent.log_offset:
            raise OffsetWentBack(
                f"the server answered electric-offset {offset[:40]} to a request from "
                f"offset {sent.offset}"
            )
        self.handle, self.offset = handle, offset
        cursor = headers.get("electric-cursor")
        if cursor is not None:
            self.cursor = cursor
        schema = headers.get("electric-schema")
        if self.schema is None and schema is not None:
            self.schema = _schema(schema)
            self._parsers = column_parsers(self.schema, self._custom_parsers)
        return True

    @staticmethod
    def _offset(text: str) -> LogOffset:
        try:
            return LogOffset.parse(text)
        except OffsetError:
            raise MalformedResponse(f"an offset that is not <tx>_<op>: {text[:40]!r}") from None

    async def _sse_request(self, sent: Sent) -> AsyncGenerator[Message]:
        """One SSE connection: messages as they come. The headers come once, at the start,
        so the offset to resume from is the last change's own offset."""
        headers = {**self._headers, "accept": "text/event-stream"}
        request = self._http.build_request(
            "GET", self._url, params=self._query(True), headers=headers
        )
        until = deadline_from_now(self._limits)
        async with deadline(until, "the response headers"):
            response = await open_response(self._http, request)
        changes = False
        try:
            if response.status_code != 200 or "text/event-stream" not in response.headers.get(
                "content-type", ""
            ):  # an error, or a server without SSE that answered JSON
                async with deadline(until, "the response"):
                    body = await read_body(response, self._limits)
                async for message in self._answer(response, body, sent, True):
                    yield message
                return
            if not self._take_headers(response, sent):
                async for message in self._refetch(response.headers["electric-handle"], _ROTATED):
                    yield message
                return
            async for data in event_data(response.aiter_bytes(), self._limits):
                message = self._sse_message(data)
                changes = changes or not isinstance(message, ControlMessage)
                yield message
        finally:
            await response.aclose()
        await self._pace_live(changes, time.monotonic() - sent.at)

    def _sse_message(self, data: bytes) -> Message:
        try:
            message = decode_one(data, self._parsers)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise MalformedResponse(f"an SSE event that is not a shape message: {exc}") from None
        if isinstance(message, ChangeMessage):
            offset = message.offset
            # Never back: a reconnect resumes after everything delivered so far.
            if offset is not None and self._offset(offset) > self._offset(self.offset):
                self.offset = offset
        elif isinstance(message, ControlMessage) and message.control == UP_TO_DATE:
            self._reached_up_to_date()
        return message

    async def _wait(self, attempt: int, response: httpx.Response | None, body: bytes) -> int:
        limit = self._backoff.max_retries
        if limit is not None and attempt >= limit:
            if response is None:
                raise ClientError(0, f"no answer from {self._url} after {attempt} retries")
            raise _refused(response, body)
        await asyncio.sleep(self._backoff.delay(attempt, retry_after(response)))
        return attempt + 1


_CONFLICTS = "409 (must refetch) answers before an up-to-date"
_ROTATED = "answers under a shape handle other than the one asked for"


class Sent(msgspec.Struct, frozen=True):
    """What a request asked for, and when it was sent (``time.monotonic``)."""

    handle: str | None
    offset: str
    at: float

    @property
    def log_offset(self) -> LogOffset:
        """The offset asked from; one that is not ``<tx>_<op>`` (a caller's ``now``, say)
        counts as the start."""
        try:
            return LogOffset.parse(self.offset)
        except OffsetError:
            return BEFORE_ALL


class _Retry(Exception):
    def __init__(self, response: httpx.Response, body: bytes) -> None:
        self.response = response
        self.body = body


def _schema(header: str) -> dict[str, Any]:
    """The ``electric-schema`` header: a JSON object of columns."""
    try:
        schema = msgspec.json.decode(header)
    except (msgspec.DecodeError, RecursionError):
        raise MalformedResponse("an electric-schema header that is not JSON") from None
    if not isinstance(schema, dict):
        raise MalformedResponse(
            f"an electric-schema header that is not a JSON object of columns: {header[:80]}"
        )
    return schema


def _refused(response: httpx.Response, body: bytes) -> ClientError:
    decoded: Any
    try:
        decoded = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        decoded = body.decode("utf-8", "replace")
    message = decoded.get("message") or decoded.get("error") if isinstance(decoded, dict) else None
    text = str(message or decoded or response.reason_phrase)
    errors = decoded.get("errors") if isinstance(decoded, dict) and message else None
    if errors:  # Electric's body: what is wrong, by parameter
        text += f": {msgspec.json.encode(errors).decode()}"
    return ClientError(response.status_code, text[:1000], decoded)
