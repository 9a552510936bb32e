"""http mode: the app's routes, ``render`` and ``interrupt`` forwarded to a sync service
(``pysync serve`` or an Electric server) instead of an engine in this process, as
Phoenix.Sync's ``mode: :http``.

The app sets the shape's parameters; the client's ``offset``, ``handle``, ``live``,
``cursor`` and ``live_sse`` go through, with ``If-None-Match`` and trace headers. The
upstream body is streamed as it arrives (never buffered) with every ``electric-*``
header, its ETag, cache headers and status; CORS is the app's.

Interrupts work here too: a waiting live request for a function-defined shape re-runs
its function when interrupted; the same shape goes on waiting on the same upstream
request, a changed one cancels it and answers 409 with the new shape's handle (asked of
the upstream). An SSE stream whose shape changed ends, and the client's reconnect gets
the 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator
from http.client import HTTPResponse
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from pysync.client.request import shape_params
from pysync.http.bodies import read_body
from pysync.http.errors import MustRefetch, ShapeAPIError, unavailable
from pysync.http.params import ShapeRequest
from pysync.http.responses import error_response
from pysync.http.waiters import InterruptRegistry, Recheck, ShapeMatcher, Waiter
from pysync.redact import redacted
from pysync.shapes.definition import ShapeDefinition

log = logging.getLogger(__name__)

PASSED_PARAMS = ("offset", "handle", "live", "cursor", "live_sse", "experimental_live_sse")
PASSED_HEADERS = ("if-none-match", "traceparent", "tracestate")
KEPT_HEADERS = frozenset(
    {
        "cache-control",
        "content-type",
        "etag",
        "retry-after",
        "surrogate-control",
        "x-request-id",
    }
)
READ_TIMEOUT = 120.0
"""Longer than an upstream long-poll (20 s) or SSE keep-alive (21 s)."""


class NoCookies(CookieJar):
    """The forwarding client's cookie jar, which keeps nothing: one client forwards for
    every user of the app, so a cookie the upstream (or a proxy before it) sets in an
    answer to one request must never go out with the next, another user's."""

    def set_cookie(self, cookie: Cookie) -> None:
        pass

    def extract_cookies(self, response: HTTPResponse, request: urllib.request.Request) -> None:
        pass


