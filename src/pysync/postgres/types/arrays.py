"""Postgres arrays in text form: (nested) ``list``; a two-dimensional array is a list of lists.

Elements are read by the element type's parser (``Parser``), NULL elements are ``None``.
An array whose lower bounds are not all 1 (``'[0:2]={1,2,3}'``) is a ``Bounded`` list that
carries them; every other array is a plain list (lower bounds 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Parser = Callable[[str], Any]


def parse_array(element: Parser) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return _parse_array_text(text, element)

    return parse


class Bounded(list[Any]):
    """An array with explicit lower bounds, one per dimension (``lower``), not all 1.

    The elements are the list's, as for any array: only subscripts, equality, ordering,
    ``array_out`` and the functions building arrays read the bounds."""

    __slots__ = ("lower",)

    def __init__(self, items: list[Any], lower: tuple[int, ...]) -> None:
        super().__init__(items)
        self.lower = lower

    def __repr__(self) -> str:
        return f"Bounded({list(self)!r}, lower={self.lower!r})"


def lower_bounds(value: list[Any]) -> tuple[int, ...]:
    """The array's lower bounds, one per dimension (none for an empty array)."""
    if isinstance(value, Bounded):
        return value.lower
    return (1,) * len(array_shape(value))


def with_lower(items: list[Any], lower: tuple[int, ...]) -> list[Any]:
    """``items`` as an array with lower bounds ``lower``: a plain list when they are all 1
    (or ``items`` is empty: an empty array has no dimensions)."""
    if not items or all(b == 1 for b in lower):
        return items
    return Bounded(items, lower)


_DIMENSION = re.compile(r"\s*\[\s*([+-]?\d+)\s*(?::\s*([+-]?\d+)\s*)?\]")

# Postgres' int4 range, which array bounds are
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1


def _parse_array_text(text: str, element: Parser) -> list[Any]:
    s = text.strip()
    dims: list[tuple[int, int]] = []
    if s.startswith("["):
        # array_in's dimension decoration: '[l:u]' (or '[u]', lower bound 1) per dimension
        # then '='; the bounds must match the contents.
        pos = 0
        while True:
            match = _DIMENSION.match(s, pos)
            if match is None:
                break
            low, high = match.group(1), match.group(2)
            lower, upper = (1, int(low)) if high is None else (int(low), int(high))
            if not (_INT4_MIN <= lower <= _INT4_MAX and _INT4_MIN <= upper <= _INT4_MAX):
                raise ValueError(f"array bound is out of integer range: {text}")
            if upper < lower:
                raise ValueError(f"upper bound cannot be less than lower bound: {text}")
            if upper - lower + 1 > _INT4_MAX:
                raise ValueError(f"array size exceeds the maximum allowed: {text}")
            dims.append((lower, upper))
            if len(dims) > ARRAY_MAX_DIMENSIONS:
                raise ValueError(
                    f"number of array dimensions ({len(dims)}) exceeds the maximum allowed "
                    f"({ARRAY_MAX_DIMENSIONS})"
                )
            pos = match.end()
        rest = s[pos:].lstrip()
        if not dims or not rest.startswith("="):
            raise ValueError(f"malformed array literal: {text}")
        s = rest[1:].strip()
    if not s.startswith("{"):
        raise ValueError(text)
    result, pos = _parse_array_level(s, 0, element, text, 1)
    if s[pos:].strip():
        raise ValueError(text)
    _check_rectangular(result, text)
    if not dims:
        return result
    if array_shape(result) != tuple(upper - lower + 1 for lower, upper in dims):
        raise ValueError(
            f"malformed array literal: {text} (the dimensions do not match the contents)"
        )
    return with_lower(result, tuple(lower for lower, _ in dims))


ARRAY_MAX_DIMENSIONS = 6
"""Postgres' MAXDIM; it also bounds the recursion here."""


def _parse_array_level(
    s: str, pos: int, element: Parser, text: str, dims: int
) -> tuple[list[Any], int]:
    assert s[pos] == "{"
    if dims > ARRAY_MAX_DIMENSIONS:
        raise ValueError(
            f"number of array dimensions ({dims}) exceeds the maximum allowed "
            f"({ARRAY_MAX_DIMENSIONS})"
        )
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
