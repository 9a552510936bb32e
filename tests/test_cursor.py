from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pysync.http.cursor import next_cursor

EPOCH = datetime(2024, 10, 9, tzinfo=UTC).timestamp()


def at(seconds_since_epoch: float) -> float:
    return EPOCH + seconds_since_epoch


@pytest.mark.parametrize(
    ("elapsed", "cursor"),
    # Elapsed time is truncated to whole seconds first, as Electric's DateTime.diff does.
    [(1, "20"), (19.9, "20"), (20, "20"), (20.5, "20"), (21, "40"), (41, "60")],
)
def test_end_of_the_current_interval(elapsed: float, cursor: str) -> None:
    assert next_cursor(20_000, None, now=at(elapsed)) == cursor


def test_at_the_epoch_the_interval_is_zero_so_jitter_applies() -> None:
    assert 1 <= int(next_cursor(20_000, None, now=at(0.5))) <= 3600


def test_interval_is_the_long_poll_timeout_in_whole_seconds() -> None:
    assert next_cursor(20_999, None, now=at(21)) == "40"
    assert next_cursor(5_000, None, now=at(21)) == "25"


def test_sub_second_timeout_gives_zero() -> None:
    assert next_cursor(999, "123", now=at(1000)) == "0"
    assert next_cursor(0, None) == "0"


def test_real_clock() -> None:
    cursor = int(next_cursor(20_000, None))
    now = datetime.now(UTC).timestamp() - EPOCH
    assert cursor % 20 == 0
    # Whole elapsed seconds are rounded up to the interval, as Electric does: on a
    # boundary second the cursor is that second, up to 1 s before ``now``.
    assert now - 1 < cursor < now + 21


def test_older_previous_cursor_is_ignored() -> None:
    assert next_cursor(20_000, "1000", now=at(1990)) == "2000"


@pytest.mark.parametrize("previous", ["2000", "2500", "+2000", "0002000"])
def test_never_repeats_a_cursor_the_client_holds(previous: str) -> None:
    cursors = {int(next_cursor(20_000, previous, now=at(1990))) for _ in range(200)}
    prev = int(previous)
    assert all(prev + 1 <= c <= prev + 3600 for c in cursors)
    assert len(cursors) > 1  # jittered, so clients holding the same cursor spread out


@pytest.mark.parametrize("previous", ["", "abc", "12.5", " 2000", "2000 ", "1_000", "٢٠٠٠"])
def test_non_integer_previous_counts_as_zero(previous: str) -> None:
    assert next_cursor(20_000, previous, now=at(1990)) == "2000"


def test_negative_previous() -> None:
    assert next_cursor(20_000, "-5", now=at(1990)) == "2000"


@pytest.mark.parametrize("previous", ["9" * 5000, "1" * 33, "-" + "9" * 5000])
def test_overlong_previous_counts_as_zero(previous: str) -> None:
    # as a non-integer does; int() of 5,000 digits would raise (Python's digit limit)
    assert next_cursor(20_000, previous, now=at(1)) == "20"


def test_longest_previous_read_as_a_number() -> None:
    previous = "9" * 32
    assert int(next_cursor(20_000, previous, now=at(1))) > int(previous)