class RemoteShapes:
    """Forwards shape requests to the sync service at ``url``."""

    def __init__(
        self, url: str, *, secret: str | None = None, http: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.secret = secret
        self.interrupts = InterruptRegistry()
        self._http = http
        self._owns_http = http is None
        self._closing: asyncio.Event | None = None

    async def start(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.url,
                cookies=NoCookies(),
                timeout=httpx.Timeout(10.0, read=READ_TIMEOUT),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            )
        self._closing = asyncio.Event()

    async def stop(self) -> None:
        self.close()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        self.interrupts.release_all()

    @property
    def waiting(self) -> int:
        return len(self.interrupts)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the Sync is not started")
        return self._http

    # -- app-defined shapes -----------------------------------------------------------

    async def serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None,
    ) -> Response:
        query = httpx.QueryParams([*shape_params(definition), *self._passed(request)])
        upstream = self.http.build_request(
            "HEAD" if request.method == "HEAD" else "GET",
            "/v1/shape",
            params=query,
            headers=_passed_headers(request),
        )
        try:
            if not parsed.live:
                return _relay(await self._send(upstream))
            scope = contextlib.ExitStack()
            waiter = scope.enter_context(self.interrupts.waiting(definition, recheck))
            try:
                response = await self._send_interruptible(upstream, parsed, definition, waiter)
            except BaseException:
                scope.close()
                raise
        except ShapeAPIError as exc:
            return error_response(request, exc)
        if parsed.sse and response.status_code == 200:
            # An SSE body waits for changes: it stays interruptible while it streams.
            return _relay(response, self._watched(response, definition, waiter, scope))
        scope.close()
        return _relay(response)

    async def _send_interruptible(
        self,
        upstream: httpx.Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        waiter: Waiter,
    ) -> httpx.Response:
        """The upstream's answer; raises MustRefetch when an interrupt changed the shape."""
        sending = asyncio.ensure_future(self._send(upstream))
        try:
            while True:
                await asyncio.wait((sending, waiter.released), return_when=asyncio.FIRST_COMPLETED)
                if sending.done() or self.closing or waiter.recheck is None:
                    return await sending
                current = await waiter.recheck()  # raises MustRefetch if the function fails
                if current != definition:
                    handle = await self._handle_of(current)
                    if handle is None or handle != parsed.handle:
                        raise MustRefetch(handle, parsed.offset, parsed.live, parsed.sse)
                waiter.rearm()
        finally:
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(BaseException):
                    await (await sending).aclose()

    async def _watched(
        self,
        response: httpx.Response,
        definition: ShapeDefinition,
        waiter: Waiter,
        scope: contextlib.ExitStack,
    ) -> AsyncIterator[bytes]:
        chunks = response.aiter_raw().__aiter__()
        following: asyncio.Future[bytes] | None = None
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(chunks.__anext__())
                await asyncio.wait(
                    (following, waiter.released), return_when=asyncio.FIRST_COMPLETED
                )
                if following.done():
                    try:
                        chunk = following.result()
                    except StopAsyncIteration:
                        return
                    following = None
                    yield chunk
                    continue
                if self.closing or waiter.recheck is None:
                    return
                try:
                    current = await waiter.recheck()
                except MustRefetch:
                    return
                if current != definition and await self._handle_of(current) != response.headers.get(
                    "electric-handle"
                ):
                    return  # the client reconnects and gets the 409
                waiter.rearm()
        finally:
            if following is not None and not following.done():
                following.cancel()
            scope.close()
            await response.aclose()

    @property
    def closing(self) -> bool:
        return self._closing is not None and self._closing.is_set()

    async def _handle_of(self, definition: ShapeDefinition) -> str | None:
        """The handle the upstream serves ``definition`` under (None if it cannot say)."""
        pairs: list[tuple[str, str | int | float | bool | None]] = [
            *shape_params(definition),
            ("offset", "-1"),
        ]
        if self.secret:
            pairs.append(("secret", self.secret))
        query = httpx.QueryParams(pairs)
        try:
            async with self.http.stream("GET", "/v1/shape", params=query) as response:
                return (
                    response.headers.get("electric-handle") if response.status_code == 200 else None
                )
        except httpx.HTTPError:
            return None

    def _passed(self, request: Request) -> list[tuple[str, str]]:
        query = [(k, v) for k in PASSED_PARAMS if (v := request.query_params.get(k)) is not None]
        if self.secret:
            query.append(("secret", self.secret))
        return query

    async def _send(self, upstream: httpx.Request) -> httpx.Response:
        try:
            return await self.http.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            log.warning("the sync service at %s did not answer: %s", redacted(self.url), exc)
            raise unavailable("The sync service cannot be reached, please retry", 5) from exc

    # -- Electric's API, passed through ---------------------------------------------

    async def electric(self, request: Request) -> Response:
        try:
            # bounded as the engine's own POST: never held whole before the check
            body = await read_body(request) if request.method == "POST" else None
            upstream = self.http.build_request(
                request.method,
                "/v1/shape",
                params=list(request.query_params.multi_items()),
                headers={**_passed_headers(request), **_content_type(request)},
                content=body,
            )
            return _relay(await self._send(upstream))
        except ShapeAPIError as exc:
            return error_response(request, exc)

    async def health(self, request: Request) -> Response:
        try:
            return _relay(await self._send(self.http.build_request("GET", "/v1/health")))
        except ShapeAPIError as exc:
            return error_response(request, exc)

    def interrupt(self, shape: ShapeMatcher | None, **options: Any) -> int:
        return self.interrupts.interrupt(shape, **options)


def _passed_headers(request: Request) -> dict[str, str]:
    # identity: the body is relayed as is, and a transform must be able to read it.
    headers = {"accept-encoding": "identity"}
    for name in PASSED_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


def _content_type(request: Request) -> dict[str, str]:
    value = request.headers.get("content-type")
    return {"content-type": value} if value else {}


def _relay(response: httpx.Response, body: AsyncIterator[bytes] | None = None) -> Response:
    headers = {
        k: v for k, v in response.headers.items() if k in KEPT_HEADERS or k.startswith("electric-")
    }
    return StreamingResponse(
        body if body is not None else _streamed(response),
        status_code=response.status_code,
        headers=headers,
    )


async def _streamed(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()
