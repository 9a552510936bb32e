"""JSON from a client (request bodies, ``subset__params``), with a nesting limit.

msgspec decodes recursively and raises RecursionError near Python's recursion limit
(about 1,000 levels of ``[``): left alone that is a 500 with a traceback. Here any body
nested deeper than MAX_DEPTH is refused with JSONTooDeep, a ValueError the caller turns
into a 400.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import msgspec

MAX_DEPTH = 100
"""The deepest nesting of arrays and objects accepted."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"', re.S)
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


class JSONTooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_DEPTH} levels")


def decode_json(data: bytes | bytearray | memoryview | str) -> Any:
    """``msgspec.json.decode(data)``; JSONTooDeep for nesting beyond MAX_DEPTH (other
    malformed input raises msgspec.DecodeError, as msgspec does)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        raise JSONTooDeep() from None
    # Cheap bound first: a body with few brackets cannot be deep.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(raw) > MAX_DEPTH:
        raise JSONTooDeep()
    return value


def _depth(raw: bytes) -> int:
    """The nesting depth of valid JSON (its strings are terminated, so the scan is linear):
    the brackets outside strings as +1/-1, the highest running sum."""
    brackets = _STRING.sub(b"", raw).translate(_OPEN_CLOSE, _NOT_BRACKET)
    return max(accumulate(memoryview(brackets).cast("b")), default=0)
