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
