"""Operator, cast and function implementations on Python values (see pysync.postgres.types).

Every function here receives non-NULL arguments (strictness is handled by the compiler) and
raises WhereRuntimeError where Postgres raises an error.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from pysync.postgres.types import arrays, booleans, datetimes, intervals, numbers, strings

from ._ir import WhereRuntimeError, elem, is_array

Fn2 = Callable[[Any, Any], Any]
Fn1 = Callable[[Any], Any]

# Enough digits for any exact +,-,* of Postgres numerics (up to 131072 digits before the point).
_DEC = Context(prec=400_000, Emax=999_999_999, Emin=-999_999_999, traps=[])


# ---------------------------------------------------------------- comparisons


def _float_cmp(a: float, b: float) -> int:
    """btfloat8cmp: NaN equals NaN and sorts above everything else."""
    if a != a:
        return 0 if b != b else 1
    if b != b:
        return -1
    return (a > b) - (a < b)


def _numeric_cmp(a: Decimal, b: Decimal) -> int:
    if a.is_nan():
        return 0 if b.is_nan() else 1
    if b.is_nan():
        return -1
    return (a > b) - (a < b)


def _interval_cmp(a: tuple[int, int, int], b: tuple[int, int, int]) -> int:
    ka, kb = intervals.interval_key(a), intervals.interval_key(b)
    return (ka > kb) - (ka < kb)


_CMP_FROM_SIGN: dict[str, Callable[[int], bool]] = {
    "=": lambda c: c == 0,
    "<>": lambda c: c != 0,
    "<": lambda c: c < 0,
    ">": lambda c: c > 0,
    "<=": lambda c: c <= 0,
    ">=": lambda c: c >= 0,
}
_PLAIN_CMP: dict[str, Fn2] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def cmp_function(t: str) -> Callable[[Any, Any], int] | None:
    """A three-way comparison for types where Python's own ordering is wrong, else None."""
    if t in ("float4", "float8"):
        return _float_cmp
    if t == "numeric":
        return _numeric_cmp
    if t == "interval":
        return _interval_cmp
    return None


