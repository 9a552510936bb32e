from __future__ import annotations

import bisect

import pytest

from pysync.log.offset import (
    BEFORE_ALL,
    LAST_BEFORE_REAL,
    OP_INF,
    LogOffset,
    OffsetError,
    parse_offset_param,
)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("-1", LogOffset(-1, 0)),
        ("-1_0", LogOffset(-1, 0)),
        ("0_0", LogOffset(0, 0)),
        ("11_13", LogOffset(11, 13)),
        ("0_02", LogOffset(0, 2)),
        ("007_1", LogOffset(7, 1)),
        ("0_inf", LogOffset(0, OP_INF)),
        ("123_inf", LogOffset(123, OP_INF)),
        ("18446744073709551615_18446744073709551615", LogOffset(2**64 - 1, 2**64 - 1)),
        # Signs are allowed, as by Elixir's Integer.parse in Electric.
        ("+1_+2", LogOffset(1, 2)),
        ("-0_5", LogOffset(0, 5)),
    ],
)
def test_parse(text: str, offset: LogOffset) -> None:
    assert LogOffset.parse(text) == offset


@pytest.mark.parametrize(
    "text",
    [
        "invalid", "10", "1_2_3", "0_-1", "10_32.1", "1_2 ", " 1_2", "", "_", "1_", "_1",
        "-2_0", "-1_1", "-1_inf", "-5_inf", "1_Inf", "1_infinity", "now", "0x1_0", "1 _2",
        "1__2", "١_0", "1e3_0", "18446744073709551616_0", "0_18446744073709551616",
    ],
)  # fmt: skip
def test_parse_rejects(text: str) -> None:
    with pytest.raises(OffsetError, match="^has invalid format$"):
        LogOffset.parse(text)
    with pytest.raises(ValueError):
        LogOffset.parse(text)


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (BEFORE_ALL, "-1"),
        (LogOffset.parse("-1_0"), "-1"),
        (LogOffset(0, 0), "0_0"),
        (LAST_BEFORE_REAL, "0_inf"),
        (LogOffset(123, 4), "123_4"),
        (LogOffset.parse("0_02"), "0_2"),
        (LogOffset(99, OP_INF), "99_inf"),
    ],
)
def test_str_is_the_wire_form(offset: LogOffset, text: str) -> None:
    assert str(offset) == text
    assert f"{offset}" == text
    assert LogOffset.parse(text) == offset


def test_ordering() -> None:
    ordered = [
        BEFORE_ALL,
        LogOffset(0, 0),
        LogOffset(0, 1),
        LogOffset(0, 1000),
        LAST_BEFORE_REAL,
        LogOffset(1, 0),
        LogOffset(1, 2),
        LogOffset(1, 2**64 - 1),
        LogOffset(1, OP_INF),
        LogOffset(2, 0),
    ]
    assert sorted(reversed(ordered)) == ordered
    for lower, higher in zip(ordered, ordered[1:], strict=False):
        assert lower < higher
        assert higher > lower
        assert lower != higher
    assert max(ordered) == LogOffset(2, 0)


def test_binary_search_finds_entries_strictly_after_an_offset() -> None:
    log = [LogOffset(10, 0), LogOffset(10, 2), LogOffset(12, 0)]
    assert log[bisect.bisect_right(log, LogOffset(10, 0)) :] == log[1:]
    assert log[bisect.bisect_right(log, LogOffset(10, 1)) :] == log[1:]
    assert log[bisect.bisect_right(log, LogOffset(10, OP_INF)) :] == log[2:]
    assert log[bisect.bisect_right(log, LAST_BEFORE_REAL) :] == log


def test_value_semantics() -> None:
    assert LogOffset.parse("5_1") == LogOffset(5, 1)
    assert hash(LogOffset.parse("5_1")) == hash(LogOffset(5, 1))
    assert len({LogOffset.parse("-1"), LogOffset.parse("-1_0"), BEFORE_ALL}) == 1
    with pytest.raises(AttributeError):
        LogOffset(5, 1).tx = 6  # type: ignore[misc]


def test_snapshot_offsets() -> None:
    assert LogOffset.snapshot_chunk(3) == LogOffset.parse("0_3")
    assert LogOffset.snapshot_chunk(0).is_snapshot
    assert LAST_BEFORE_REAL.is_snapshot
    assert not BEFORE_ALL.is_snapshot
    assert not LogOffset(5, 0).is_snapshot


def test_parse_offset_param() -> None:
    assert parse_offset_param("now") == "now"
    assert parse_offset_param("-1") == BEFORE_ALL
    assert parse_offset_param("5_2") == LogOffset(5, 2)
    with pytest.raises(OffsetError):
        parse_offset_param("NOW")


@pytest.mark.parametrize(
    "text",
    [
        "1" * 5000 + "_0",
        "0_" + "1" * 5000,
        "0" * 5000 + "_0",
        "1" * 5000,
        "0_" + "9" * 4301,
    ],
)
def test_overlong_offsets_have_invalid_format(text: str) -> None:
    # int() of 5,000 digits raises (Python's digit limit): a length bound answers first
    with pytest.raises(OffsetError, match="has invalid format"):
        LogOffset.parse(text)
    with pytest.raises(OffsetError, match="has invalid format"):
        parse_offset_param(text)


def test_long_zero_padded_offset_within_the_bound() -> None:
    assert LogOffset.parse("0" * 60 + "7_" + "0" * 60 + "1") == LogOffset(7, 1)


def test_overlong_offset_request_is_a_400() -> None:
    from pysync.http.params import RequestError, parse_request

    with pytest.raises(RequestError) as info:
        parse_request({"table": "items", "offset": "1" * 5000 + "_0", "handle": "h"})
    assert info.value.errors == {"offset": ["has invalid format"]}


def test_overlong_handle_is_unknown_not_blank() -> None:
    from pysync.http.params import MAX_HANDLE_LENGTH, parse_request

    handle = "1" * 100_000
    parsed = parse_request({"table": "items", "offset": "0_0", "handle": handle})
    # still a handle (the caller answers 409 for an unknown one), but bounded
    assert parsed.handle is not None and len(parsed.handle) == MAX_HANDLE_LENGTH
    assert parsed.handle != handle
    short = parse_request({"table": "items", "offset": "0_0", "handle": "123-456"})
    assert short.handle == "123-456"
