"""Tags and active conditions of rows of shapes with ``IN (SELECT ...)``, as Electric's
``SubqueryTags`` and DNF plan make them.

A row carries one tag per disjunct of the clause's DNF (``where._dnf``): its positions'
slots joined with ``/``. A sublink's slot is ``md5(<handle> + <value>)`` of the row's
tested value(s): ``v:<text>`` (``NULL`` for a NULL), or ``col:v:<text>`` per column
concatenated for a row comparison; any other position of the disjunct is ``1``, a
position of another disjunct empty. ``active_conditions`` holds, per position, whether
its literal is TRUE for the row. A move-out names ``(position, hash)`` patterns: clients
set those positions of the matching rows inactive and drop a row no disjunct of which is
still all active; a move-in sets them active again.

The same text comes out of SQL (``querying.row_json_query``) for snapshot and move-in
rows, and out of Python here for replicated changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from itertools import product
from typing import Any

from pysync.shapes.subqueries.views import Key

NULL_SENTINEL = "NULL"
VALUE_PREFIX = "v:"


def namespaced(text: str | None) -> str:
    return NULL_SENTINEL if text is None else VALUE_PREFIX + text


def value_hash(handle: str, columns: Sequence[str], key: Key) -> str:
    """The tag slot of a row whose tested value is ``key``."""
    if len(columns) == 1:
        assert not isinstance(key, tuple)
        raw = namespaced(key)
    else:
        assert isinstance(key, tuple)
        raw = "".join(f"{c}:{namespaced(t)}" for c, t in zip(columns, key, strict=True))
    return hashlib.md5((handle + raw).encode()).hexdigest()


def masks(key: Key) -> list[Key]:
    """``key`` and every variant of it with some parts NULL: the tested values of rows
    whose ``NOT IN`` a value ``key`` can make NULL."""
    if not isinstance(key, tuple):
        return [key, None]
    return [
        tuple(v if keep else None for v, keep in zip(key, choice, strict=True))
        for choice in product((True, False), repeat=len(key))
    ]


Literal = Callable[[Sequence[Any]], bool]


MAX_CACHED = 4096
"""Tag hashes kept per layout (values repeat: a project's todos share one)."""


class Tagger:
    """Tags, active conditions and inclusion of rows in one relation layout."""

    def __init__(
        self,
        handle: str,
        disjuncts: Sequence[Sequence[int]],
        literals: Sequence[Literal],
        slots: Sequence[tuple[tuple[str, ...], tuple[int, ...]] | None],
    ) -> None:
        """``literals``: per position, whether its literal is TRUE for a row; ``slots``: per
        position, the tested columns (names, row indexes) of a sublink, or None."""
        self.handle = handle
        self.disjuncts = [tuple(d) for d in disjuncts]
        self.literals = list(literals)
        self.slots = list(slots)
        width = len(literals)
        self._layout = [[p in set(d) for p in range(width)] for d in self.disjuncts]
        self._hashes: dict[tuple[int, Key], str] = {}
        # the common clause, one sublink alone: one literal, one slot, one tag
        self._single = slots[0][1] if width == 1 and slots[0] is not None else None
        self._single_tags: dict[Key, list[str]] = {}

    def meta(self, row: Sequence[Any]) -> tuple[bool, list[str], list[bool]]:
        """(in the shape, tags, active conditions) of ``row``. The lists may be shared
        between rows: never change them."""
        single = self._single
        if single is not None:
            included = self.literals[0](row)
            key: Key = row[single[0]] if len(single) == 1 else tuple(row[i] for i in single)
            tags = self._single_tags.get(key)
            if tags is None:
                tags = [self._hash(0, key)]
                if len(self._single_tags) < MAX_CACHED:
                    self._single_tags[key] = tags
            return included, tags, _TRUE if included else _FALSE
        active = [literal(row) for literal in self.literals]
        return any(all(active[p] for p in d) for d in self.disjuncts), self.tags(row), active

    def tags(self, row: Sequence[Any]) -> list[str]:
        values: list[str] = []
        for p, slot in enumerate(self.slots):
            if slot is None:
                values.append("1")
                continue
            idx = slot[1]
            key: Key = row[idx[0]] if len(idx) == 1 else tuple(row[i] for i in idx)
            values.append(self._hash(p, key))
        return [
            "/".join(v if inside else "" for v, inside in zip(values, layout, strict=True))
            for layout in self._layout
        ]

    def _hash(self, position: int, key: Key) -> str:
        found = self._hashes.get((position, key))
        if found is None:
            slot = self.slots[position]
            assert slot is not None
            found = value_hash(self.handle, slot[0], key)
            if len(self._hashes) < MAX_CACHED:
                self._hashes[(position, key)] = found
        return found


_TRUE = [True]
_FALSE = [False]


def patterns(
    handle: str, positions: Iterable[tuple[int, Sequence[str]]], keys: Sequence[Key]
) -> list[dict[str, object]]:
    """Move patterns for ``keys`` at every one of ``positions`` (with its tested columns)."""
    return [
        {"pos": p, "value": value_hash(handle, columns, key)}
        for p, columns in positions
        for key in keys
    ]
