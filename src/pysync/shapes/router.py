"""Which shapes does a change touch?

Per table, shapes whose clause pins a column to constants (``col = c``, ``col IN (...)``,
or such a term in a top-level AND) are found by a hash lookup on the row's value, and
shapes whose clause bounds a numeric column (``col BETWEEN a AND b``, ``col >= a``...)
by a stabbing query on an interval tree, so routing cost stays flat as shapes grow; the
other shapes are checked one by one (their converter evaluates the clause). An index
only prunes: whatever it cannot decide (a NaN, a value it cannot parse) goes to every
shape it holds, and the clause itself decides.

A shape whose clause is (or ANDs) ``col IN (SELECT ...)`` can be found the same way by
the values of its view of the subquery: those keys change as the view does (``add_key``,
``remove_key``); a key is the column's text.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from pysync.where import RangeIndex

S = TypeVar("S", bound=Hashable)
EqualityIndex = tuple[str, frozenset[object], Callable[[str], object]]
"""(column, keys, key function) from ``Where.equality_index``."""
Index = EqualityIndex | RangeIndex


class _ColumnIndex(Generic[S]):
    def __init__(self, key_fn: Callable[[str], object]) -> None:
        self.key_fn = key_fn
        self.shapes: dict[object, set[S]] = {}


class _Node(Generic[S]):
    """A node of a centered interval tree: the ranges reaching ``center`` (containing it,
    or ending there), by low bound ascending and by high bound descending; those entirely
    below and above it."""

    __slots__ = ("center", "by_low", "by_high", "below", "above")

    def __init__(
        self,
        center: Any,
        here: list[tuple[RangeIndex, S]],
        below: _Node[S] | None,
        above: _Node[S] | None,
    ) -> None:
        self.center = center
        self.by_low = sorted(here, key=lambda item: _low_key(item[0]))
        self.by_high = sorted(here, key=lambda item: _high_key(item[0]), reverse=True)
        self.below = below
        self.above = above


def _low_key(r: RangeIndex) -> tuple[int, Any]:
    return (0, 0) if r.low is None else (1, r.low)


def _high_key(r: RangeIndex) -> tuple[int, Any]:
    return (1, 0) if r.high is None else (0, r.high)


def _empty(r: RangeIndex) -> bool:
    """Contains nothing (``x > 5 AND x < 3``): it never matches, and has no place in a tree."""
    if r.low is None or r.high is None:
        return False
    return r.low > r.high or (r.low == r.high and not (r.low_inclusive and r.high_inclusive))


def _build(items: list[tuple[RangeIndex, S]]) -> _Node[S] | None:
    if not items:
        return None
    points = sorted(p for r, _ in items for p in (r.low, r.high) if p is not None)
    center = points[len(points) // 2]
    below: list[tuple[RangeIndex, S]] = []
    above: list[tuple[RangeIndex, S]] = []
    here: list[tuple[RangeIndex, S]] = []
    for item in items:
        r = item[0]
        # Strictly: a range with an end at the center stays here (the center is one of
        # their ends, so every level keeps at least one range and the recursion ends).
        if r.high is not None and r.high < center:
            below.append(item)
        elif r.low is not None and r.low > center:
            above.append(item)
        else:
            here.append(item)
    return _Node(center, here, _build(below), _build(above))


class _RangeIndex(Generic[S]):
    """Shapes by a range of one column's values. Added shapes wait in a short list that
    is scanned; the tree is rebuilt when that list grows or a shape leaves."""

    def __init__(self, key_fn: Callable[[str], object]) -> None:
        self.key_fn = key_fn
        self.ranges: dict[S, RangeIndex] = {}
        self._tree: _Node[S] | None = None
        self._built = False
        self._pending: list[tuple[RangeIndex, S]] = []

    def add(self, shape: S, r: RangeIndex) -> None:
        self.ranges[shape] = r
        self._pending.append((r, shape))
        if len(self._pending) * len(self._pending) > len(self.ranges) + 64:
            self._built = False

    def remove(self, shape: S) -> None:
        del self.ranges[shape]
        self._built = False

    def stab(self, value: Any, found: set[S]) -> None:
        if not self._built:
            self._tree = _build([(r, s) for s, r in self.ranges.items() if not _empty(r)])
            self._pending = []
            self._built = True
        for r, shape in self._pending:
            if r.contains(value):
                found.add(shape)
        node = self._tree
        while node is not None:
            center = node.center
            if value < center:
                for r, shape in node.by_low:
                    if r.low is not None and r.low > value:
                        break
                    if r.contains(value):
                        found.add(shape)
                node = node.below
            elif value > center:
                for r, shape in node.by_high:
                    if r.high is not None and r.high < value:
                        break
                    if r.contains(value):
                        found.add(shape)
                node = node.above
            else:
                found.update(shape for r, shape in node.by_low if r.contains(value))
                return


class TableRoutes(Generic[S]):
    """The shapes on one table."""

    def __init__(self) -> None:
        self.indexes: dict[str, _ColumnIndex[S]] = {}
        self.ranges: dict[str, _RangeIndex[S]] = {}
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
        if isinstance(index, RangeIndex):
            ranges = self.ranges.get(index.column)
            if ranges is None:
                ranges = self.ranges[index.column] = _RangeIndex(index.key_fn)
            ranges.add(shape, index)
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
        if isinstance(index, RangeIndex):
            ranges = self.ranges[index.column]
            ranges.remove(shape)
            if not ranges.ranges:
                del self.ranges[index.column]
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
        """Shapes that may match the new or the old row (rows in ``layout`` order). The
        set returned may be the index's own: iterate it, do not keep or change it."""
        if not self.indexes and not self.ranges and not self.dynamic:
            return self.scanned
        if layout != self._layout:
            self._layout = layout
            self._positions = {name: i for i, name in enumerate(layout)}
        # The sets the indexes hit, unioned only when there are several: with one index
        # (the common "user_id = $1" shapes) its set is the answer, no copy per change.
        parts: list[set[S]] = []
        positions = self._positions
        for column, by_key in self.dynamic.items():
            i = positions.get(column)
            if i is None:
                continue
            for row in (new, old):
                if row is not None:
                    hits = by_key.get(row[i])
                    if hits:
                        parts.append(hits)
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
                if hits and (not parts or hits is not parts[-1]):
                    parts.append(hits)
        if not self.ranges:
            if self.scanned:
                return self.scanned.union(*parts)
            if len(parts) == 1:
                return parts[0]
            return set().union(*parts) if parts else _NOTHING
        found = self.scanned.union(*parts)
        for column, ranges in self.ranges.items():
            i = positions.get(column)
            if i is None:
                found.update(ranges.ranges)
                continue
            for row in (new, old):
                if row is None:
                    continue
                value = row[i]
                if type(value) is not str:
                    if value is not None:  # unchanged TOAST: undecided
                        found.update(ranges.ranges)
                    continue
                try:
                    ranges.stab(ranges.key_fn(value), found)
                except (ValueError, ArithmeticError, TypeError):
                    found.update(ranges.ranges)  # NaN, unparsable: let the clause decide
        return found


