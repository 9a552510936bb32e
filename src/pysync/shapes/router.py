"""Which shapes does a change touch?

Per table, shapes whose clause pins a column to constants (``col = c``, ``col IN (...)``,
or such a term in a top-level AND) are found by a hash lookup on the row's value, so
routing cost stays flat as shapes grow; the other shapes are checked one by one (their
converter evaluates the clause).

A shape whose clause is (or ANDs) ``col IN (SELECT ...)`` can be found the same way by
the values of its view of the subquery: those keys change as the view does (``add_key``,
``remove_key``); a key is the column's text.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

S = TypeVar("S", bound=Hashable)
Index = tuple[str, frozenset[object], Callable[[str], object]]
"""(column, keys, key function) from ``Where.equality_index``."""


class _ColumnIndex(Generic[S]):
    def __init__(self, key_fn: Callable[[str], object]) -> None:
        self.key_fn = key_fn
        self.shapes: dict[object, set[S]] = {}


class TableRoutes(Generic[S]):
    """The shapes on one table."""

    def __init__(self) -> None:
        self.indexes: dict[str, _ColumnIndex[S]] = {}
        self.dynamic: dict[str, dict[str, set[S]]] = {}
        """Column -> text value -> shapes (subquery views)."""
        self.scanned: set[S] = set()
        self.shapes: dict[S, Index | None] = {}
        """Every shape on the table, with its index entry (so removal touches only that)."""
        self._positions: dict[str, int] = {}
        self._layout: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.shapes)

    def add(self, shape: S, index: Index | None, dynamic: str | None = None) -> None:
        self.shapes[shape] = index
        if index is None:
            if dynamic is not None:
                self.dynamic.setdefault(dynamic, {})
            else:
                self.scanned.add(shape)
            return
        column, keys, key_fn = index
        column_index = self.indexes.get(column)
        if column_index is None:
            column_index = self.indexes[column] = _ColumnIndex(key_fn)
        for key in keys:
            column_index.shapes.setdefault(key, set()).add(shape)

    def add_key(self, column: str, key: str, shape: S) -> None:
        self.dynamic.setdefault(column, {}).setdefault(key, set()).add(shape)

    def remove_key(self, column: str, key: str, shape: S) -> None:
        by_key = self.dynamic.get(column)
        if by_key is None:
            return
        group = by_key.get(key)
        if group is not None:
            group.discard(shape)
            if not group:
                del by_key[key]

    def remove(self, shape: S) -> None:
        if shape not in self.shapes:
            return
        index = self.shapes.pop(shape)
        if index is None:
            self.scanned.discard(shape)
            return
        column, keys, _ = index
        by_key = self.indexes[column].shapes
        for key in keys:
            group = by_key.get(key)
            if group is not None:
                group.discard(shape)
                if not group:
                    del by_key[key]

    def candidates(self, layout: tuple[str, ...], new: Any, old: Any) -> set[S] | frozenset[S]:
        """Shapes that may match the new or the old row (rows in ``layout`` order)."""
        if not self.indexes and not self.dynamic:
            return self.scanned
        if layout != self._layout:
            self._layout = layout
            self._positions = {name: i for i, name in enumerate(layout)}
        found = set(self.scanned)
        positions = self._positions
        for column, by_key in self.dynamic.items():
            i = positions.get(column)
            if i is None:
                continue
            for row in (new, old):
                if row is not None:
                    hits = by_key.get(row[i])
                    if hits:
                        found |= hits
        for column, index in self.indexes.items():
            i = positions.get(column)
            if i is None:
                continue
            key_fn = index.key_fn
            lookup = index.shapes.get
            for row in (new, old):
                if row is None:
                    continue
                value = row[i]
                if type(value) is not str:
                    continue
                try:
                    hits = lookup(key_fn(value))
                except (ValueError, ArithmeticError):
                    continue
                if hits:
                    found |= hits
        return found


class Router(Generic[S]):
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], TableRoutes[S]] = {}

    def add(self, relation: tuple[str, str], shape: S, index: Index | None, dynamic: str | None = None) -> None:
        routes = self.tables.get(relation)
        if routes is None:
            routes = self.tables[relation] = TableRoutes()
        routes.add(shape, index, dynamic)

    def remove(self, relation: tuple[str, str], shape: S) -> None:
        routes = self.tables.get(relation)
        if routes is not None:
            routes.remove(shape)
            if not len(routes):
                del self.tables[relation]
