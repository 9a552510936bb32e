from __future__ import annotations

import pytest

from pysync.http.responses import cache_headers, etag, etag_matches
from pysync.log.offset import BEFORE_ALL, LAST_BEFORE_REAL, LogOffset


def headers(
    method: str = "GET",
    status: int = 200,
    *,
    before_all: bool = False,
    live: bool = False,
    sse: bool = False,
    replacement: bool = True,
) -> dict[str, str]:
    return cache_headers(
        method,
        status,
        offset_is_before_all=before_all,
        live=live,
        sse=sse,
        has_replacement_handle=replacement,
    )


INITIAL = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
@pytest.mark.parametrize("status", [200, 202, 400, 409, 500])
def test_non_get_methods_are_not_cached(method: str, status: int) -> None:
    assert headers(method, status, before_all=True, live=True) == {"cache-control": "no-cache"}


def test_409_is_a_briefly_cached_redirect() -> None:
    assert headers(status=409) == {"cache-control": "public, max-age=60, must-revalidate"}
    assert headers(status=409, replacement=False) == {
        "cache-control": "public, max-age=1, must-revalidate"
    }
    assert headers(status=409, before_all=True, live=True)["cache-control"].endswith(
        "must-revalidate"
    )


@pytest.mark.parametrize("status", [400, 404, 413, 500, 503])
def test_errors_are_never_stored(status: int) -> None:
    expected = {"cache-control": "no-store", "surrogate-control": "no-store"}
    assert headers(status=status) == expected
    assert headers("OPTIONS", status, before_all=True) == expected


@pytest.mark.parametrize("status", [200, 304])
def test_initial_offset(status: int) -> None:
    assert headers(status=status, before_all=True) == {"cache-control": INITIAL}


def test_live() -> None:
    assert headers(live=True) == {"cache-control": "public, max-age=5, stale-while-revalidate=5"}
    assert headers(status=304, live=True) == {
        "cache-control": "public, max-age=5, stale-while-revalidate=5"
    }


def test_live_sse() -> None:
    assert headers(live=True, sse=True) == {"cache-control": "public, max-age=59"}
    assert cache_headers(
        "GET", 200, offset_is_before_all=False, live=True, sse=True,
        has_replacement_handle=True, sse_timeout_s=1,
    ) == {"cache-control": "public, max-age=1"}  # fmt: skip


def test_non_live() -> None:
    expected = {"cache-control": "public, max-age=60, stale-while-revalidate=300"}
    assert headers() == expected
    assert headers("OPTIONS") == expected
    assert headers(sse=True) == expected  # sse only counts with live
    assert cache_headers(
        "GET", 200, offset_is_before_all=False, live=False, sse=False,
        has_replacement_handle=True, max_age=7, stale_age=11,
    ) == {"cache-control": "public, max-age=7, stale-while-revalidate=11"}  # fmt: skip


def test_etag() -> None:
    assert etag("H", BEFORE_ALL, LogOffset(0, 0), no_change=False) == '"H:-1:0_0"'
    assert etag("H", LogOffset(50, 0), LogOffset(50, 2), no_change=False) == '"H:50_0:50_2"'
    assert etag("H", LogOffset(0, 3), LAST_BEFORE_REAL, no_change=False) == '"H:0_3:0_inf"'
    assert etag("H", LogOffset(50, 0), None, no_change=False) == '"H:50_0:"'  # 409


def test_etag_without_changes_is_never_repeated() -> None:
    tags = [etag("H", LogOffset(50, 0), LogOffset(50, 0), no_change=True) for _ in range(1000)]
    assert len(set(tags)) == len(tags)
    for tag in tags:
        assert tag.startswith('"H:50_0:50_0:') and tag.endswith('"')
    suffixes = [int(tag.strip('"').rsplit(":", 1)[1]) for tag in tags]
    assert suffixes == sorted(suffixes)
    assert etag("H", "now", LogOffset(7, 0), no_change=True).startswith('"H:now:7_0:')


@pytest.mark.parametrize(
    "header",
    [
        '"H:-1:0_0"',
        "H:-1:0_0",
        'W/"H:-1:0_0"',
        '"other", "H:-1:0_0"',
        '"other","H:-1:0_0" , "more"',
        ' "H:-1:0_0" ',
    ],
)
def test_etag_matches(header: str) -> None:
    assert etag_matches(header, '"H:-1:0_0"')


@pytest.mark.parametrize(
    "header", [None, "", '"H:-1:0_1"', '"other"', '"H:-1:0_0:1"', "*", '"h:-1:0_0"']
)
def test_etag_does_not_match(header: str | None) -> None:
    assert not etag_matches(header, '"H:-1:0_0"')


def test_no_change_etag_is_not_revalidated_by_its_predecessor() -> None:
    first = etag("H", LogOffset(50, 0), LogOffset(50, 0), no_change=True)
    second = etag("H", LogOffset(50, 0), LogOffset(50, 0), no_change=True)
    assert etag_matches(first, first)
    assert not etag_matches(first, second)
