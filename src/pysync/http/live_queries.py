"""The queries of live requests, each shape's part parsed once (the live path's cache).

A subscriber's live requests repeat its shape's params (``table``, ``where``,
``params[n]``, ``columns``, ``replica`` ...) and change only ``offset``, ``handle``,
``cursor`` (and ``live``); parsing the shape's part (the table's name, the definition) is
most of the CPU of taking a live request. So the shape's part, as the raw bytes of its
pairs, keys a bounded LRU of what the full parse made of it: the definition and the
few flags of a request that are not the shape's (``live_sse``, ...). The changing params
and the secret are decoded and checked for every request, by the same steps as the
app's (``steps.authorise``, ``steps.parse``).

Only a query whose full parse succeeded fills an entry (so the key is never read as
anything but a dictionary key); a name is told changing or not as decoded (``off%73et``
is an offset), as the full parse reads it. The cache holds definitions, not shapes: a
shape deleted and made again under the same definition is found anew
(``ShapeSource.known``) by the next request.
"""

from __future__ import annotations

from collections import OrderedDict
from urllib.parse import parse_qsl, unquote

from pysync.http import steps
from pysync.http.params import ShapeRequest
from pysync.shapes.definition import ShapeDefinition

CHANGING = frozenset({b"offset", b"handle", b"cursor", b"live", b"secret", b"api_secret"})
"""Params decoded for each request: not part of the key."""
CHANGING_NAMES = frozenset(name.decode() for name in CHANGING)
FLAGS = ("live_sse", "experimental_live_sse", "experimental_compaction")
"""Params of a request (not its shape's) that parsing reads: kept with the entry."""
MAX_KEY = 4096
"""Bytes of the shape's part beyond which a query is not cached (bounds the memory)."""


class LiveQueries:
    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[ShapeDefinition, dict[str, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def parse(self, query: bytes, secret: str | None) -> ShapeRequest | None:
        """``query``'s request, as ``steps.authorise`` and ``steps.validate`` make it;
        None for a subset request. Raises their ``ShapeAPIError``."""
        shape: list[bytes] = []
        changing: dict[str, str] = {}
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            if name in CHANGING:
                changing[name.decode()] = _decoded(value)
            elif b"%" in name or b"+" in name:  # ``params%5B1%5D``, as browsers send it
                decoded = _decoded(name)
                if decoded in CHANGING_NAMES:  # ``off%73et`` is an offset too
                    changing[decoded] = _decoded(value)
                else:
                    shape.append(pair)
            elif pair:
                shape.append(pair)
        key = b"&".join(shape)
        if len(key) > MAX_KEY:
            return self._full(query, secret, None)
        entry = self._entries.get(key)
        if entry is None:
            return self._full(query, secret, key)
        self._entries.move_to_end(key)
        steps.authorise(changing, secret)
        definition, flags = entry
        parsed = steps.parse({**flags, **changing}, shape_from_params=False)
        parsed.definition = definition
        return parsed

    def _full(self, query: bytes, secret: str | None, key: bytes | None) -> ShapeRequest | None:
        """The app's parse; its definition kept under ``key`` (unless None)."""
        # As Starlette's QueryParams (the last of repeated keys wins).
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        steps.authorise(params, secret)
        parsed, subset = steps.validate(params)
        if subset is not None:
            return None
        if key is not None and parsed.definition is not None:
            flags = {name: params[name] for name in FLAGS if name in params}
            self._entries[key] = (parsed.definition, flags)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return parsed


def _decoded(text: bytes) -> str:
    """A name or value as ``parse_qsl`` decodes it (of the query read as latin-1)."""
    if b"%" not in text and b"+" not in text:
        return text.decode("latin-1")  # what unquote leaves it (most are plain)
    return unquote(text.decode("latin-1").replace("+", " "))
