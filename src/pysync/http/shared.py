"""Responses built once and sent to every request that asks the same.

When a commit wakes a thousand long-polls of a shape at the same offset, all of them get
the same bytes: the body (the commit's entries and the up-to-date message) and every
header except the few that depend on the request (``x-request-id``, the CORS origin,
``electric-cursor``). Those responses are built once per (shape, request kind, offsets)
and kept, a few per shape, for as long as the shape lives: a shape's log between two
offsets never changes, so a kept response never goes stale. The same holds for the
encoded events that SSE subscribers of a shape are sent.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

from starlette.responses import Response

from pysync.shapes.consumer import ShapeConsumer

RawHeaders = list[tuple[bytes, bytes]]
T = TypeVar("T")

PER_SHAPE = 4
"""Kept per shape: clients of one shape are nearly always at one or two offsets."""


class SharedResponses(Generic[T]):
    """A few built values per shape, by key; dropped with the shape."""

    def __init__(self) -> None:
        self._by_shape: WeakKeyDictionary[ShapeConsumer, dict[Hashable, T]] = WeakKeyDictionary()

    def get(self, consumer: ShapeConsumer, key: Hashable) -> T | None:
        kept = self._by_shape.get(consumer)
        return None if kept is None else kept.get(key)

    def put(self, consumer: ShapeConsumer, key: Hashable, value: T) -> None:
        kept = self._by_shape.get(consumer)
        if kept is None:
            kept = self._by_shape[consumer] = {}
        elif len(kept) >= PER_SHAPE:
            del kept[next(iter(kept))]  # the oldest: dicts keep insertion order
        kept[key] = value


class Prebuilt(Response):
    """A response whose body and headers are bytes already: nothing is encoded per
    request (``raw_headers`` is the shared part plus the request's own headers)."""

    def __init__(self, body: bytes, raw_headers: RawHeaders, status_code: int = 200) -> None:
        # Response.__init__ would render the body and encode every header again.
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


def encode_headers(headers: dict[str, str]) -> RawHeaders:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
