"""Date, time and timestamp arithmetic (with intervals), timezone(), and the conversions
between them: infinities kept, ``out of range`` where Postgres raises it."""

from __future__ import annotations

import functools
import math
import zoneinfo

from pysync.postgres.types import datetimes

from .._ir import WhereRuntimeError
from . import Fn1, Fn2
from .intervals import (
    INTERVAL_INF,
    INTERVAL_NINF,
    finite_intervals,
    infinite_interval,
    interval_checked,
    interval_minus,
    interval_negate,
    interval_plus,
)


def _check_ts(value: int) -> int:
    if not datetimes._MIN_TS <= value <= datetimes._MAX_TS:
        raise WhereRuntimeError("timestamp out of range")
    return value


def _check_date(value: int) -> int:
    if not datetimes._MIN_DATE <= value <= datetimes._MAX_DATE:
        raise WhereRuntimeError("date out of range")
    return value


def ts_plus_interval(ts: int | float, iv: tuple[int, int, int]) -> int | float:
    """timestamp_pl_interval: months (clamping the day), then days, then microseconds.
    An infinite interval gives its infinity, but not added to the other one."""
    if infinite_interval(iv):
        infinity = math.inf if iv == INTERVAL_INF else -math.inf
        if isinstance(ts, float) and ts != infinity:
            raise WhereRuntimeError("timestamp out of range")
        return infinity
    if isinstance(ts, float):
        return ts
    months, days, usec = iv
    if months:
        day_count, tod = divmod(ts, datetimes.USECS_PER_DAY)
        y, m, d = datetimes.civil_from_days(day_count)
        # Postgres counts BC years without a year 0 here but the result is the same.
        total = y * 12 + (m - 1) + months
        y, m = divmod(total, 12)
        m += 1
        d = min(d, datetimes.days_in_month(y, m))
        ts = datetimes.days_from_civil(y, m, d) * datetimes.USECS_PER_DAY + tod
    if days:
        ts += days * datetimes.USECS_PER_DAY
    return _check_ts(ts + usec)


def ts_minus_interval(ts: int | float, iv: tuple[int, int, int]) -> int | float:
    return ts_plus_interval(ts, interval_negate(iv))


_ZONE_NAMES: dict[str, str] = {}


@functools.lru_cache(maxsize=256)
def time_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """A zone of the time zone database by Postgres' case-insensitive name; None for
    abbreviations ('CET' is a fixed offset to Postgres, a zone with DST to zoneinfo) and
    anything else Postgres would read differently."""
    if name.upper() in ("UTC", "GMT"):
        return zoneinfo.ZoneInfo("UTC")
    if "/" not in name:
        return None
    if not _ZONE_NAMES:
        _ZONE_NAMES.update({z.lower(): z for z in zoneinfo.available_timezones()})
    key = _ZONE_NAMES.get(name.lower())
    return None if key is None else zoneinfo.ZoneInfo(key)


def timezone_function(to_utc: bool) -> Fn2:
    """timezone(zone, timestamp) -> timestamptz (to_utc) or timezone(zone, timestamptz)
    -> timestamp; infinities stay (whatever the zone, as in Postgres). The checker lets
    only zones ``time_zone`` knows through; another one is an error here."""
    convert = datetimes.local_to_utc if to_utc else datetimes.utc_to_local

    def timezone(name: str, value: int | float) -> int | float:
        if isinstance(value, float):
            return value
        zone = time_zone(name)
        if zone is None:
            raise WhereRuntimeError(f'time zone "{name}" not recognized')
        return _check_ts(convert(zone, value))

    return timezone


def ts_minus_ts(a: int | float, b: int | float) -> tuple[int, int, int]:
    if isinstance(a, float) or isinstance(b, float):
        # Postgres 17+: an infinite interval, unless both are the same infinity
        if a == b:
            raise WhereRuntimeError("interval out of range")
        return INTERVAL_INF if (a == math.inf or b == -math.inf) else INTERVAL_NINF
    diff = a - b
    if not -(2**63) <= diff < 2**63:  # Postgres subtracts in 64 bits
        raise WhereRuntimeError("interval out of range")
    # interval_justify_hours: whole days move to the day field, same sign as the remainder
    days = abs(diff) // datetimes.USECS_PER_DAY
    if diff < 0:
        days = -days
    return interval_checked((0, days, diff - days * datetimes.USECS_PER_DAY))


def date_plus_int(d: int | float, n: int) -> int | float:
    if isinstance(d, float):
        return d
    return _check_date(d + n)


