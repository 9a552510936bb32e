"""Postgres text-format values <-> Python values, for the types the WHERE language supports.

Representations (chosen so that comparisons are plain Python comparisons where possible):

* int2/int4/int8: ``int``; float4/float8: ``float`` (float4 rounded to single precision);
  numeric: ``decimal.Decimal`` (keeps the display scale: ``Decimal('1.50')``).
* bool: ``bool``; text/varchar/enum: ``str``; bpchar: ``str`` as stored (padded;
  comparisons and casts to text ignore trailing spaces); uuid: canonical lower-case ``str``.
* date: days since 2000-01-01 (``int``), ``±inf`` (``float``) for +-infinity.
* timestamp/timestamptz: microseconds since 2000-01-01 00:00 (UTC for timestamptz, the
  session time zone pysync uses), ``±inf`` for +-infinity.
* time: microseconds since midnight.
* interval: ``(months, days, microseconds)``.
* arrays: (nested) ``list``; a two-dimensional array is a list of lists.

Parsers raise ``ValueError`` on input they do not understand; that includes valid Postgres
input in formats pysync does not parse (e.g. ``'Jan 1 2024'`` for a date).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Any

INF = math.inf
USECS_PER_SEC = 1_000_000
USECS_PER_MINUTE = 60 * USECS_PER_SEC
USECS_PER_HOUR = 60 * USECS_PER_MINUTE
USECS_PER_DAY = 24 * USECS_PER_HOUR

INT_RANGES = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}

Parser = Callable[[str], Any]


# ---------------------------------------------------------------- numbers

_INT_RE = re.compile(r"\s*([+-]?)(\d+)\s*\Z")
_INT_BASED_RE = re.compile(r"\s*([+-]?)0([xXoObB])([0-9a-fA-F_]+)\s*\Z")


def parse_int(type_name: str) -> Parser:
    lo, hi = INT_RANGES[type_name]

    def parse(text: str) -> int:
        m = _INT_RE.match(text)
        if m is not None:
            if len(m.group(2).lstrip("0")) > 19:  # out of range, and int() would be slow
                raise ValueError(f'value "{text}" is out of range for type {type_name}')
            value = int(m.group(2))
            if m.group(1) == "-":
                value = -value
        else:
            m = _INT_BASED_RE.match(text)
            if m is None or "__" in m.group(3) or m.group(3).startswith("_"):
                raise ValueError(text)
            base = {"x": 16, "o": 8, "b": 2}[m.group(2).lower()]
            value = int(m.group(3), base)
            if m.group(1) == "-":
                value = -value
        if value < lo or value > hi:
            raise ValueError(f'value "{text}" is out of range for type {type_name}')
        return value

    return parse


_FLOAT_SPECIAL = {
    "nan": math.nan, "infinity": INF, "+infinity": INF, "-infinity": -INF,
    "inf": INF, "+inf": INF, "-inf": -INF,
}
# One way to split the digits: "\d+\.?\d*" backtracks quadratically on a long invalid input.
_FLOAT_RE = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


def parse_float8(text: str) -> float:
    s = text.strip()
    special = _FLOAT_SPECIAL.get(s.lower())
    if special is not None:
        return special
    if _FLOAT_RE.match(s) is None:
        raise ValueError(text)
    value = float(s)
    if math.isinf(value):
        raise ValueError(f'"{text}" is out of range for type double precision')
    if value == 0.0 and _has_nonzero_digit(s):
        raise ValueError(f'"{text}" is out of range for type double precision')
    return value


def _has_nonzero_digit(s: str) -> bool:
    mantissa = s.split("e")[0].split("E")[0]
    return any(c in "123456789" for c in mantissa)


_F4 = struct.Struct("f")


def to_float4(value: float) -> float:
    """Round a double to single precision; raises OverflowError when out of range."""
    if math.isinf(value) or math.isnan(value):
        return value
    try:
        result = float(_F4.unpack(_F4.pack(value))[0])
    except OverflowError:
        raise OverflowError(value) from None
    if math.isinf(result):
        raise OverflowError(value)
    return result


def parse_float4(text: str) -> float:
    value = parse_float8(text)
    try:
        result = to_float4(value)
    except OverflowError:
        raise ValueError(f'"{text}" is out of range for type real') from None
    if result == 0.0 and value != 0.0:
        raise ValueError(f'"{text}" is out of range for type real')
    return result


_NUMERIC_RE = re.compile(r"\s*[+-]?(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?\s*\Z")
_NUMERIC_SPECIAL = {
    "nan": Decimal("NaN"), "infinity": Decimal("Infinity"), "+infinity": Decimal("Infinity"),
    "-infinity": Decimal("-Infinity"), "inf": Decimal("Infinity"),
    "+inf": Decimal("Infinity"), "-inf": Decimal("-Infinity"),
}
NUMERIC_MAX_INTEGER_DIGITS = 131072
"""Postgres' numeric: up to 131072 digits before the decimal point ..."""
NUMERIC_MAX_SCALE = 16383
"""... and up to 16383 after it."""
_NUMERIC_EXPONENT_LIMIT = (2**31 - 1) // 2  # numeric_in refuses |exponent| >= INT_MAX / 2
_NUMERIC_OVERFLOW = "value overflows numeric format"
# Exact for any numeric Postgres can hold: quantize to exponent 0 needs every integer digit.
_NUMERIC_CONTEXT = Context(prec=NUMERIC_MAX_INTEGER_DIGITS + 1)
_ONE = Decimal(1)


