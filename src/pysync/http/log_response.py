"""The response to a read of a shape's log: body and headers, built once per commit and
shared by every request that reads the same part of the log at the same offset.

Only the cursor (and CORS) depend on the request itself; everything else is encoded once
into ``Built`` and kept in a ``SharedResponses`` cache until the shape's log moves on.
A body too large to build in memory is streamed from the log instead.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from pysync.http.body import inline_body, streamed_body
from pysync.http.cursor import next_cursor
from pysync.http.params import ShapeRequest
from pysync.http.responses import JSON, cache_headers, common, etag, etag_matches
from pysync.http.shared import Prebuilt, RawHeaders, SharedResponses, encode_headers
from pysync.http.source import ShapeSource
from pysync.log.log import LogSlice
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.schema import schema_header

_encode = msgspec.json.encode


def up_to_date(lsn: int) -> bytes:
    """The up-to-date control message that ends a body read to the log's end."""
    return b'{"headers":{"control":"up-to-date","global_last_seen_lsn":"%d"}}' % lsn


class Built:
    """The part of a log response that every request for it shares."""

    __slots__ = ("body", "etag", "headers", "raw")

    def __init__(self, body: bytes, headers: dict[str, str], raw: RawHeaders, etag: str) -> None:
        self.body = body
        self.headers = headers
        self.raw = raw
        """``headers`` but cache-control (added with the request's own), encoded, with
        content-length and content-type."""
        self.etag = etag


class LogResponses:
    """Builds (and shares) the responses to log reads of an engine's shapes."""

    def __init__(
        self, engine: ShapeSource, *, long_poll_timeout: float, max_age: int, stale_age: int
    ) -> None:
        self.engine = engine
        self.long_poll_timeout = long_poll_timeout
        self.max_age = max_age
        self.stale_age = stale_age
        self._schemas: dict[str, str] = {}
        self._built: SharedResponses[Built] = SharedResponses()

    def response(
        self,
        request: Request,
        parsed: ShapeRequest,
        consumer: ShapeConsumer,
        part: LogSlice,
        *,
        up_to_date: bool,
        has_data: bool,
    ) -> Response:
        end = part.end
        lsn = None
        if up_to_date:
            if parsed.live and has_data:
                lsn = max(end.tx, 0)
            elif has_data:
                lsn = max(self.engine.last_seen_lsn, end.tx)
            else:
                lsn = self.engine.last_seen_lsn or max(end.tx, 0)
        post = request.method == "POST"
        # Everything the bytes depend on (a no-change response has a unique etag: not shared).
        key = (post, parsed.live, parsed.offset, end, lsn)
        built = self._built.get(consumer, key) if has_data else None
        if built is None:
            built = self._build(consumer, parsed, part, lsn, post=post, has_data=has_data)
            if built is None:
                return self._streamed(
                    request, parsed, consumer, part, lsn, post=post, has_data=has_data
                )
            if has_data:
                self._built.put(consumer, key, built)
        if etag_matches(request.headers.get("if-none-match"), built.etag):
            headers = dict(built.headers)
            headers.pop("electric-schema", None)
            return Response(
                b"", status_code=304, headers=common(self._own(headers, parsed), request)
            )
        own = common(self._own({"cache-control": built.headers["cache-control"]}, parsed), request)
        return Prebuilt(built.body, built.raw + encode_headers(own))

    def schema(self, consumer: ShapeConsumer) -> str:
        """The ``electric-schema`` header of ``consumer``'s shape."""
        cached = self._schemas.get(consumer.handle)
        if cached is None:
            cached = _encode(schema_header(consumer.shape.table, consumer.shape.columns)).decode()
            if len(self._schemas) > 10_000:
                self._schemas.clear()
            self._schemas[consumer.handle] = cached
        return cached

    def _own(self, headers: dict[str, str], parsed: ShapeRequest) -> dict[str, str]:
        """``headers`` with the ones that depend on the request itself (the cursor)."""
        if parsed.live:
            headers["electric-cursor"] = next_cursor(
                int(self.long_poll_timeout * 1000), parsed.cursor
            )
        return headers

    def _headers(
        self,
        consumer: ShapeConsumer,
        parsed: ShapeRequest,
        end: LogOffset,
        *,
        post: bool,
        has_data: bool,
        up_to_date: bool,
    ) -> dict[str, str]:
        """The headers of a log response that are the same for every request for it."""
        headers = {
            "electric-handle": consumer.handle,
            "electric-offset": str(end),
            "electric-has-data": "true" if has_data else "false",
            "etag": etag(consumer.handle, parsed.offset, end, not has_data),
        }
        if up_to_date:
            headers["electric-up-to-date"] = ""
        headers.update(
            cache_headers(
                "POST" if post else "GET",
                200,
                offset_is_before_all=parsed.offset == BEFORE_ALL,
                live=parsed.live,
                sse=False,
                has_replacement_handle=True,
                max_age=self.max_age,
                stale_age=self.stale_age,
            )
        )
        if not parsed.live:
            headers["electric-schema"] = self.schema(consumer)
        return headers

    def _build(
        self,
        consumer: ShapeConsumer,
        parsed: ShapeRequest,
        part: LogSlice,
        lsn: int | None,
        *,
        post: bool,
        has_data: bool,
    ) -> Built | None:
        """The response's shared part, or None when its body is too large to build."""
        body = inline_body(consumer, part, None if lsn is None else up_to_date(lsn))
        if body is None:
            return None
        headers = self._headers(
            consumer, parsed, part.end, post=post, has_data=has_data, up_to_date=lsn is not None
        )
        shared = {k: v for k, v in headers.items() if k != "cache-control"}
        shared["content-length"] = str(len(body))
        shared["content-type"] = JSON
        return Built(body, headers, encode_headers(shared), headers["etag"])

    def _streamed(
        self,
        request: Request,
        parsed: ShapeRequest,
        consumer: ShapeConsumer,
        part: LogSlice,
        lsn: int | None,
        *,
        post: bool,
        has_data: bool,
    ) -> Response:
        """A body too large to build in memory, read from the log as the client takes it."""
        headers = self._headers(
            consumer, parsed, part.end, post=post, has_data=has_data, up_to_date=lsn is not None
        )
        if etag_matches(request.headers.get("if-none-match"), headers["etag"]):
            headers.pop("electric-schema", None)
            return Response(
                b"", status_code=304, headers=common(self._own(headers, parsed), request)
            )
        body = streamed_body(consumer, part, None if lsn is None else up_to_date(lsn))
        return StreamingResponse(
            body, media_type=JSON, headers=common(self._own(headers, parsed), request)
        )
