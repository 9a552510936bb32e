"""Comparisons (``=``, ``<``, ...) on non-NULL values as Postgres' btree operators
order them: NaN equal to itself and above every number, intervals by their span, bpchar
without trailing spaces, arrays element by element."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pysync.postgres.types import intervals
from pysync.postgres.types.arrays import array_flatten, array_shape, lower_bounds

from .._ir import elem, is_array
from . import Fn2
from .datetimes import date_usecs


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


def compare_op(op: str, t: str) -> Fn2:
    """The boolean comparison ``op`` on two non-NULL values of type ``t``."""
    if t == "bpchar":
        plain = _PLAIN_CMP[op]
        return lambda a, b: plain(a.rstrip(" "), b.rstrip(" "))
    if is_array(t):
        eq = equality(elem(t))

        def arr_eq(a: list[Any], b: list[Any]) -> bool:
            # Equal elements mean equal dimensions: the bounds differ only if one of the
            # two carries its own (Bounded), so plain arrays skip computing them.
            if not _array_eq(a, b, eq):
                return False
            return (type(a) is list and type(b) is list) or lower_bounds(a) == lower_bounds(b)

        if op == "=":
            return arr_eq
        if op == "<>":
            return lambda a, b: not arr_eq(a, b)
        array_cmp = three_way(t)
        test = _CMP_FROM_SIGN[op]
        return lambda a, b: test(array_cmp(a, b))
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
    """A key ordering values of ``t`` as Postgres does, or None where Python's order is."""
    if is_array(t):
        return functools.cmp_to_key(three_way(t))
    if t == "bpchar":
        return _rstrip
    cmp = cmp_function(t)
    if cmp is None:
        return None
    return functools.cmp_to_key(cmp)


def _rstrip(v: str) -> str:
    return v.rstrip(" ")


def three_way(t: str) -> Callable[[Any, Any], int]:
    """btree's comparison support function for ``t`` (-1, 0 or 1)."""
    if is_array(t):
        element = three_way(elem(t))
        return lambda a, b: _array_cmp(a, b, element)
    cmp = cmp_function(t)
    if cmp is not None:
        return cmp
    if t == "bpchar":
        return lambda a, b: _plain_cmp(a.rstrip(" "), b.rstrip(" "))
    return _plain_cmp


def _plain_cmp(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _array_cmp(a: list[Any], b: list[Any], cmp: Callable[[Any, Any], int]) -> int:
    """array_cmp: element by element in storage order (NULL equal to NULL, above any
    value), then the shorter array first, then fewer dimensions, then smaller ones, then
    smaller lower bounds."""
    fa, fb = array_flatten(a), array_flatten(b)
    for x, y in zip(fa, fb, strict=False):
        if x is None or y is None:
            if x is None and y is None:
                continue
            return 1 if x is None else -1
        c = cmp(x, y)
        if c:
            return c
    if len(fa) != len(fb):
        return -1 if len(fa) < len(fb) else 1
    sa, sb = array_shape(a), array_shape(b)
    if len(sa) != len(sb):
        return -1 if len(sa) < len(sb) else 1
    return _plain_cmp(sa, sb) or _plain_cmp(lower_bounds(a), lower_bounds(b))


def date_timestamp_compare(op: str, t: str, date_left: bool) -> Fn2:
    """``op`` between a date and a timestamp(tz) ``t`` (``date_left``: the date is the left
    operand). Postgres' cross-type operators place a date beyond the timestamp range
    after (before) every finite timestamp, inside +-infinity: exactly where its unchecked
    microseconds fall (a cast to timestamp would fail past 294276 AD)."""
    cmp = compare_op(op, t)
    usecs = date_usecs
    if date_left:
        return lambda a, b: cmp(usecs(a), b)
    return lambda a, b: cmp(a, usecs(b))
