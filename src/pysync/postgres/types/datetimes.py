"""Postgres dates and times in text form, and the proleptic Gregorian calendar under them.

* date: days since 2000-01-01 (``int``), ``±inf`` (``float``) for +-infinity.
* timestamp/timestamptz: microseconds since 2000-01-01 00:00 (UTC for timestamptz, the
  session time zone pysync uses), ``±inf`` for +-infinity.
* time: microseconds since midnight.
"""

from __future__ import annotations

import datetime
import re
from math import inf as INF

USECS_PER_SEC = 1_000_000
USECS_PER_MINUTE = 60 * USECS_PER_SEC
USECS_PER_HOUR = 60 * USECS_PER_MINUTE
USECS_PER_DAY = 24 * USECS_PER_HOUR


# ---------------------------------------------------------------- calendar


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 2000-01-01 of a proleptic Gregorian date (astronomical year numbering)."""
    # Howard Hinnant's algorithm; valid for any year.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468 - 10957


def civil_from_days(days: int) -> tuple[int, int, int]:
    z = days + 10957 + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


# Postgres' limits: dates from 4714-11-24 BC, timestamps up to 294276 AD.
_MIN_DATE = days_from_civil(-4713, 11, 24)
_MAX_DATE = days_from_civil(5874898, 1, 1) - 1
_MIN_TS = _MIN_DATE * USECS_PER_DAY
_MAX_TS = days_from_civil(294277, 1, 1) * USECS_PER_DAY - 1


# ---------------------------------------------------------------- parsing

_DATE_RE = re.compile(r"\s*(\d{4,})-(\d{1,2})-(\d{1,2})")
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")
_TZ_RE = re.compile(r"\s*(?:(Z|UTC|GMT)|([+-])(\d{1,2})(?::?(\d{2}))?(?::(\d{2}))?)", re.IGNORECASE)
_BC_RE = re.compile(r"\s*BC\s*\Z", re.IGNORECASE)


def _date_part(text: str) -> tuple[int, int]:
    """(days, end offset) of a leading ISO date; ' BC' is handled by the callers."""
    m = _DATE_RE.match(text)
    if m is None:
        raise ValueError(text)
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= days_in_month(y, mo)) or y == 0:
        raise ValueError(text)
    return days_from_civil(y, mo, d), m.end()


def _bc_adjust(days: int, text: str) -> int:
    """Redo the day count for a BC year (year n BC is astronomical year 1 - n)."""
    y, mo, d = civil_from_days(days)
    if mo == 2 and d == 29 and days_in_month(1 - y, 2) != 29:
        raise ValueError(text)
    return days_from_civil(1 - y, mo, d)


def _time_part(text: str, pos: int) -> tuple[int, int]:
    m = _TIME_RE.match(text, pos)
    if m is None:
        raise ValueError(text)
    h, mi = int(m.group(1)), int(m.group(2))
    s = int(m.group(3) or 0)
    frac = m.group(4) or ""
    usec = int(frac.ljust(6, "0")) if frac else 0
    if mi > 59 or s > 60 or h > 24 or (h == 24 and (mi or s or usec)):
        raise ValueError(text)
    return ((h * 60 + mi) * 60 + s) * USECS_PER_SEC + usec, m.end()


def _special_datetime(text: str) -> float | None:
    s = text.strip().lower()
    if s in ("infinity", "+infinity"):
        return INF
    if s == "-infinity":
        return -INF
    return None


def parse_date(text: str) -> int | float:
    special = _special_datetime(text)
    if special is not None:
        return special
    days, end = _date_part(text)
    rest = text[end:]
    if rest.strip():
        if _BC_RE.match(rest) is None:
            raise ValueError(text)
        days = _bc_adjust(days, text)
    if not _MIN_DATE <= days <= _MAX_DATE:
        raise ValueError(f'date out of range: "{text}"')
    return days


def parse_time(text: str) -> int:
    value, end = _time_part(text, len(text) - len(text.lstrip()))
    if text[end:].strip():
        raise ValueError(text)
    return value


def _parse_timestamp(text: str, with_tz: bool) -> int | float:
    special = _special_datetime(text)
    if special is not None:
        return special
    days, pos = _date_part(text)
    usec = 0
    offset = 0
    if pos < len(text) and text[pos] in " T" and _TIME_RE.match(text, pos + 1):
        usec, pos = _time_part(text, pos + 1)
    m = _TZ_RE.match(text, pos)
    if m is not None and m.end() > pos and not _BC_RE.match(text, pos):
        if m.group(2):
            hours = int(m.group(3))
            minutes = int(m.group(4) or 0)
            seconds = int(m.group(5) or 0)
            if hours > 15 or minutes > 59 or seconds > 59:
                raise ValueError(text)
            offset = ((hours * 60 + minutes) * 60 + seconds) * USECS_PER_SEC
            if m.group(2) == "-":
                offset = -offset
        pos = m.end()
    rest = text[pos:]
    if rest.strip():
        if _BC_RE.match(rest) is None:
            raise ValueError(text)
        days = _bc_adjust(days, text)
    value = days * USECS_PER_DAY + usec
    if with_tz:
        value -= offset  # to UTC; a timestamp without time zone ignores an offset, as Postgres
    if not _MIN_TS <= value <= _MAX_TS:
        raise ValueError(f'timestamp out of range: "{text}"')
    return value


def parse_timestamp(text: str) -> int | float:
    return _parse_timestamp(text, False)


def parse_timestamptz(text: str) -> int | float:
    return _parse_timestamp(text, True)


# ---------------------------------------------------------------- output (text form)


def _format_date_parts(days: int) -> str:
    y, m, d = civil_from_days(days)
    if y <= 0:
        return f"{1 - y:04d}-{m:02d}-{d:02d} BC"
    return f"{y:04d}-{m:02d}-{d:02d}"


def format_date(days: int | float) -> str:
    if isinstance(days, float):
        return "infinity" if days > 0 else "-infinity"
    return _format_date_parts(days)


def format_time(usec: int) -> str:
    sec, frac = divmod(usec, USECS_PER_SEC)
    h, rem = divmod(sec, 3600)
    mi, s = divmod(rem, 60)
    out = f"{h:02d}:{mi:02d}:{s:02d}"
    if frac:
        out += "." + f"{frac:06d}".rstrip("0")
    return out


def _format_ts(value: int | float, suffix: str) -> str:
    if isinstance(value, float):
        return "infinity" if value > 0 else "-infinity"
    days, usec = divmod(value, USECS_PER_DAY)
    date = _format_date_parts(days)
    bc = date.endswith(" BC")
    out = f"{date[:-3] if bc else date} {format_time(usec)}{suffix}"
    return out + " BC" if bc else out


def format_timestamp(value: int | float) -> str:
    return _format_ts(value, "")


def format_timestamptz(value: int | float) -> str:
    return _format_ts(value, "+00")


# ---------------------------------------------------------------- time zones (timezone())

_EPOCH = datetime.datetime(2000, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=datetime.UTC)
_CYCLE = 146097 * USECS_PER_DAY  # 400 Gregorian years: the calendar repeats
_LOW = (datetime.datetime(1, 1, 2) - _EPOCH) // datetime.timedelta(microseconds=1)
_HIGH = (datetime.datetime(9999, 12, 30) - _EPOCH) // datetime.timedelta(microseconds=1)
_ONE_USEC = datetime.timedelta(microseconds=1)


def _in_range(usec: int) -> int:
    """usec moved by whole 400-year cycles into Python's years 1-9999: beyond its last
    transition a zone follows a yearly rule, before its first one local mean time, so the
    offset is the same."""
    if usec > _HIGH:
        return usec - -(-(usec - _HIGH) // _CYCLE) * _CYCLE
    if usec < _LOW:
        return usec + -(-(_LOW - usec) // _CYCLE) * _CYCLE
    return usec


def _usec(delta: datetime.timedelta | None) -> int:
    return 0 if delta is None else delta // _ONE_USEC


def local_to_utc(zone: datetime.tzinfo, local: int) -> int:
    """The instant of a wall-clock time in ``zone``. A time skipped by a transition takes
    the offset before it, a time repeated by one the offset after it (as Postgres'
    DetermineTimeZoneOffset)."""
    naive = _EPOCH + datetime.timedelta(microseconds=_in_range(local))
    before = _usec(naive.replace(tzinfo=zone, fold=0).utcoffset())
    after = _usec(naive.replace(tzinfo=zone, fold=1).utcoffset())
    return local - (before if after > before else after)


def utc_to_local(zone: datetime.tzinfo, instant: int) -> int:
    """The wall-clock time in ``zone`` at an instant."""
    aware = _EPOCH_UTC + datetime.timedelta(microseconds=_in_range(instant))
    return instant + _usec(aware.astimezone(zone).utcoffset())
