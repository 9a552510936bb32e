"""Array operators and functions (``@>``, ``<@``, ``&&``, array_cat, subscripts) and
array_out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pysync.postgres.types import arrays

from .._ir import WhereRuntimeError
from . import Fn2
from .compare import compare_op


def format_array(value: list[Any], out: Callable[[Any], str]) -> str:
    """array_out: elements quoted when needed, NULL unquoted; an array whose lower bounds
    are not all 1 starts with its dimensions (``[0:2]={1,2,3}``)."""
    if isinstance(value, arrays.Bounded):
        shape = arrays.array_shape(value)
        dims = "".join(f"[{low}:{low + n - 1}]" for low, n in zip(value.lower, shape, strict=True))
        return dims + "=" + _format_items(value, out)
    return _format_items(value, out)


def _format_items(value: list[Any], out: Callable[[Any], str]) -> str:
    parts = []
    for v in value:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, list):
            parts.append(_format_items(v, out))
        else:
            s = out(v)
            if s == "" or s.upper() == "NULL" or any(c in s for c in '{},"\\ \t\n\r\v\f'):
                s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(s)
    return "{" + ",".join(parts) + "}"


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


def array_operator(op: str, t: str) -> Fn2:
    """``@>``, ``<@`` or ``&&`` on two arrays of ``t``, elements compared by ``t``'s ``=``."""
    eq = compare_op("=", t)
    if op == "@>":
        return lambda a, b: array_contains(a, b, eq)
    if op == "<@":
        return lambda a, b: array_contains(b, a, eq)
    return lambda a, b: array_overlaps(a, b, eq)


def array_ndims(a: list[Any]) -> int | None:
    shape = arrays.array_shape(a)
    return len(shape) or None


def array_cat(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    """array_cat / anyarray || anyarray (not strict: a NULL array acts as empty). The
    result has the lower bounds of the argument with more dimensions (the first when
    they have as many); the other's element dimensions must match in size and bounds."""
    if a is None:
        return b
    if b is None:
        return a
    sa, sb = arrays.array_shape(a), arrays.array_shape(b)
    if not sa:
        return b
    if not sb:
        return a
    la, lb = arrays.lower_bounds(a), arrays.lower_bounds(b)
    if len(sa) == len(sb):
        if sa[1:] != sb[1:] or la[1:] != lb[1:]:
            raise WhereRuntimeError("cannot concatenate incompatible arrays")
        return arrays.with_lower([*a, *b], la)
    if len(sa) == len(sb) + 1:
        if sa[1:] != sb or la[1:] != lb:
            raise WhereRuntimeError("cannot concatenate incompatible arrays")
        return arrays.with_lower([*a, list(b)], la)
    if len(sb) == len(sa) + 1:
        if sb[1:] != sa or lb[1:] != la:
            raise WhereRuntimeError("cannot concatenate incompatible arrays")
        return arrays.with_lower([list(a), *b], lb)
    raise WhereRuntimeError("cannot concatenate incompatible arrays")


def array_append(a: list[Any] | None, v: Any) -> list[Any]:
    """The result keeps the array's lower bound."""
    if a is None or not a:
        return [v]
    if isinstance(a[0], list):
        raise WhereRuntimeError("argument must be empty or one-dimensional array")
    return arrays.with_lower([*a, v], arrays.lower_bounds(a))


def array_prepend(v: Any, a: list[Any] | None) -> list[Any]:
    """The result keeps the array's lower bound (Postgres readjusts it after prepending)."""
    if a is None or not a:
        return [v]
    if isinstance(a[0], list):
        raise WhereRuntimeError("argument must be empty or one-dimensional array")
    return arrays.with_lower([v, *a], arrays.lower_bounds(a))


def array_subscript(a: list[Any], subs: list[int]) -> Any:
    """a[i][j]...: NULL when out of range (counted from the array's lower bounds) or when
    the subscript count differs from ndims."""
    shape = arrays.array_shape(a)
    if len(subs) != len(shape):
        return None
    v: Any = a
    for i, low in zip(subs, arrays.lower_bounds(a), strict=True):
        if i < low or i - low >= len(v):
            return None
        v = v[i - low]
    return v
