"""What every shape-API response carries: CORS, server and request-id headers,
cache-control per response kind, ETags and If-None-Match, and the rendering of errors.

Mirrors Electric's ``put_cache_headers``, ``etag`` and ``CORSHeaderPlug``. A given
handle's log between two offsets never changes, which is what makes caching shape
responses in CDNs safe.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from pysync._version import __version__
from pysync.http.errors import MustRefetch, ShapeAPIError
from pysync.log.offset import LogOffset

EXPOSED_HEADERS = (
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,"
    "electric-up-to-date,electric-internal-known-error,retry-after"
)
JSON = "application/json; charset=utf-8"
MUST_REFETCH_BODY = b'[{"headers":{"control":"must-refetch"}}]'
SHAPE_METHODS = "GET, POST, HEAD, DELETE, OPTIONS"
READ_METHODS = "GET, POST, HEAD, OPTIONS"
"""The shape route's methods when DELETE is off (``--allow-delete``): a preflight then
does not invite a DELETE that answers 405."""
PREFLIGHT_HEADERS = ("if-none-match", "traceparent")
"""Request headers a preflight may allow, as Electric (auth headers need a proxy)."""

# Seeded with wall-clock time so a restarted server does not reissue earlier suffixes.
_no_change_suffixes = itertools.count(time.time_ns())
_request_ids = itertools.count()
_REQUEST_ID_PREFIX = os.urandom(6).hex()
_SERVER = f"pysync/{__version__}"


def _request_id() -> str:
    # Unique per process run and cheap: uuid4 per request showed up in profiles.
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids):010x}"


def common(
    headers: dict[str, str], request: Request, *, shape_route: bool = True
) -> dict[str, str]:
    """``headers`` with the ones every response gets (CORS, server, request id, and the
    default cache-control when none is set)."""
    out = {
        "electric-server": _SERVER,
        "x-request-id": _request_id(),
        "access-control-allow-origin": request.headers.get("origin") or "*",
        "access-control-expose-headers": EXPOSED_HEADERS,
        "access-control-allow-methods": SHAPE_METHODS if shape_route else "GET, HEAD",
    }
    if "cache-control" not in headers:
        out["cache-control"] = "max-age=0, private, must-revalidate"
    out.update(headers)
    return out


def cache_headers(
    method: str,
    status: int,
    *,
    offset_is_before_all: bool,
    live: bool,
    sse: bool,
    has_replacement_handle: bool,
    max_age: int = 60,
    stale_age: int = 300,
    sse_timeout_s: int = 60,
) -> dict[str, str]:
    """``cache-control`` (and, for errors, ``surrogate-control``) of a shape-route response.

    The first matching rule of Electric's matrix wins, hence the order of the branches.
    """
    if method not in ("GET", "OPTIONS"):
        return {"cache-control": "no-cache"}
    if status == 409:
        # Cached briefly on purpose: a 409 is a redirect to the new handle, and a CDN
        # absorbs the herd of clients refetching an invalidated shape. Without a
        # handle to redirect to, cache only long enough to collapse requests.
        age = 60 if has_replacement_handle else 1
        return {"cache-control": f"public, max-age={age}, must-revalidate"}
    if status >= 400:
        # no-store, not no-cache, so that no CDN keeps an error around.
        return {"cache-control": "no-store", "surrogate-control": "no-store"}
    if offset_is_before_all:
        # Browsers may keep the initial log for long; shared caches revalidate hourly
        # so they serve a fairly fresh copy of it.
        return {
            "cache-control": "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
        }
    if live and sse:
        # Just under the connection's life, to collapse concurrent SSE requests.
        return {"cache-control": f"public, max-age={max(1, sse_timeout_s - 1)}"}
    if live:
        return {"cache-control": "public, max-age=5, stale-while-revalidate=5"}
    return {"cache-control": f"public, max-age={max_age}, stale-while-revalidate={stale_age}"}


def etag(
    handle: str,
    requested_offset: LogOffset | Literal["now"] | object,
    response_offset: LogOffset | None,
    no_change: bool,
) -> str:
    """The quoted ETag; ``response_offset`` is None for 409s, which carry no offset.

    A response without changes (long-poll timeout, ``offset=now``) gets a unique suffix:
    revalidating it must fail, or a CDN would keep answering live requests from cache
    instead of holding and collapsing them.
    """
    tag = f"{handle}:{requested_offset}:{'' if response_offset is None else response_offset}"
    if no_change:
        tag = f"{tag}:{next(_no_change_suffixes)}"
    return f'"{tag}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` value (several headers joined with commas) names ``etag``.

    Comparison is weak, as RFC 9110 prescribes for If-None-Match, so ``W/"x"`` matches ``"x"``.
    """
    if not if_none_match:
        return False
    wanted = etag.strip('"')
    return any(
        tag.strip().removeprefix("W/").strip('"') == wanted for tag in if_none_match.split(",")
    )


def options(request: Request, *, allow_delete: bool) -> Response:
    """The CORS preflight answer of a shape route."""
    headers = common({"access-control-max-age": "86400", "connection": "keep-alive"}, request)
    if not allow_delete:
        headers["access-control-allow-methods"] = READ_METHODS
    del headers["cache-control"]
    requested = request.headers.get("access-control-request-headers")
    if requested:
        allowed = [
            h.strip() for h in requested.split(",") if h.strip().lower() in PREFLIGHT_HEADERS
        ]
        if allowed:
            headers["access-control-allow-headers"] = ",".join(allowed)
    return Response(b"", status_code=204, headers=headers)


def error_response(request: Request, error: ShapeAPIError) -> Response:
    """``error`` as Electric renders it."""
    if isinstance(error, MustRefetch):
        headers = cache_headers(
            "GET",
            409,
            offset_is_before_all=False,
            live=error.live,
            sse=error.sse,
            has_replacement_handle=error.handle is not None,
        )
        if error.handle is not None:
            headers["electric-handle"] = error.handle
            if error.offset is not None:
                headers["etag"] = etag(error.handle, error.offset, None, False)
        return Response(
            MUST_REFETCH_BODY, status_code=409, media_type=JSON, headers=common(headers, request)
        )
    if error.bare:
        return Response(_body(error.body), status_code=error.status)
    headers = cache_headers(
        request.method,
        error.status,
        offset_is_before_all=False,
        live=False,
        sse=False,
        has_replacement_handle=False,
    )
    headers.update(error.headers)
    return Response(
        _body(error.body),
        status_code=error.status,
        media_type=JSON,
        headers=common(headers, request),
    )


def _body(body: Mapping[str, object] | bytes) -> bytes:
    return body if isinstance(body, bytes) else msgspec.json.encode(body)


INTERNAL_ERROR = ShapeAPIError(500, {"error": "Internal server error"})
