"""Interval arithmetic and the justify_* functions: infinite intervals (Postgres 17), the
range of each field, and ``interval out of range`` where Postgres raises it."""

from __future__ import annotations

from pysync.postgres.types import datetimes

from .._ir import WhereRuntimeError

_MAX_I32 = 2**31 - 1


def interval_checked(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """Range check; arithmetic on infinite intervals is not implemented (raises)."""
    m, d, u = iv
    if not (-(2**31) <= m <= _MAX_I32 and -(2**31) <= d <= _MAX_I32 and -(2**63) <= u < 2**63):
        raise WhereRuntimeError("interval out of range")
    return iv


INTERVAL_INF = (2**31 - 1, 2**31 - 1, 2**63 - 1)
INTERVAL_NINF = (-(2**31), -(2**31), -(2**63))


def infinite_interval(iv: tuple[int, int, int]) -> bool:
    return iv in (INTERVAL_INF, INTERVAL_NINF)


def _trunc_div(a: int, b: int) -> tuple[int, int]:
    """C's division: the quotient truncated toward zero, the remainder with a's sign."""
    q = abs(a) // b
    if a < 0:
        q = -q
    return q, a - q * b


def _add_months(months: int, more: int) -> int:
    total = months + more
    if not -(2**31) <= total <= _MAX_I32:
        raise WhereRuntimeError("interval out of range")
    return total


def justify_hours(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """Whole 24-hour spans of the time become days, the rest keeps the days' sign."""
    if infinite_interval(iv):
        return iv
    months, days, usec = iv
    whole, usec = _trunc_div(usec, datetimes.USECS_PER_DAY)
    days += whole
    if days > 0 and usec < 0:
        usec += datetimes.USECS_PER_DAY
        days -= 1
    elif days < 0 and usec > 0:
        usec -= datetimes.USECS_PER_DAY
        days += 1
    return interval_checked((months, days, usec))


def justify_days(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """Whole 30-day spans become months, the rest keeps the months' sign."""
    if infinite_interval(iv):
        return iv
    months, days, usec = iv
    whole, days = _trunc_div(days, 30)
    months = _add_months(months, whole)
    if months > 0 and days < 0:
        days += 30
        months -= 1
    elif months < 0 and days > 0:
        days -= 30
        months += 1
    return interval_checked((months, days, usec))


def justify_interval(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """justify_days(justify_hours(iv)), with signs made consistent as Postgres does."""
    if infinite_interval(iv):
        return iv
    months, days, usec = iv
    if (days > 0 and usec > 0) or (days < 0 and usec < 0):
        whole, days = _trunc_div(days, 30)
        months = _add_months(months, whole)
    whole, usec = _trunc_div(usec, datetimes.USECS_PER_DAY)
    days += whole
    whole, days = _trunc_div(days, 30)
    months = _add_months(months, whole)
    if months > 0 and (days < 0 or (days == 0 and usec < 0)):
        days += 30
        months -= 1
    elif months < 0 and (days > 0 or (days == 0 and usec > 0)):
        days -= 30
        months += 1
    if days > 0 and usec < 0:
        usec += datetimes.USECS_PER_DAY
        days -= 1
    elif days < 0 and usec > 0:
        usec -= datetimes.USECS_PER_DAY
        days += 1
    return interval_checked((months, days, usec))


JUSTIFY = {
    "justify_hours": justify_hours,
    "justify_days": justify_days,
    "justify_interval": justify_interval,
}


def interval_negate(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """interval_um: the other infinity of an infinite interval."""
    if iv == INTERVAL_INF:
        return INTERVAL_NINF
    if iv == INTERVAL_NINF:
        return INTERVAL_INF
    return _interval_result((-iv[0], -iv[1], -iv[2]))


def _interval_result(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """A finite result: in range, and not the encoding of an infinity."""
    if infinite_interval(iv):
        raise WhereRuntimeError("interval out of range")
    return interval_checked(iv)


def interval_plus(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    if infinite_interval(a) or infinite_interval(b):
        if infinite_interval(a) and infinite_interval(b) and a != b:
            raise WhereRuntimeError("interval out of range")
        return a if infinite_interval(a) else b
    return _interval_result((a[0] + b[0], a[1] + b[1], a[2] + b[2]))


def finite_intervals(*ivs: tuple[int, int, int]) -> None:
    if any(infinite_interval(iv) for iv in ivs):
        raise WhereRuntimeError("arithmetic on infinite intervals is not supported")


def interval_minus(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    if infinite_interval(a) or infinite_interval(b):
        if a == b:
            raise WhereRuntimeError("interval out of range")
        return a if infinite_interval(a) else interval_negate(b)
    return _interval_result((a[0] - b[0], a[1] - b[1], a[2] - b[2]))