def date_minus_int(d: int | float, n: int) -> int | float:
    if isinstance(d, float):
        return d
    return _check_date(d - n)


def date_minus_date(a: int | float, b: int | float) -> int:
    if isinstance(a, float) or isinstance(b, float):
        raise WhereRuntimeError("cannot subtract infinite dates")
    return a - b


def date_to_ts(d: int | float) -> int | float:
    if isinstance(d, float):
        return d
    return _check_ts(d * datetimes.USECS_PER_DAY)


def date_usecs(d: int | float) -> int | float:
    """A date's midnight (UTC) in microseconds, not limited to the timestamp range."""
    if isinstance(d, float):
        return d
    return d * datetimes.USECS_PER_DAY


def ts_to_date(ts: int | float) -> int | float:
    if isinstance(ts, float):
        return ts
    return ts // datetimes.USECS_PER_DAY


def ts_to_time(ts: int | float) -> int | None:
    if isinstance(ts, float):
        return None  # Postgres returns NULL for an infinite timestamp
    return ts % datetimes.USECS_PER_DAY


def date_plus_time(d: int | float, t: int) -> int | float:
    if isinstance(d, float):
        return d
    return _check_ts(d * datetimes.USECS_PER_DAY + t)


def time_plus_interval(t: int, iv: tuple[int, int, int]) -> int:
    finite_intervals(iv)
    return (t + iv[2]) % datetimes.USECS_PER_DAY


def time_minus_interval(t: int, iv: tuple[int, int, int]) -> int:
    finite_intervals(iv)
    return (t - iv[2]) % datetimes.USECS_PER_DAY


def time_minus_time(a: int, b: int) -> tuple[int, int, int]:
    return (0, 0, a - b)


def _swap(f: Fn2) -> Fn2:
    return lambda a, b: f(b, a)


# (op, left type, right type) -> (result type, implementation)
DATETIME_OPS: dict[tuple[str, str, str], tuple[str, Fn2]] = {
    ("+", "date", "int4"): ("date", date_plus_int),
    ("+", "int4", "date"): ("date", _swap(date_plus_int)),
    ("-", "date", "int4"): ("date", date_minus_int),
    ("-", "date", "date"): ("int4", date_minus_date),
    ("+", "date", "time"): ("timestamp", date_plus_time),
    ("+", "time", "date"): ("timestamp", _swap(date_plus_time)),
    ("+", "date", "interval"): ("timestamp", lambda d, iv: ts_plus_interval(date_to_ts(d), iv)),
    ("+", "interval", "date"): ("timestamp", lambda iv, d: ts_plus_interval(date_to_ts(d), iv)),
    ("-", "date", "interval"): ("timestamp", lambda d, iv: ts_minus_interval(date_to_ts(d), iv)),
    ("+", "timestamp", "interval"): ("timestamp", ts_plus_interval),
    ("+", "interval", "timestamp"): ("timestamp", _swap(ts_plus_interval)),
    ("-", "timestamp", "interval"): ("timestamp", ts_minus_interval),
    ("+", "timestamptz", "interval"): ("timestamptz", ts_plus_interval),
    ("+", "interval", "timestamptz"): ("timestamptz", _swap(ts_plus_interval)),
    ("-", "timestamptz", "interval"): ("timestamptz", ts_minus_interval),
    ("-", "timestamp", "timestamp"): ("interval", ts_minus_ts),
    ("-", "timestamptz", "timestamptz"): ("interval", ts_minus_ts),
    ("+", "time", "interval"): ("time", time_plus_interval),
    ("+", "interval", "time"): ("time", _swap(time_plus_interval)),
    ("-", "time", "interval"): ("time", time_minus_interval),
    ("-", "time", "time"): ("interval", time_minus_time),
    ("+", "interval", "interval"): ("interval", interval_plus),
    ("-", "interval", "interval"): ("interval", interval_minus),
}


DATETIME_CASTS: dict[tuple[str, str], Fn1] = {
    ("date", "timestamp"): date_to_ts,
    ("date", "timestamptz"): date_to_ts,
    ("timestamp", "date"): ts_to_date,
    ("timestamptz", "date"): ts_to_date,
    ("timestamp", "timestamptz"): lambda v: v,  # the session time zone is UTC
    ("timestamptz", "timestamp"): lambda v: v,
    ("timestamp", "time"): ts_to_time,
    ("timestamptz", "time"): ts_to_time,
    ("time", "interval"): lambda t: (0, 0, t),
}
