"""Postgres numbers in text form: int2/int4/int8, float4/float8 and numeric.

* int2/int4/int8: ``int``; float4/float8: ``float`` (float4 rounded to single precision);
  numeric: ``decimal.Decimal`` (keeps the display scale: ``Decimal('1.50')``).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from decimal import Context, Decimal
from math import inf as INF

INT_RANGES = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}


# ---------------------------------------------------------------- parsing

# re.ASCII: Postgres reads ASCII digits and C's isspace() only (Python's \d and \s also
# match '５' and U+00A0). Underscores between digits are Postgres 16's.
_INT_RE = re.compile(r"\s*([+-]?)(\d+(?:_\d+)*)\s*\Z", re.ASCII)
_INT_BASED_RE = re.compile(r"\s*([+-]?)0([xXoObB])([0-9a-fA-F_]+)\s*\Z", re.ASCII)
_C_SPACE = " \t\n\r\f\v"


def _based_int(text: str) -> int | None:
    """A hexadecimal, octal or binary integer (0x1F, -0o17, 0b_101), or None."""
    m = _INT_BASED_RE.match(text)
    if m is None:
        return None
    digits = m.group(3)
    if "__" in digits or digits.endswith("_"):
        raise ValueError(text)
    base = {"x": 16, "o": 8, "b": 2}[m.group(2).lower()]
    value = int(digits.replace("_", ""), base)
    return -value if m.group(1) == "-" else value


def parse_int(type_name: str) -> Callable[[str], int]:
    lo, hi = INT_RANGES[type_name]

    def parse(text: str) -> int:
        m = _INT_RE.match(text)
        if m is not None:
            digits = m.group(2).replace("_", "")
            if len(digits.lstrip("0")) > 19:  # out of range, and int() would be slow
                raise ValueError(f'value "{text}" is out of range for type {type_name}')
            value = int(digits)
            if m.group(1) == "-":
                value = -value
        else:
            based = _based_int(text)
            if based is None:
                raise ValueError(text)
            value = based
        if value < lo or value > hi:
            raise ValueError(f'value "{text}" is out of range for type {type_name}')
        return value

    return parse


_FLOAT_SPECIAL = {
    "nan": math.nan,
    "infinity": INF,
    "+infinity": INF,
    "-infinity": -INF,
    "inf": INF,
    "+inf": INF,
    "-inf": -INF,
}
# One way to split the digits: "\d+\.?\d*" backtracks quadratically on a long invalid input.
_FLOAT_RE = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z", re.ASCII)
# strtod's hexadecimal floats (0x10, 0x1.8p3), which float8in accepts
_HEX_FLOAT_RE = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?\Z", re.ASCII
)


def parse_float8(text: str) -> float:
    s = text.strip(_C_SPACE)
    special = _FLOAT_SPECIAL.get(s.lower())
    if special is not None:
        return special
    if _FLOAT_RE.match(s) is not None:
        value = float(s)
    elif _HEX_FLOAT_RE.match(s) is not None:
        try:
            value = float.fromhex(s)
        except OverflowError:
            raise ValueError(f'"{text}" is out of range for type double precision') from None
        if value == 0.0 and any(c in "123456789abcdefABCDEF" for c in s[2:].split("p")[0]):
            raise ValueError(f'"{text}" is out of range for type double precision')
        return value
    else:
        raise ValueError(text)
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


_DIGITS = r"\d+(?:_\d+)*"
_NUMERIC_RE = re.compile(
    rf"\s*[+-]?(?:({_DIGITS})(?:\.((?:{_DIGITS})?))?|\.({_DIGITS}))(?:[eE]([+-]?{_DIGITS}))?\s*\Z",
    re.ASCII,
)
_NUMERIC_SPECIAL = {
    "nan": Decimal("NaN"),
    "infinity": Decimal("Infinity"),
    "+infinity": Decimal("Infinity"),
    "-infinity": Decimal("-Infinity"),
    "inf": Decimal("Infinity"),
    "+inf": Decimal("Infinity"),
    "-inf": Decimal("-Infinity"),
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
    special = _NUMERIC_SPECIAL.get(text.strip(_C_SPACE).lower())
    if special is not None:
        return special
    m = _NUMERIC_RE.match(text)
    if m is None:
        based = _based_int(text)
        if based is None:
            raise ValueError(text)
        if len(str(abs(based))) > NUMERIC_MAX_INTEGER_DIGITS:
            raise NumericOverflow()
        return Decimal(based)
    whole, frac, only_frac, exp_text = (g.replace("_", "") if g else g for g in m.groups())
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
    value = Decimal(text.strip(_C_SPACE).replace("_", ""))
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        # '1e3' has display scale 0 in Postgres; Decimal keeps the exponent.
        value = value.quantize(_ONE, context=_NUMERIC_CONTEXT)
    return value


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
    exponent = (
        int(exp_s or 0) + len(int_part.lstrip("0")) - 1
        if int_part.strip("0")
        else (int(exp_s or 0) - (len(frac_part) - len(frac_part.lstrip("0"))) - 1)
    )
    digits = digits.rstrip("0") or "0"
    sign = "-" if negative else ""
    if -4 <= exponent < 15:
        if exponent >= 0:
            whole = digits[: exponent + 1].ljust(exponent + 1, "0")
            frac = digits[exponent + 1 :]
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