class NumericOverflow(ValueError):
    """A numeric beyond Postgres' limits; the message is Postgres' own."""

    def __init__(self) -> None:
        super().__init__(_NUMERIC_OVERFLOW)


def parse_numeric(text: str) -> Decimal:
    """numeric_in for decimal input. Postgres' limits are checked on the digits before
    any arithmetic (``Decimal`` of '1e1000000000' is instant, but making its integer
    digits explicit would not be)."""
    special = _NUMERIC_SPECIAL.get(text.strip().lower())
    if special is not None:
        return special
    m = _NUMERIC_RE.match(text)
    if m is None:
        raise ValueError(text)
    whole, frac, only_frac, exp_text = m.groups()
    whole = whole or ""
    frac = frac or only_frac or ""
    exponent = 0
    if exp_text is not None:
        if len(exp_text.lstrip("+-").lstrip("0")) > 10:
            raise NumericOverflow()
        exponent = int(exp_text)
        if abs(exponent) >= _NUMERIC_EXPONENT_LIMIT:
            raise NumericOverflow()
    if len(frac) - exponent > NUMERIC_MAX_SCALE:
        raise NumericOverflow()
    significant = len(whole.lstrip("0"))
    if significant:
        integer_digits = significant + exponent
    else:  # the first non-zero digit is in the fraction (or the value is zero)
        first = len(frac) - len(frac.lstrip("0"))
        integer_digits = exponent - first if first < len(frac) else 0
    if integer_digits > NUMERIC_MAX_INTEGER_DIGITS:
        raise NumericOverflow()
    value = Decimal(text.strip())
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        # '1e3' has display scale 0 in Postgres; Decimal keeps the exponent.
        value = value.quantize(_ONE, context=_NUMERIC_CONTEXT)
    return value


# ---------------------------------------------------------------- bool, text, uuid

_BOOL_WORDS = [("true", True), ("false", False), ("yes", True), ("no", False)]


def parse_bool(text: str) -> bool:
    s = text.strip().lower()
    if s in ("t", "1", "on"):
        return True
    if s in ("f", "0", "of", "off"):
        return False
    if s == "o":
        raise ValueError(text)
    if s:
        for word, value in _BOOL_WORDS:
            if word.startswith(s):
                return value
    raise ValueError(text)


def parse_text(text: str) -> str:
    return text


def parse_bpchar(text: str) -> str:
    # kept padded: LIKE and output see the spaces, comparisons and casts to text strip them
    return text


_UUID_RE = re.compile(r"\{?([0-9a-fA-F]{4}-?){7}[0-9a-fA-F]{4}\}?\Z")


def parse_uuid(text: str) -> str:
    if _UUID_RE.match(text) is None or (text.startswith("{") != text.endswith("}")):
        raise ValueError(text)
    h = text.strip("{}").replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ---------------------------------------------------------------- dates and times

_PG_EPOCH_JDN = 2451545  # Julian day number of 2000-01-01


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


# ---------------------------------------------------------------- intervals

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
            value = (int(m.group(4)) * 3600 + int(m.group(5)) * 60 + int(m.group(6) or 0)) * USECS_PER_SEC
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


# ---------------------------------------------------------------- arrays


def parse_array(element: Parser) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return _parse_array_text(text, element)

    return parse


def _parse_array_text(text: str, element: Parser) -> list[Any]:
    s = text.strip()
    if s.startswith("["):
        # explicit bounds '[0:1]={...}': only the default lower bound 1 is supported
        eq = s.find("=")
        if eq < 0:
            raise ValueError(text)
        for dim in re.findall(r"\[(-?\d+):(-?\d+)\]", s[:eq]):
            if int(dim[0]) != 1:
                raise ValueError(f"arrays with lower bounds other than 1 are not supported: {text}")
        s = s[eq + 1:].strip()
    if not s.startswith("{"):
        raise ValueError(text)
    result, pos = _parse_array_level(s, 0, element, text, 1)
    if s[pos:].strip():
        raise ValueError(text)
    _check_rectangular(result, text)
    return result


