"""Input and output functions, and the conversions between the language's types
(explicit and implicit casts)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pysync.postgres.types import arrays, booleans, datetimes, intervals, numbers, strings

from .._ir import WhereRuntimeError, elem, is_array
from . import Fn1
from .datetimes import DATETIME_CASTS


def _rstrip(s: str) -> str:
    return s.rstrip(" ")


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
            return str  # the label as plain text: an EnumValue orders by its enum's order
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
    return DATETIME_CASTS.get((src, dst))


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

    def cast_array(a: list[Any]) -> list[Any]:
        # the cast keeps the array's bounds
        return arrays.with_lower(cast(a), arrays.lower_bounds(a))

    return cast_array
