"""The HTTP Shape API (``/v1/shape``, ``/v1/health``), wire-compatible with Electric."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pysync import __version__
from pysync.engine import Engine, ShapeGone
from pysync.http.cache import cache_headers, etag, etag_matches
from pysync.http.cursor import next_cursor
from pysync.http.params import RequestError, ShapeRequest, parse_request
from pysync.http.subset import SUBSET_FIELDS, SubsetError, parse_subset, subset_fields_from_query
from pysync.http.waiters import InterruptRegistry, Recheck
from pysync.postgres.snapshot import take_subset
from pysync.shapes.cache import LiveShape
from pysync.shapes.definition import ShapeDefinition, ShapeError
from pysync.shapes.offset import LogOffset
from pysync.shapes.schema import schema_header

log = logging.getLogger(__name__)

EXPOSED_HEADERS = (
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,"
    "electric-up-to-date,electric-internal-known-error,retry-after"
)
JSON = "application/json; charset=utf-8"
MUST_REFETCH = b'[{"headers":{"control":"must-refetch"}}]'
SSE_KEEPALIVE_SECONDS = 21.0
SHAPE_METHODS = ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]
MAX_BODY = 8 * 1024 * 1024

_encode = msgspec.json.encode


class ShapeAPI:
    """Serves shape logs of an ``Engine``; ``interrupts`` releases waiting live requests."""

    def __init__(
        self,
        engine: Engine,
        *,
        secret: str | None = None,
        long_poll_timeout: float = 20.0,
        sse_timeout: float = 60.0,
        allow_delete: bool = False,
        max_age: int = 60,
        stale_age: int = 300,
        max_initial_requests: int = 300,
        max_existing_requests: int = 10_000,
    ) -> None:
        self.engine = engine
        self.secret = secret
        self.long_poll_timeout = long_poll_timeout
        self.sse_timeout = sse_timeout
        self.allow_delete = allow_delete
        self.max_age = max_age
        self.stale_age = stale_age
        self.interrupts = InterruptRegistry()
        self._schemas: dict[str, str] = {}
        self.closing = False
        # Admission control, as Electric: requests for a shape's start (offset=-1, which
        # may create a shape and snapshot) and all others have separate budgets.
        self.limits = {"initial": max_initial_requests, "existing": max_existing_requests}
        self.in_flight = {"initial": 0, "existing": 0}

    def close(self) -> None:
        """Server shutdown: waiting live requests answer now instead of holding it up."""
        self.closing = True
        self.interrupts.release_all()

    # -- routes ---------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/v1/shape", self.shape_endpoint, methods=SHAPE_METHODS),
            Route("/v1/shape/", self.shape_endpoint, methods=SHAPE_METHODS),
            Route("/v1/health", self.health, methods=["GET", "HEAD"]),
            Route("/", self.root, methods=["GET", "HEAD"]),
        ]

    def app(self, lifespan: Any = None) -> ASGIApp:
        """An ASGI app: ``/v1/shape`` goes straight to the handler, everything else
        through Starlette. Skipping Starlette's middleware and routing on the hot path
        saves a good share of the CPU of each live response."""
        starlette = Starlette(routes=self.routes(), lifespan=lifespan)
        shape_paths = ("/v1/shape", "/v1/shape/")

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if (scope["type"] != "http" or scope["path"] not in shape_paths
                    or scope["method"] not in SHAPE_METHODS):
                await starlette(scope, receive, send)
                return
            request = Request(scope, receive)
            try:
                response = await self.shape_endpoint(request)
            except Exception:  # noqa: BLE001 - as Electric: a redacted 500, never a crash
                log.exception("error serving %s", request.url)
                response = Response(b'{"error":"Internal server error"}', status_code=500,
                                    media_type=JSON, headers=_common({}, request=request))
            await response(scope, receive, send)

        return asgi

    async def root(self, request: Request) -> Response:
        return Response(b"", headers=_common({}, shape_route=False, request=request))

    async def health(self, request: Request) -> Response:
        started = self.engine.started.is_set()
        body = b'{"status":"active"}' if started else b'{"status":"starting"}'
        headers = _common(
            {"cache-control": "no-cache, no-store, must-revalidate"}, shape_route=False, request=request
        )
        return Response(body, status_code=200 if started else 202, media_type=JSON, headers=headers)

    async def shape_endpoint(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return _options(request)
        if not self._authorized(request):
            # As Electric: sent before CORS and content-type are added.
            return Response(b'{"message":"Unauthorized - Invalid API secret"}', status_code=401)
        if request.method == "DELETE":
            return await self._delete(request)
        query: dict[str, str] = dict(request.query_params)
        subset: dict[str, object] | None
        try:
            if request.method == "POST":
                body = await self._post_body(request, query)
                if isinstance(body, Response):
                    return body
                subset = body
            else:
                subset = subset_fields_from_query(query)
        except SubsetError as exc:
            return self._error(request, 400, {"message": "Invalid request", "errors": {"subset": exc.errors}})
        try:
            parsed = parse_request(query)
        except RequestError as exc:
            return self._error(request, 400, {"message": "Invalid request", "errors": exc.errors})
        assert parsed.definition is not None
        return await self.serve(request, parsed, parsed.definition, subset=subset)

    async def _post_body(self, request: Request, query: dict[str, str]) -> dict[str, object] | Response:
        """Subset fields from a POST body; other body keys join the shape params."""
        body = await request.body()
        if len(body) > MAX_BODY:
            return self._error(request, 413, {"error": "Request body too large"})
        if not body.strip():
            return {}
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return self._error(request, 400, {"error": "Invalid JSON in request body", "details": str(exc)})
        if not isinstance(data, dict):
            return self._error(request, 400, {"error": "Request body must be a JSON object"})
        nested = data.pop("subset", None)
        fields = dict(nested) if isinstance(nested, dict) else {}
        for key, value in data.items():
            if key in SUBSET_FIELDS:
                fields.setdefault(key, value)
            elif key not in ("where_expr", "order_by_expr") and isinstance(value, (str, int, float, bool)):
                query.setdefault(key, str(value).lower() if isinstance(value, bool) else str(value))
        return fields

    # -- serving --------------------------------------------------------------------

    async def serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None = None,
        subset: dict[str, object] | None = None,
    ) -> Response:
        """Answer a validated request for ``definition`` (also used by app-defined shapes)."""
        kind = "initial" if parsed.offset == LogOffset(-1, 0) else "existing"
        if self.in_flight[kind] >= self.limits[kind]:
            return self._error(
                request, 503,
                {"code": "concurrent_request_limit_exceeded",
                 "message": f"Concurrent {kind} request limit exceeded (limit: {self.limits[kind]}), please retry"},
                {"retry-after": str(random.randint(5, 10)), "electric-internal-known-error": "true"},
            )
        self.in_flight[kind] += 1
        try:
            return await self._serve(request, parsed, definition, recheck, subset)
        finally:
            self.in_flight[kind] -= 1

    async def _serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None,
        subset: dict[str, object] | None,
    ) -> Response:
        try:
            live = await self.engine.shape(definition)
        except ShapeError as exc:
            return self._error(request, 400, {"message": "Invalid request", "errors": {exc.field: [exc.message]}})
        except psycopg.OperationalError:
            return self._error(
                request, 503,
                {"message": "Cannot connect to the database to verify the shape. Please try again later."},
                {"retry-after": "1"},
            )
        offset = parsed.offset
        if offset != "now" and offset != LogOffset(-1, 0) and parsed.handle != live.handle:
            return self._must_refetch(request, parsed, live.handle)
        try:
            # Electric points 0_k at chunk k+1 while the snapshot is still being written and
            # waits for that chunk: answering [] at the same offset without up-to-date would
            # make the client re-ask at once (a busy loop, read as a proxy loop by the TS client).
            await self.engine.wait_ready(live, None if offset == "now" else offset)
        except ShapeGone:
            return self._must_refetch(request, parsed, None)
        except TimeoutError:
            return self._error(request, 503, {"message": "Snapshot timed out, please retry"}, {"retry-after": "10"})
        except Exception as exc:  # noqa: BLE001 - a failed snapshot is the client's 503
            return self._error(
                request, 503, {"message": f"Unable to create the shape's snapshot: {exc}"},
                {"retry-after": "10", "electric-internal-known-error": "true"},
            )
        if subset is not None:
            return await self._subset(request, live, subset)
        if offset == "now":
            return self._response(request, parsed, live, [], live.log.last_offset, up_to_date=True, has_data=False)
        if parsed.sse:
            return self._sse(request, parsed, live, offset, recheck)
        payloads, end, reached = live.log.read(offset)
        if not payloads and parsed.live:
            outcome = await self._hold(live, offset, recheck)
            if outcome == "gone":
                return self._must_refetch(request, parsed, self._replacement(live))
            if isinstance(outcome, LiveShape):
                return self._must_refetch(request, parsed, outcome.handle)
            payloads, end, reached = live.log.read(offset)
        elif not payloads and live.log.snapshot_done and offset > live.log.last_offset:
            # A client slightly ahead (e.g. after a restart) gets half a timeout to be right.
            await self._hold(live, offset, None, self.long_poll_timeout / 2)
            payloads, end, reached = live.log.read(offset)
            if not payloads and offset > live.log.last_offset:
                return self._error(
                    request, 400,
                    {"message": "Invalid request", "errors": {"offset": ["out of bounds for this shape"]}},
                )
        if live.gone:
            return self._must_refetch(request, parsed, self._replacement(live))
        up_to_date = reached and offset != LogOffset(-1, 0)
        # Only a live request that waited without data (timeout, interrupt) is a "no change"
        # response (has-data false, unrevalidatable etag); a non-live read that finds nothing
        # new still answers has-data true, as Electric's no_change_response is long-poll only.
        no_change = parsed.live and not payloads
        return self._response(request, parsed, live, payloads, end, up_to_date=up_to_date, has_data=not no_change)

    async def _subset(self, request: Request, live: LiveShape, fields: dict[str, object]) -> Response:
        try:
            subset = parse_subset(fields, live.shape.table)
        except SubsetError as exc:
            return self._error(request, 400, {"message": "Invalid request", "errors": {"subset": exc.errors}})
        # The offset the client continues from is taken before the query runs.
        offset = live.log.last_offset
        mark = secrets.randbelow(1 << 31)
        try:
            async with self.engine.snapshots.connection() as conn:
                info, rows = await take_subset(
                    conn, live.shape, mark=mark, where=subset.where, order_by=subset.order_by,
                    limit=subset.limit, offset=subset.offset,
                )
        except psycopg.Error as exc:
            return self._error(request, 400, {"message": "Invalid request", "errors": {
                "subset": {"where": exc.diag.message_primary or str(exc)}}})
        metadata = _encode({
            "xmin": str(info.xmin), "xmax": str(info.xmax), "xip_list": [str(x) for x in info.xip],
            "database_lsn": str(info.lsn), "snapshot_mark": mark,
        })
        body = b'{"metadata":' + metadata + b',"data":[' + b",".join(rows) + b"]}"
        headers = {
            "cache-control": "no-cache", "electric-snapshot": "true", "electric-handle": live.handle,
            "electric-offset": str(offset), "electric-schema": self._schema(live),
        }
        return Response(body, media_type=JSON, headers=_common(headers, request=request))

    async def _hold(
        self, live: LiveShape, offset: LogOffset, recheck: Recheck | None, timeout: float | None = None
    ) -> str | LiveShape | None:
        """Wait for data after ``offset``; "gone", a replacement shape, or None."""
        deadline = time.monotonic() + (self.long_poll_timeout if timeout is None else timeout)
        with self.interrupts.waiting(live.definition, recheck) as waiter:
            while True:
                if live.gone:
                    return "gone"
                if self.closing:
                    return None
                if live.log.has_after(offset) and live.log.snapshot_done:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                grown = live.log.waiter()
                await asyncio.wait(
                    [grown, waiter.released], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if not grown.done():
                    grown.cancel()
                if waiter.released.done():
                    if waiter.recheck is None:
                        return None  # a plain request answers up-to-date; the client re-requests
                    current = await waiter.recheck()
                    if current != live.definition:
                        try:
                            return await self.engine.shape(current)
                        except ShapeError:
                            return "gone"
                    waiter.released = asyncio.get_running_loop().create_future()

    def _replacement(self, live: LiveShape) -> str | None:
        replacement = self.engine.existing(live.definition)
        return replacement.handle if replacement is not None else None

    # -- responses ------------------------------------------------------------------

    def _up_to_date(self, lsn: int) -> bytes:
        return b'{"headers":{"control":"up-to-date","global_last_seen_lsn":"%d"}}' % lsn

    def _response(
        self,
        request: Request,
        parsed: ShapeRequest,
        live: LiveShape,
        payloads: list[bytes],
        end: LogOffset,
        *,
        up_to_date: bool,
        has_data: bool,
    ) -> Response:
        parts = list(payloads)
        if up_to_date:
            if parsed.live and has_data:
                lsn = max(end.tx, 0)
            elif has_data:
                lsn = max(self.engine.last_seen_lsn, end.tx)
            else:
                lsn = self.engine.last_seen_lsn or max(end.tx, 0)
            parts.append(self._up_to_date(lsn))
        body = b"[" + b",".join(parts) + b"]"
        headers = {
            "electric-handle": live.handle,
            "electric-offset": str(end),
            "electric-has-data": "true" if has_data else "false",
            "etag": etag(live.handle, parsed.offset, end, not has_data),
        }
        if up_to_date:
            headers["electric-up-to-date"] = ""
        if parsed.live:
            headers["electric-cursor"] = next_cursor(int(self.long_poll_timeout * 1000), parsed.cursor)
        headers.update(
            cache_headers(
                "POST" if request.method == "POST" else "GET", 200,
                offset_is_before_all=parsed.offset == LogOffset(-1, 0), live=parsed.live,
                sse=False, has_replacement_handle=True, max_age=self.max_age, stale_age=self.stale_age,
            )
        )
        if etag_matches(request.headers.get("if-none-match"), headers["etag"]):
            return Response(b"", status_code=304, headers=_common(headers, request=request))
        if not parsed.live:
            headers["electric-schema"] = self._schema(live)
        return Response(body, media_type=JSON, headers=_common(headers, request=request))

    def _schema(self, live: LiveShape) -> str:
        cached = self._schemas.get(live.handle)
        if cached is None:
            cached = _encode(schema_header(live.shape.table, live.shape.columns)).decode()
            if len(self._schemas) > 10_000:
                self._schemas.clear()
            self._schemas[live.handle] = cached
        return cached

    def _must_refetch(self, request: Request, parsed: ShapeRequest, handle: str | None) -> Response:
        headers = cache_headers(
            "GET", 409, offset_is_before_all=False, live=parsed.live, sse=parsed.sse,
            has_replacement_handle=handle is not None,
        )
        if handle is not None:
            headers["electric-handle"] = handle
            headers["etag"] = etag(handle, parsed.offset, None, False)
        return Response(MUST_REFETCH, status_code=409, media_type=JSON, headers=_common(headers, request=request))

    def _error(
        self, request: Request, status: int, body: dict[str, Any], extra: Mapping[str, str] | None = None
    ) -> Response:
        headers = cache_headers(
            request.method, status, offset_is_before_all=False, live=False, sse=False,
            has_replacement_handle=False,
        )
        headers.update(extra or {})
        return Response(_encode(body), status_code=status, media_type=JSON, headers=_common(headers, request=request))

    # -- SSE ------------------------------------------------------------------------

    def _sse(
        self, request: Request, parsed: ShapeRequest, live: LiveShape, offset: LogOffset,
        recheck: Recheck | None,
    ) -> Response:
        payloads, end, reached = live.log.read(offset)
        headers = {
            "electric-handle": live.handle,
            "electric-offset": str(offset if not payloads else end),
            "electric-cursor": next_cursor(int(self.long_poll_timeout * 1000), parsed.cursor),
            "etag": etag(live.handle, offset, end, not payloads),
            "connection": "keep-alive",
            "x-accel-buffering": "no",
        }
        if reached:
            headers["electric-up-to-date"] = ""
        headers.update(
            cache_headers("GET", 200, offset_is_before_all=False, live=True, sse=True,
                          has_replacement_handle=True, sse_timeout_s=int(self.sse_timeout))
        )
        return StreamingResponse(
            self._sse_events(live, offset, recheck), media_type="text/event-stream",
            headers=_common(headers, request=request),
        )

    async def _sse_events(self, live: LiveShape, offset: LogOffset, recheck: Recheck | None) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + self.sse_timeout
        waited = False
        while time.monotonic() < deadline and not self.closing:
            payloads, end, reached = live.log.read(offset)
            if payloads:
                for payload in payloads:
                    for message in _split_entries(payload):
                        yield b"data: " + message + b"\n\n"
                offset = end
                if reached:
                    yield b"data: " + self._up_to_date(max(end.tx, 0)) + b"\n\n"
                if not waited:
                    # As Electric: data there at once is answered like a long-poll that
                    # found data, and the response ends; only a waiting stream stays open.
                    return
                continue
            waited = True
            outcome = await self._hold(live, offset, recheck, min(SSE_KEEPALIVE_SECONDS, deadline - time.monotonic()))
            if outcome is not None or live.gone:
                return  # the client reconnects and then gets the 409
            if not live.log.has_after(offset):
                yield b": keep-alive\n\n"

    # -- DELETE ---------------------------------------------------------------------

    async def _delete(self, request: Request) -> Response:
        if not self.allow_delete:
            return self._error(request, 405, {"message": "DELETE not allowed"})
        query = dict(request.query_params)
        handle = query.get("handle")
        if not query.get("table"):
            if not handle:
                return self._error(request, 400, {"message": "Invalid request", "errors": {
                    "handle": ["can't be blank when shape definition is missing"]}})
            live = self.engine.get(handle)
        else:
            query.setdefault("offset", "-1")
            query.pop("handle", None)
            try:
                parsed = parse_request(query)
                assert parsed.definition is not None
                live = await self.engine.find(parsed.definition)
            except RequestError as exc:
                return self._error(request, 400, {"message": "Invalid request", "errors": exc.errors})
            except ShapeError as exc:
                return self._error(request, 400, {"message": "Invalid request", "errors": {exc.field: [exc.message]}})
            if live is not None and handle and live.handle != handle:
                return self._error(request, 400, {"message": (
                    "The specified shape definition and handle do not match. Please ensure the shape "
                    "definition is correct or omit the shape handle from the request to obtain a new one.")})
        if live is None or live.gone:
            return self._error(request, 404, {"message": "No existing shape found"})
        self.engine.delete(live.handle)
        return Response(b"", status_code=202, headers=_common(
            {"cache-control": "no-cache", "electric-handle": live.handle}, request=request))

    def _authorized(self, request: Request) -> bool:
        if not self.secret:
            return True
        given = request.query_params.get("secret") or request.query_params.get("api_secret") or ""
        return hmac.compare_digest(given.encode(), self.secret.encode())


def _split_entries(payload: bytes) -> list[bytes]:
    """A snapshot chunk holds many comma-joined entries; SSE sends one per event."""
    if not payload.startswith(b'{"key"') or b'},{"' not in payload:
        return [payload]
    return [bytes(raw) for raw in msgspec.json.decode(b"[" + payload + b"]", type=list[msgspec.Raw])]


_request_ids = itertools.count()
_REQUEST_ID_PREFIX = os.urandom(6).hex()


def _request_id() -> str:
    # Unique per process run and cheap: uuid4 per request showed up in profiles.
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids):010x}"


def _common(headers: dict[str, str], *, request: Request, shape_route: bool = True) -> dict[str, str]:
    origin = request.headers.get("origin")
    out = {
        "electric-server": f"pysync/{__version__}",
        "x-request-id": _request_id(),
        "access-control-allow-origin": origin or "*",
        "access-control-expose-headers": EXPOSED_HEADERS,
        "access-control-allow-methods": "GET, POST, HEAD, DELETE, OPTIONS" if shape_route else "GET, HEAD",
    }
    if "cache-control" not in headers:
        out["cache-control"] = "max-age=0, private, must-revalidate"
    out.update(headers)
    return out


def _options(request: Request) -> Response:
    headers = _common({"access-control-max-age": "86400", "connection": "keep-alive"}, request=request)
    del headers["cache-control"]
    requested = request.headers.get("access-control-request-headers")
    if requested:
        allowed = [h.strip() for h in requested.split(",") if h.strip().lower() in ("if-none-match", "traceparent")]
        if allowed:
            headers["access-control-allow-headers"] = ",".join(allowed)
    return Response(b"", status_code=204, headers=headers)