def _float_eq(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def _float_ne(a: float, b: float) -> bool:
    return not (a == b or (a != a and b != b))


def _rstrip(s: str) -> str:
    return s.rstrip(" ")


def compare_op(op: str, t: str) -> Fn2:
    """The boolean comparison ``op`` on two non-NULL values of type ``t``."""
    if t == "bpchar":
        plain = _PLAIN_CMP[op]
        return lambda a, b: plain(a.rstrip(" "), b.rstrip(" "))
    if is_array(t):
        eq = equality(elem(t))

        def arr_eq(a: list[Any], b: list[Any]) -> bool:
            return _array_eq(a, b, eq)

        if op == "=":
            return arr_eq
        if op == "<>":
            return lambda a, b: not arr_eq(a, b)
        raise AssertionError(op)
    if t in ("float4", "float8"):
        if op == "=":
            return _float_eq
        if op == "<>":
            return _float_ne
    cmp = cmp_function(t)
    if cmp is None:
        return _PLAIN_CMP[op]
    test = _CMP_FROM_SIGN[op]
    return lambda a, b: test(cmp(a, b))


def equality(t: str) -> Fn2:
    return compare_op("=", t)


def _array_eq(a: list[Any], b: list[Any], eq: Fn2) -> bool:
    """array_eq: same dimensions, elements equal, NULL elements equal to each other."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, list) or isinstance(y, list):
            if not (isinstance(x, list) and isinstance(y, list) and _array_eq(x, y, eq)):
                return False
        elif x is None or y is None:
            if x is not y:
                return False
        elif not eq(x, y):
            return False
    return True


def sort_key(t: str) -> Callable[[Any], Any] | None:
    cmp = cmp_function(t)
    if cmp is None:
        return None
    import functools

    return functools.cmp_to_key(cmp)


# ---------------------------------------------------------------- numbers


def _int_checked(t: str, f: Fn2) -> Fn2:
    lo, hi = numbers.INT_RANGES[t]
    label = {"int2": "smallint", "int4": "integer", "int8": "bigint"}[t]

    def op(a: int, b: int) -> int:
        r = f(a, b)
        if r < lo or r > hi:
            raise WhereRuntimeError(f"{label} out of range")
        return int(r)

    return op


def _int_div(a: int, b: int) -> int:
    if b == 0:
        raise WhereRuntimeError("division by zero")
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _float_checked(f: Fn2, t: str, check_underflow: bool) -> Fn2:
    single = t == "float4"
    mul = f is operator.mul

    def op(a: float, b: float) -> float:
        try:
            r: float = f(a, b)
        except ZeroDivisionError:  # NaN / 0.0 in Python
            r = math.nan
        if single:
            try:
                r = numbers.to_float4(r)
            except OverflowError:
                raise WhereRuntimeError("value out of range: overflow") from None
        if math.isinf(r) and not (math.isinf(a) or math.isinf(b)):
            raise WhereRuntimeError("value out of range: overflow")
        # float8_mul: 0 from two non-zero factors; float8_div: 0 from a non-zero dividend
        # and a finite divisor
        if check_underflow and r == 0.0 and a != 0.0 and (b != 0.0 if mul else not math.isinf(b)):
            raise WhereRuntimeError("value out of range: underflow")
        return r

    return op


def _float_div(a: float, b: float) -> float:
    if b == 0.0 and a == a:  # NaN / 0 is NaN in Postgres
        raise WhereRuntimeError("division by zero")
    return float(a / b)


def _numeric_zero_sign(r: Decimal) -> Decimal:
    # Postgres numerics have no negative zero.
    return r.copy_abs() if r.is_zero() and r.is_signed() else r


def _numeric_add(a: Decimal, b: Decimal) -> Decimal:
    return _numeric_zero_sign(_DEC.add(a, b))


def _numeric_sub(a: Decimal, b: Decimal) -> Decimal:
    return _numeric_zero_sign(_DEC.subtract(a, b))


def _numeric_mul(a: Decimal, b: Decimal) -> Decimal:
    if (a.is_infinite() and b.is_zero()) or (b.is_infinite() and a.is_zero()):
        return Decimal("NaN")
    return _numeric_zero_sign(_DEC.multiply(a, b))


def _dscale(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def _weight_first_digit(d: Decimal) -> tuple[int, int]:
    """Weight (in base-10000 digits) and first base-10000 digit, as Postgres' NumericVar."""
    if d.is_zero():
        return 0, 0
    weight = d.adjusted() // 4
    first = int(d.copy_abs().scaleb(-4 * weight, _DEC).to_integral_value(rounding="ROUND_FLOOR"))
    return weight, first


def _numeric_div(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return Decimal("NaN")
    if b.is_zero():
        raise WhereRuntimeError("division by zero")
    if a.is_infinite():
        if b.is_infinite():
            return Decimal("NaN")
        return a if b > 0 else -a
    if b.is_infinite():
        return Decimal(0)
    # select_div_scale: at least 16 significant digits, at least the inputs' scales.
    w1, f1 = _weight_first_digit(a)
    w2, f2 = _weight_first_digit(b)
    qweight = w1 - w2
    if f1 <= f2:
        qweight -= 1
    rscale = max(16 - qweight * 4, _dscale(a), _dscale(b), 0)
    rscale = min(rscale, 1000)
    exact = Context(prec=max(60, rscale + abs(a.adjusted() - b.adjusted()) + 40), traps=[])
    q = exact.divide(a, b).quantize(
        Decimal(1).scaleb(-rscale), rounding=ROUND_HALF_UP, context=_DEC
    )
    return _numeric_zero_sign(q)


def arith_op(op: str, t: str) -> Fn2:
    """``+ - * /`` and bitwise operators on two values of the numeric type ``t``."""
    if t in numbers.INT_RANGES:
        base: dict[str, Fn2] = {
            "+": operator.add,
            "-": operator.sub,
            "*": operator.mul,
            "/": _int_div,
            "&": operator.and_,
            "|": operator.or_,
            "#": operator.xor,
        }
        return _int_checked(t, base[op])
    if t in ("float4", "float8"):
        fbase: dict[str, Fn2] = {
            "+": operator.add,
            "-": operator.sub,
            "*": operator.mul,
            "/": _float_div,
        }
        return _float_checked(fbase[op], t, op in ("*", "/"))
    if t == "numeric":
        return {"+": _numeric_add, "-": _numeric_sub, "*": _numeric_mul, "/": _numeric_div}[op]
    raise AssertionError((op, t))


def negate(t: str) -> Fn1:
    if t in numbers.INT_RANGES:
        lo, _ = numbers.INT_RANGES[t]
        label = {"int2": "smallint", "int4": "integer", "int8": "bigint"}[t]

        def neg_int(a: int) -> int:
            if a == lo:
                raise WhereRuntimeError(f"{label} out of range")
            return -a

        return neg_int
    if t == "numeric":
        # copy_negate: exact (unary minus rounds to the context's 28 digits)
        return lambda a: _numeric_zero_sign(a.copy_negate()) if not a.is_nan() else a
    if t == "interval":
        return interval_negate
    return operator.neg


def absolute(t: str) -> Fn1:
    """Prefix ``@``: the absolute value (out of range for the smallest integer)."""
    if t in numbers.INT_RANGES:
        negative = negate(t)
        return lambda a: negative(a) if a < 0 else a
    if t == "numeric":
        return lambda a: a.copy_abs()
    return abs


def bitnot(a: int) -> int:
    return ~a


def float_pow(a: float, b: float) -> float:
    if a == 0.0 and b < 0:
        raise WhereRuntimeError("zero raised to a negative power is undefined")
    if a < 0 and not math.isinf(b) and not math.isnan(b) and math.floor(b) != b:
        raise WhereRuntimeError(
            "a negative number raised to a non-integer power yields a complex result"
        )
    try:
        r = math.pow(a, b)
    except OverflowError:
        raise WhereRuntimeError("value out of range: overflow") from None
    except ValueError:
        raise WhereRuntimeError("invalid argument for power function") from None
    if math.isinf(r) and not (math.isinf(a) or math.isinf(b)):
        raise WhereRuntimeError("value out of range: overflow")
    if r == 0.0 and a != 0.0 and not (math.isinf(a) or math.isinf(b)):
        raise WhereRuntimeError("value out of range: underflow")
    return r


def float_sqrt(a: float) -> float:
    if a < 0:
        raise WhereRuntimeError("cannot take square root of a negative number")
    return math.sqrt(a)


# ---------------------------------------------------------------- dates, times, intervals

_MAX_I32 = 2**31 - 1


def _interval_checked(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """Range check; arithmetic on infinite intervals is not implemented (raises)."""
    m, d, u = iv
    if not (-(2**31) <= m <= _MAX_I32 and -(2**31) <= d <= _MAX_I32 and -(2**63) <= u < 2**63):
        raise WhereRuntimeError("interval out of range")
    return iv


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
    if _infinite_interval(iv):
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


INTERVAL_INF = (2**31 - 1, 2**31 - 1, 2**63 - 1)
INTERVAL_NINF = (-(2**31), -(2**31), -(2**63))


def _infinite_interval(iv: tuple[int, int, int]) -> bool:
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
    if _infinite_interval(iv):
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
    return _interval_checked((months, days, usec))


def justify_days(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """Whole 30-day spans become months, the rest keeps the months' sign."""
    if _infinite_interval(iv):
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
    return _interval_checked((months, days, usec))


def justify_interval(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """justify_days(justify_hours(iv)), with signs made consistent as Postgres does."""
    if _infinite_interval(iv):
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
    return _interval_checked((months, days, usec))


def timezone_function(zone: Any, to_utc: bool) -> Fn1:
    """timezone(zone, timestamp) -> timestamptz (to_utc) or timezone(zone, timestamptz)
    -> timestamp; infinities stay."""
    convert = datetimes.local_to_utc if to_utc else datetimes.utc_to_local

    def timezone(value: int | float) -> int | float:
        if isinstance(value, float):
            return value
        return _check_ts(convert(zone, value))

    return timezone


JUSTIFY = {
    "justify_hours": justify_hours,
    "justify_days": justify_days,
    "justify_interval": justify_interval,
}


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
    return _interval_checked((0, days, diff - days * datetimes.USECS_PER_DAY))


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
    _finite_intervals(iv)
    return (t + iv[2]) % datetimes.USECS_PER_DAY


def time_minus_interval(t: int, iv: tuple[int, int, int]) -> int:
    _finite_intervals(iv)
    return (t - iv[2]) % datetimes.USECS_PER_DAY


def time_minus_time(a: int, b: int) -> tuple[int, int, int]:
    return (0, 0, a - b)


def interval_negate(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """interval_um: the other infinity of an infinite interval."""
    if iv == INTERVAL_INF:
        return INTERVAL_NINF
    if iv == INTERVAL_NINF:
        return INTERVAL_INF
    return _interval_result((-iv[0], -iv[1], -iv[2]))


def _interval_result(iv: tuple[int, int, int]) -> tuple[int, int, int]:
    """A finite result: in range, and not the encoding of an infinity."""
    if _infinite_interval(iv):
        raise WhereRuntimeError("interval out of range")
    return _interval_checked(iv)


def interval_plus(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    if _infinite_interval(a) or _infinite_interval(b):
        if _infinite_interval(a) and _infinite_interval(b) and a != b:
            raise WhereRuntimeError("interval out of range")
        return a if _infinite_interval(a) else b
    return _interval_result((a[0] + b[0], a[1] + b[1], a[2] + b[2]))


def _finite_intervals(*ivs: tuple[int, int, int]) -> None:
    if any(_infinite_interval(iv) for iv in ivs):
        raise WhereRuntimeError("arithmetic on infinite intervals is not supported")


def interval_minus(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    if _infinite_interval(a) or _infinite_interval(b):
        if a == b:
            raise WhereRuntimeError("interval out of range")
        return a if _infinite_interval(a) else interval_negate(b)
    return _interval_result((a[0] - b[0], a[1] - b[1], a[2] - b[2]))


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


# ---------------------------------------------------------------- text


def like_matcher(
    pattern: str, escape: str | None, lower: Callable[[str], str] | None
) -> Callable[[str], bool]:
    """A LIKE pattern (``%``, ``_``, escape character, default backslash) as a test of a
    whole string, in time linear in the string times the pattern.

    A regular expression with one ``.*`` per ``%`` backtracks polynomially (exponentially
    for ``%%%%``) when it fails. Instead the pattern is split at ``%`` into fixed-length
    segments: the first is matched at the start, the last at the end, and each one
    between at its leftmost place after the one before, which leaves the most room for
    the rest (the standard greedy algorithm, exact for fixed-length segments).
    """
    if lower is not None:  # ILIKE: the lowered string matches the lowered pattern
        pattern = lower(pattern)
    segments: list[list[str]] = [[]]  # each item matches exactly one character
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if escape is not None and c == escape:
            i += 1
            if i >= n:
                raise WhereRuntimeError("LIKE pattern must not end with escape character")
            segments[-1].append(re.escape(pattern[i]))
        elif c == "%":
            segments.append([])
        elif c == "_":
            segments[-1].append(".")
        else:
            segments[-1].append(re.escape(c))
        i += 1
    compiled = [(re.compile("".join(seg), re.DOTALL), len(seg)) for seg in segments]
    if len(compiled) == 1:
        whole = compiled[0][0].fullmatch
        return lambda s: whole(s) is not None
    (first, first_len), *middle, (last, last_len) = compiled
    middle = [(rx, size) for rx, size in middle if size]
    minimum = first_len + last_len + sum(size for _, size in middle)

    def match(s: str) -> bool:
        end = len(s) - last_len
        if len(s) < minimum or first.match(s, 0, first_len) is None:
            return False
        pos = first_len
        for rx, _ in middle:
            found = rx.search(s, pos, end)
            if found is None:
                return False
            pos = found.end()
        return last.fullmatch(s, end) is not None

    return match


def like_escape(value: str) -> str | None:
    if value == "":
        return None
    if len(value) != 1:
        raise WhereRuntimeError("invalid escape string")
    return value


CASE_MAPS: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "unicode": (strings.unicode_lower, strings.unicode_upper),
    "builtin": (strings.builtin_lower, strings.builtin_upper),
    "ascii": (strings.ascii_lower, strings.ascii_upper),
}
"""(lower, upper) by the ctype's kind (see ``_check.case_mapping``)."""


# ---------------------------------------------------------------- casts and output


def _numeric_to_int(t: str) -> Fn1:
    lo, hi = numbers.INT_RANGES[t]

    def cast(d: Decimal) -> int:
        if not d.is_finite():
            raise WhereRuntimeError(f"cannot convert {numbers.format_numeric(d)} to {t}")
        if not d.is_zero() and d.adjusted() > 19:  # out of range; int() of it would be slow
            raise WhereRuntimeError(f"{t} out of range")
        r = int(d.to_integral_value(rounding=ROUND_HALF_UP))
        if r < lo or r > hi:
            raise WhereRuntimeError(f"{t} out of range")
        return r

    return cast


def _float_to_int(t: str) -> Fn1:
    lo, hi = numbers.INT_RANGES[t]

    def cast(f: float) -> int:
        if math.isnan(f) or math.isinf(f):
            raise WhereRuntimeError(f"{t} out of range")
        r = round(f)  # rint: half to even, like Python's round
        if r < lo or r > hi:
            raise WhereRuntimeError(f"{t} out of range")
        return r

    return cast


def _int_to_int(t: str) -> Fn1:
    lo, hi = numbers.INT_RANGES[t]

    def cast(i: int) -> int:
        if i < lo or i > hi:
            raise WhereRuntimeError(f"{t} out of range")
        return i

    return cast


def _to_float4(f: float) -> float:
    try:
        r = numbers.to_float4(f)
    except OverflowError:
        raise WhereRuntimeError("value out of range: overflow") from None
    if r == 0.0 and f != 0.0:
        raise WhereRuntimeError("value out of range: underflow")
    return r


def _numeric_to_float(d: Decimal) -> float:
    try:
        return float(d)
    except (OverflowError, InvalidOperation):
        raise WhereRuntimeError("value out of range") from None


def _float_to_numeric(f: float) -> Decimal:
    if math.isnan(f):
        return Decimal("NaN")
    if math.isinf(f):
        return Decimal("Infinity") if f > 0 else Decimal("-Infinity")
    # float8_numeric goes through the shortest text form (DBL_DIG significant digits)
    return numbers.parse_numeric(f"{f:.15g}")


def _float4_to_numeric(f: float) -> Decimal:
    if math.isnan(f) or math.isinf(f):
        return _float_to_numeric(f)
    return numbers.parse_numeric(f"{f:.6g}")


def _int_to_bool(i: int) -> bool:
    return i != 0


def _bool_to_int(b: bool) -> int:
    return 1 if b else 0


OUTPUT: dict[str, Callable[[Any], str]] = {
    "int2": numbers.format_int,
    "int4": numbers.format_int,
    "int8": numbers.format_int,
    "float4": numbers.format_float4,
    "float8": numbers.format_float,
    "numeric": numbers.format_numeric,
    "bool": lambda b: "t" if b else "f",
    "text": str,
    "bpchar": str,
    "uuid": str,
    "date": datetimes.format_date,
    "time": datetimes.format_time,
    "timestamp": datetimes.format_timestamp,
    "timestamptz": datetimes.format_timestamptz,
    "interval": intervals.format_interval,
}
"""Output functions (what ``||`` and concat() use; ``bool::text`` says true/false instead)."""

INPUT: dict[str, Callable[[str], Any]] = {
    "int2": numbers.parse_int("int2"),
    "int4": numbers.parse_int("int4"),
    "int8": numbers.parse_int("int8"),
    "float4": numbers.parse_float4,
    "float8": numbers.parse_float8,
    "numeric": numbers.parse_numeric,
    "bool": booleans.parse_bool,
    "text": strings.parse_text,
    "bpchar": strings.parse_bpchar,
    "uuid": strings.parse_uuid,
    "date": datetimes.parse_date,
    "time": datetimes.parse_time,
    "timestamp": datetimes.parse_timestamp,
    "timestamptz": datetimes.parse_timestamptz,
    "interval": intervals.parse_interval,
}


def input_function(t: str) -> Callable[[str], Any]:
    if is_array(t):
        return arrays.parse_array(input_function(elem(t)))
    if t.startswith("enum:"):
        return strings.parse_text
    parse = INPUT[t]
    if t in ("text", "bpchar"):
        return parse
    return _c_input(parse)


# Python's int(), float(), Decimal(), str.strip() and \d / \s read Unicode digits and
# spaces ('５', U+00A0, U+001C); the input functions of Postgres' non-text types read ASCII
# only and C's isspace().
_NOT_C_INPUT = re.compile(r"[^\x00-\x1b\x20-\x7f]")


def _c_input(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def c_input(text: str) -> Any:
        if _NOT_C_INPUT.search(text) is not None:
            raise ValueError(f"invalid input syntax: {text!r}")
        return parse(text)

    return c_input


def _guarded_input(t: str) -> Fn1:
    parse = input_function(t)

    def cast(s: str) -> Any:
        try:
            return parse(s)
        except ValueError as e:
            raise WhereRuntimeError(f"invalid input syntax for type {t}: {s!r} ({e})") from None

    return cast


_NUMERIC_RANK = {"int2": 0, "int4": 1, "int8": 2, "numeric": 3, "float4": 4, "float8": 5}


def cast_function(src: str, dst: str) -> Fn1 | None:
    """The conversion src -> dst (explicit or implicit), or None when there is none."""
    if src == dst:
        return lambda v: v
    if dst in ("text", "bpchar") and src in ("text", "bpchar"):
        return _rstrip if src == "bpchar" and dst == "text" else (lambda v: v)
    if src in ("text", "bpchar", "unknown"):
        if dst.startswith("enum:"):
            return None
        return _guarded_input(dst)
    if dst == "text":
        if src == "bool":
            return booleans.format_bool
        if src.startswith("enum:"):
            return lambda v: v
        out = OUTPUT.get(src)
        return out
    if dst == "bpchar":
        out = OUTPUT.get(src)
        return out
    if src in _NUMERIC_RANK and dst in _NUMERIC_RANK:
        return _numeric_cast(src, dst)
    if src == "int4" and dst == "bool":
        return _int_to_bool
    if src == "bool" and dst == "int4":
        return _bool_to_int
    return _DATETIME_CASTS.get((src, dst))


def _numeric_cast(src: str, dst: str) -> Fn1:
    if dst in numbers.INT_RANGES:
        if src in numbers.INT_RANGES:
            return _int_to_int(dst)
        if src == "numeric":
            return _numeric_to_int(dst)
        return _float_to_int(dst)
    if dst == "numeric":
        if src in numbers.INT_RANGES:
            return Decimal
        return _float4_to_numeric if src == "float4" else _float_to_numeric
    # float targets
    if src == "numeric":
        return (
            _numeric_to_float if dst == "float8" else (lambda d: _to_float4(_numeric_to_float(d)))
        )
    if dst == "float8":
        return float
    return lambda v: _to_float4(float(v))


_DATETIME_CASTS: dict[tuple[str, str], Fn1] = {
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

IMPLICIT_CASTS = frozenset(
    [
        ("int2", "int4"),
        ("int2", "int8"),
        ("int2", "numeric"),
        ("int2", "float4"),
        ("int2", "float8"),
        ("int4", "int8"),
        ("int4", "numeric"),
        ("int4", "float4"),
        ("int4", "float8"),
        ("int8", "numeric"),
        ("int8", "float4"),
        ("int8", "float8"),
        ("numeric", "float4"),
        ("numeric", "float8"),
        ("float4", "float8"),
        ("bpchar", "text"),
        ("text", "bpchar"),
        ("date", "timestamp"),
        ("date", "timestamptz"),
        ("timestamp", "timestamptz"),
    ]
)


def array_cast(f: Fn1) -> Fn1:
    def cast(a: list[Any]) -> list[Any]:
        return [None if v is None else (cast(v) if isinstance(v, list) else f(v)) for v in a]

    return cast


def format_array(value: list[Any], out: Callable[[Any], str]) -> str:
    """array_out: elements quoted when needed, NULL unquoted."""
    parts = []
    for v in value:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, list):
            parts.append(format_array(v, out))
        else:
            s = out(v)
            if s == "" or s.upper() == "NULL" or any(c in s for c in '{},"\\ \t\n\r\v\f'):
                s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(s)
    return "{" + ",".join(parts) + "}"


# ---------------------------------------------------------------- arrays


def array_contains(a: list[Any], b: list[Any], eq: Fn2) -> bool:
    """a @> b: every non-NULL... every element of b equals some element of a (NULLs never match)."""
    fa = [x for x in arrays.array_flatten(a) if x is not None]
    for y in arrays.array_flatten(b):
        if y is None:
            return False
        if not any(eq(x, y) for x in fa):
            return False
    return True


def array_overlaps(a: list[Any], b: list[Any], eq: Fn2) -> bool:
    fb = [y for y in arrays.array_flatten(b) if y is not None]
    return any(x is not None and any(eq(x, y) for y in fb) for x in arrays.array_flatten(a))


def array_ndims(a: list[Any]) -> int | None:
    shape = arrays.array_shape(a)
    return len(shape) or None


def array_cat(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    """array_cat / anyarray || anyarray (not strict: a NULL array acts as empty)."""
    if a is None:
        return b
    if b is None:
        return a
    sa, sb = arrays.array_shape(a), arrays.array_shape(b)
    if not sa:
        return b
    if not sb:
        return a
    if len(sa) == len(sb):
        if sa[1:] != sb[1:]:
            raise WhereRuntimeError("cannot concatenate incompatible arrays")
        return a + b
    if len(sa) == len(sb) + 1:
        if sa[1:] != sb:
            raise WhereRuntimeError("cannot concatenate incompatible arrays")
        return a + [b]
    if len(sb) == len(sa) + 1:
        if sb[1:] != sa:
            raise WhereRuntimeError("cannot concatenate incompatible arrays")
        return [a] + b
    raise WhereRuntimeError("cannot concatenate incompatible arrays")


def array_append(a: list[Any] | None, v: Any) -> list[Any]:
    if a is None or not a:
        return [v]
    if isinstance(a[0], list):
        raise WhereRuntimeError("argument must be empty or one-dimensional array")
    return a + [v]


def array_prepend(v: Any, a: list[Any] | None) -> list[Any]:
    if a is None or not a:
        return [v]
    if isinstance(a[0], list):
        raise WhereRuntimeError("argument must be empty or one-dimensional array")
    return [v] + a


def array_subscript(a: list[Any], subs: list[int]) -> Any:
    """a[i][j]...: NULL when out of range or when the subscript count differs from ndims."""
    shape = arrays.array_shape(a)
    if len(subs) != len(shape):
        return None
    v: Any = a
    for i in subs:
        if i < 1 or i > len(v):
            return None
        v = v[i - 1]
    return v
