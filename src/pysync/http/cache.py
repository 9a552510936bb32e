"""HTTP caching of shape responses: cache-control per response kind, ETags, If-None-Match.

Mirrors Electric's ``put_cache_headers`` and ``etag``. A given handle's log between two
offsets never changes, which is what makes caching shape responses in CDNs safe.
"""

from __future__ import annotations

import itertools
import time
from typing import Literal

from pysync.shapes.offset import LogOffset

# Seeded with wall-clock time so a restarted server does not reissue earlier suffixes.
_no_change_suffixes = itertools.count(time.time_ns())


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
    requested_offset: LogOffset | Literal["now"],
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
