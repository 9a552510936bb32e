"""The protocol loop: follow a shape log from an offset, as Electric's clients do.

Catch up with non-live requests until a batch ends in ``up-to-date``, then (if ``live``)
long-poll (or hold an SSE connection) with the last ``electric-cursor``. A 409 resets
the stream to ``offset=-1`` under the new handle and yields a ``must-refetch`` control
message; 429, 5xx and network errors are retried with full-jitter exponential back-off
(``retry-after`` as its lower bound); other 4xx raise ClientError.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import msgspec

from pysync.client.errors import ClientError
from pysync.client.messages import (
    MUST_REFETCH,
    UP_TO_DATE,
    ChangeMessage,
    ControlMessage,
    Message,
    decode_batch,
    decode_one,
)
from pysync.client.values import Parser, column_parsers


class Backoff(msgspec.Struct, frozen=True):
    """Full-jitter exponential back-off: the n-th retry waits a random time below
    ``min(maximum, initial * multiplier**n)``, and at least the server's ``retry-after``.
    ``max_retries`` None retries forever (as the TypeScript client)."""

    initial: float = 0.1
    maximum: float = 32.0
    multiplier: float = 2.0
    max_retries: int | None = None

    def delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier**attempt)
        return max(random.uniform(0, ceiling), retry_after or 0.0)


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
            live = self._live and self.up_to_date
            try:
                if live and self._sse:
                    async for message in self._sse_request():
                        yield message
                    attempt = 0
                    continue
                response = await self._http.get(
                    self._url, params=self._query(live), headers=self._headers
                )
            except httpx.TransportError:
                attempt = await self._wait(attempt, None)
                continue
            except _Retry as retry:
                attempt = await self._wait(attempt, retry.response)
                continue
            status = response.status_code
            if status == 409:
                yield self._must_refetch(response)
                continue
            if status == 429 or status >= 500:
                attempt = await self._wait(attempt, response)
                continue
            if status >= 400:
                raise _refused(response)
            attempt = 0
            messages = self._accept(response)
            for message in messages:
                yield message
            if not self._live and self.up_to_date:
                return

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

    def _accept(self, response: httpx.Response) -> list[Message]:
        """Headers and body of a 2xx response."""
        self._take_headers(response)
        if response.status_code == 204:  # an old server's long-poll timeout: caught up
            self.up_to_date = True
            return []
        try:
            messages = decode_batch(response.content, self._parsers)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise ClientError(0, f"a response body that is not a shape log: {exc}") from None
        self._cache_buster = None
        if (
            messages
            and isinstance(messages[-1], ControlMessage)
            and messages[-1].control == UP_TO_DATE
        ):
            self.up_to_date = True
        return messages

    def _take_headers(self, response: httpx.Response) -> None:
        headers = response.headers
        handle, offset = headers.get("electric-handle"), headers.get("electric-offset")
        if handle is None or offset is None:
            raise ClientError(
                0, "a shape response without electric-handle and electric-offset headers"
            )
        self.handle, self.offset = handle, offset
        cursor = headers.get("electric-cursor")
        if cursor is not None:
            self.cursor = cursor
        schema = headers.get("electric-schema")
        if self.schema is None and schema is not None:
            try:
                self.schema = msgspec.json.decode(schema)
            except msgspec.DecodeError:
                raise ClientError(0, "an electric-schema header that is not JSON") from None
            self._parsers = column_parsers(self.schema or {}, self._custom_parsers)

    def _must_refetch(self, response: httpx.Response) -> ControlMessage:
        """Start over at -1 under the shape's new handle; the old one is never valid again."""
        self._expired_handle = self.handle
        self.handle = response.headers.get("electric-handle")
        self.offset = "-1"
        self.cursor = None
        self.schema = None
        self._parsers = {}
        self.up_to_date = False
        # A CDN may hold the 409 or an old -1 response: make the next URL new.
        self._cache_buster = f"{time.time_ns()}-{random.getrandbits(32):08x}"
        return ControlMessage(MUST_REFETCH)

    async def _sse_request(self) -> AsyncIterator[Message]:
        """One SSE connection: messages as they come. The headers come once, at the start,
        so the offset to resume from is the last change's own offset."""
        headers = {**self._headers, "accept": "text/event-stream"}
        async with self._http.stream(
            "GET", self._url, params=self._query(True), headers=headers
        ) as response:
            if response.status_code != 200 or "text/event-stream" not in response.headers.get(
                "content-type", ""
            ):
                await response.aread()
                if response.status_code == 409:
                    yield self._must_refetch(response)
                    return
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retry(response)
                if response.status_code >= 400:
                    raise _refused(response)
                for message in self._accept(response):  # a server without SSE answered JSON
                    yield message
                return
            self._take_headers(response)
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    message = self._sse_message("\n".join(data))
                    data = []
                    yield message

    def _sse_message(self, data: str) -> Message:
        try:
            message = decode_one(data, self._parsers)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise ClientError(0, f"an SSE event that is not a shape message: {exc}") from None
        if isinstance(message, ChangeMessage):
            offset = message.offset
            if offset is not None:
                self.offset = offset
        elif isinstance(message, ControlMessage) and message.control == UP_TO_DATE:
            self.up_to_date = True
        return message

    async def _wait(self, attempt: int, response: httpx.Response | None) -> int:
        limit = self._backoff.max_retries
        if limit is not None and attempt >= limit:
            if response is None:
                raise ClientError(0, f"no answer from {self._url} after {attempt} retries")
            raise _refused(response)
        await asyncio.sleep(self._backoff.delay(attempt, _retry_after(response)))
        return attempt + 1


class _Retry(Exception):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response


def _retry_after(response: httpx.Response | None) -> float | None:
    """``retry-after`` in seconds (delta-seconds, or an HTTP date capped at an hour)."""
    value = None if response is None else response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return min(3600.0, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError):
        return None


def _refused(response: httpx.Response) -> ClientError:
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text
    message = body.get("message") or body.get("error") if isinstance(body, dict) else None
    return ClientError(response.status_code, str(message or body or response.reason_phrase), body)