_NOTHING: frozenset[Any] = frozenset()


class MergedRoutes(Generic[S]):
    """The shapes on a partition and those on its partitioned tables, routed as one
    table's (their shapes are distinct: each on one table)."""

    __slots__ = ("parts", "shapes")

    def __init__(self, parts: list[TableRoutes[S]]) -> None:
        self.parts = parts
        self.shapes: dict[S, Index | None] = {}
        for part in parts:
            self.shapes.update(part.shapes)

    def candidates(self, layout: tuple[str, ...], new: Any, old: Any) -> set[S]:
        found: set[S] = set()
        for part in self.parts:
            found.update(part.candidates(layout, new, old))
        return found


def partition_routes(
    tables: dict[tuple[str, str], TableRoutes[S]],
    ancestors: tuple[tuple[str, str], ...],
    routes: TableRoutes[S] | None,
) -> TableRoutes[S] | MergedRoutes[S] | None:
    """The routes of a partition's change: its own table's (``routes``) and those of
    its partitioned ``ancestors``; merged only when more than one has shapes."""
    parts = [routes] if routes is not None else []
    for ancestor in ancestors:
        found = tables.get(ancestor)
        if found is not None:
            parts.append(found)
    if len(parts) > 1:
        return MergedRoutes(parts)
    return parts[0] if parts else None


class Router(Generic[S]):
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], TableRoutes[S]] = {}

    def add(
        self, relation: tuple[str, str], shape: S, index: Index | None, dynamic: str | None = None
    ) -> None:
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
