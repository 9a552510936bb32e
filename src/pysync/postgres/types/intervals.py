"""Postgres intervals in text form: ``(months, days, microseconds)``."""

from __future__ import annotations

import re
from decimal import Decimal

from pysync.postgres.types.datetimes import (
    USECS_PER_DAY,
    USECS_PER_HOUR,
    USECS_PER_MINUTE,
    USECS_PER_SEC,
)

_ISO_INTERVAL_RE = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)W)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d{1,6})?|-?\.\d{1,6})S)?)?\Z"
)
_UNITS: dict[str, tuple[str, int]] = {}
for _names, _field, _mult in [
    (("microsecond", "microseconds", "us", "usec", "usecs", "useconds"), "us", 1),
    (("millisecond", "milliseconds", "ms", "msec", "msecs", "mseconds"), "us", 1000),
    (("second", "seconds", "s", "sec", "secs"), "us", USECS_PER_SEC),
    (("minute", "minutes", "m", "min", "mins"), "us", USECS_PER_MINUTE),
    (("hour", "hours", "h", "hr", "hrs"), "us", USECS_PER_HOUR),
    (("day", "days", "d"), "d", 1),
    (("week", "weeks", "w"), "d", 7),
    (("month", "months", "mon", "mons"), "m", 1),
    (("year", "years", "y", "yr", "yrs"), "m", 12),
    (("decade", "decades"), "m", 120),
    (("century", "centuries"), "m", 1200),
    (("millennium", "millennia"), "m", 12000),
]:
    for _n in _names:
        _UNITS[_n] = (_field, _mult)

_VERBOSE_TOKEN_RE = re.compile(
    r"\s*(?:([+-]?\d+(?:\.\d+)?)(?![\d:.])\s*([a-zA-Z]*)|([+-]?)(\d+):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?|(ago)\b)"
)


def _check_interval(months: int, days: int, usec: int, text: str) -> tuple[int, int, int]:
    if not (-(2**31) <= months < 2**31 and -(2**31) <= days < 2**31 and -(2**63) <= usec < 2**63):
        raise ValueError(f'interval out of range: "{text}"')
    return months, days, usec


def parse_interval(text: str) -> tuple[int, int, int]:
    s = text.strip()
    if s.lower() in ("infinity", "+infinity"):
        return (2**31 - 1, 2**31 - 1, 2**63 - 1)
    if s.lower() == "-infinity":
        return (-(2**31), -(2**31), -(2**63))
    if s.startswith("P"):
        m = _ISO_INTERVAL_RE.match(s)
        if m is None or s == "P" or s.endswith("T"):
            raise ValueError(text)
        y, mo, w, d, h, mi, sec = m.groups()
        months = int(y or 0) * 12 + int(mo or 0)
        days = int(w or 0) * 7 + int(d or 0)
        usec = int(h or 0) * USECS_PER_HOUR + int(mi or 0) * USECS_PER_MINUTE
        if sec:
            usec += _seconds_to_usec(sec)
        return _check_interval(months, days, usec, text)
    return _parse_verbose_interval(s, text)


def _seconds_to_usec(sec: str) -> int:
    negative = sec.startswith("-")
    whole, _, frac = sec.lstrip("-").partition(".")
    value = int(whole or 0) * USECS_PER_SEC + int(frac.ljust(6, "0") or 0)
    return -value if negative else value


def _parse_verbose_interval(s: str, text: str) -> tuple[int, int, int]:
    """'[@] 1 year 2 mons -3 days 04:05:06.5 [ago]' -- integers except for seconds."""
    if s.startswith("@"):
        s = s[1:]
    months = days = usec = 0
    pos = 0
    seen = False
    ago = False
    while pos < len(s) and s[pos:].strip():
        m = _VERBOSE_TOKEN_RE.match(s, pos)
        if m is None or ago:
            raise ValueError(text)
        pos = m.end()
        seen = True
        if m.group(8):
            ago = True
        elif m.group(1):
            # a bare number counts as seconds, as in Postgres
            unit = _UNITS.get(m.group(2).lower() or "s")
            if unit is None:
                raise ValueError(text)
            field, mult = unit
            number = m.group(1)
            if "." in number:
                if field != "us":
                    raise ValueError(f"fractional {m.group(2)} are not supported: {text}")
                usec += int((Decimal(number) * mult).to_integral_value())
            elif field == "m":
                months += int(number) * mult
            elif field == "d":
                days += int(number) * mult
            else:
                usec += int(number) * mult
        else:
            sign = -1 if m.group(3) == "-" else 1
            frac = m.group(7) or ""
            value = (
                int(m.group(4)) * 3600 + int(m.group(5)) * 60 + int(m.group(6) or 0)
            ) * USECS_PER_SEC
            value += int(frac.ljust(6, "0")) if frac else 0
            usec += sign * value
    if not seen:
        raise ValueError(text)
    if ago:
        months, days, usec = -months, -days, -usec
    return _check_interval(months, days, usec, text)


def interval_key(iv: tuple[int, int, int]) -> int:
    """Postgres compares intervals by their span with 30-day months and 24-hour days."""
    return (iv[0] * 30 + iv[1]) * USECS_PER_DAY + iv[2]


# ---------------------------------------------------------------- output (text form)


def _trunc_div(a: int, b: int) -> tuple[int, int]:
    q = abs(a) // b
    if a < 0:
        q = -q
    return q, a - q * b


def format_interval(iv: tuple[int, int, int]) -> str:
    """EncodeInterval with IntervalStyle iso_8601, the style pysync's sessions use."""
    months, days, usec = iv
    if iv == (2**31 - 1, 2**31 - 1, 2**63 - 1):
        return "infinity"
    if iv == (-(2**31), -(2**31), -(2**63)):
        return "-infinity"
    if months == 0 and days == 0 and usec == 0:
        return "PT0S"
    years, mons = _trunc_div(months, 12)
    out = "P"
    if years:
        out += f"{years}Y"
    if mons:
        out += f"{mons}M"
    if days:
        out += f"{days}D"
    if usec:
        hours, rest = _trunc_div(usec, USECS_PER_HOUR)
        minutes, rest = _trunc_div(rest, USECS_PER_MINUTE)
        out += "T"
        if hours:
            out += f"{hours}H"
        if minutes:
            out += f"{minutes}M"
        if rest:
            sec, frac = _trunc_div(rest, USECS_PER_SEC)
            sign = "-" if rest < 0 else ""
            text = f"{abs(sec)}"
            if frac:
                text += "." + f"{abs(frac):06d}".rstrip("0")
            out += f"{sign}{text}S"
    return out


def interval_literal(iv: tuple[int, int, int]) -> str:
    """An input form Postgres reads back exactly (any IntervalStyle)."""
    if iv[0] in (2**31 - 1, -(2**31)) and iv[0] == iv[1]:
        return format_interval(iv)
    months, days, usec = iv
    sec, frac = _trunc_div(usec, USECS_PER_SEC)
    sign = "-" if usec < 0 else ""
    return f"P{months}M{days}DT{sign}{abs(sec)}.{abs(frac):06d}S"