ARRAY_MAX_DIMENSIONS = 6
"""Postgres' MAXDIM; it also bounds the recursion here."""


def _parse_array_level(s: str, pos: int, element: Parser, text: str, dims: int) -> tuple[list[Any], int]:
    assert s[pos] == "{"
    if dims > ARRAY_MAX_DIMENSIONS:
        raise ValueError(f"number of array dimensions ({dims}) exceeds the maximum allowed "
                         f"({ARRAY_MAX_DIMENSIONS})")
    pos += 1
    items: list[Any] = []
    n = len(s)
    while True:
        while pos < n and s[pos].isspace():
            pos += 1
        if pos >= n:
            raise ValueError(text)
        c = s[pos]
        if c == "}" and not items:
            return items, pos + 1
        if c == "{":
            sub, pos = _parse_array_level(s, pos, element, text, dims + 1)
            items.append(sub)
        elif c == '"':
            pos += 1
            buf = []
            while True:
                if pos >= n:
                    raise ValueError(text)
                c = s[pos]
                if c == "\\":
                    pos += 1
                    if pos >= n:
                        raise ValueError(text)
                    buf.append(s[pos])
                elif c == '"':
                    pos += 1
                    break
                else:
                    buf.append(c)
                pos += 1
            items.append(element("".join(buf)))
        else:
            start = pos
            buf = []
            while pos < n and s[pos] not in ",}":
                if s[pos] == "\\":
                    pos += 1
                    if pos >= n:
                        raise ValueError(text)
                elif s[pos] in '{"':
                    raise ValueError(text)
                buf.append(s[pos])
                pos += 1
            raw = "".join(buf).strip()
            if not raw:
                raise ValueError(text)
            if raw.upper() == "NULL" and "\\" not in s[start:pos]:
                items.append(None)
            else:
                items.append(element(raw))
        while pos < n and s[pos].isspace():
            pos += 1
        if pos >= n:
            raise ValueError(text)
        if s[pos] == ",":
            pos += 1
        elif s[pos] == "}":
            return items, pos + 1
        else:
            raise ValueError(text)


def _check_rectangular(value: list[Any], text: str) -> None:
    """Postgres arrays are rectangular: every sub-array at one level has the same shape."""
    if not value:
        return
    nested = [isinstance(v, list) for v in value]
    if any(nested) and not all(nested):
        raise ValueError(f"malformed array literal: {text}")
    if all(nested):
        shape = array_shape(value[0])
        for sub in value:
            if array_shape(sub) != shape:
                raise ValueError(f"malformed array literal: {text}")
            _check_rectangular(sub, text)
        if not shape:
            raise ValueError(f"malformed array literal: {text}")


def array_shape(value: list[Any]) -> tuple[int, ...]:
    shape = []
    v: Any = value
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    if shape == [0]:
        return ()
    return tuple(shape)


def array_flatten(value: list[Any]) -> list[Any]:
    if not value or not isinstance(value[0], list):
        return value
    out: list[Any] = []
    for sub in value:
        out.extend(array_flatten(sub))
    return out


# ---------------------------------------------------------------- output (text form)


def format_int(value: int) -> str:
    return str(value)


def format_float(value: float) -> str:
    """float8out with extra_float_digits >= 1: shortest exact digits, %g-like layout."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    r = repr(value)
    mantissa, _, exp_s = r.partition("e")
    negative = mantissa.startswith("-")
    mantissa = mantissa.lstrip("-")
    int_part, _, frac_part = mantissa.partition(".")
    if frac_part == "0":
        frac_part = ""
    digits = (int_part + frac_part).lstrip("0")
    exponent = int(exp_s or 0) + len(int_part.lstrip("0")) - 1 if int_part.strip("0") else (
        int(exp_s or 0) - (len(frac_part) - len(frac_part.lstrip("0"))) - 1
    )
    digits = digits.rstrip("0") or "0"
    sign = "-" if negative else ""
    if -4 <= exponent < 15:
        if exponent >= 0:
            whole = digits[: exponent + 1].ljust(exponent + 1, "0")
            frac = digits[exponent + 1:]
            return sign + whole + ("." + frac if frac else "")
        return sign + "0." + "0" * (-exponent - 1) + digits
    frac = digits[1:]
    return f"{sign}{digits[0]}{'.' + frac if frac else ''}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def format_float4(value: float) -> str:
    """float4out: the shortest digits that round-trip through single precision."""
    if math.isnan(value) or math.isinf(value) or value == 0.0:
        return format_float(value)
    for digits in range(1, 10):
        candidate = f"{value:.{digits}g}"
        if to_float4(float(candidate)) == value:
            return format_float(float(candidate))
    return format_float(value)


def format_numeric(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    return format(value, "f")


def format_bool(value: bool) -> str:
    return "true" if value else "false"


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
