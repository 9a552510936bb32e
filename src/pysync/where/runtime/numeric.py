"""Arithmetic on integers, floats and numerics, with Postgres' range checks and errors
(``integer out of range``, ``division by zero``, overflow and underflow)."""

from __future__ import annotations

import math
import operator
from decimal import ROUND_HALF_UP, Context, Decimal

from pysync.postgres.types import numbers

from .._ir import WhereRuntimeError
from . import Fn1, Fn2
from .intervals import interval_negate

# Enough digits for any exact +,-,* of Postgres numerics (up to 131072 digits before the point).
_DEC = Context(prec=400_000, Emax=999_999_999, Emin=-999_999_999, traps=[])


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
