"""Postgres arrays in text form: (nested) ``list``; a two-dimensional array is a list of lists.

Elements are read by the element type's parser (``Parser``), NULL elements are ``None``.
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
        s = s[eq + 1 :].strip()
    if not s.startswith("{"):
        raise ValueError(text)
    result, pos = _parse_array_level(s, 0, element, text, 1)
    if s[pos:].strip():
        raise ValueError(text)
    _check_rectangular(result, text)
    return result


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
