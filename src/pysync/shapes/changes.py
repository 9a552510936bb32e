"""Per-shape conversion of replicated changes into Electric log entries.

Follows Electric (protocol reference section 5): move-in / move-out for WHERE shapes,
primary-key changes as delete + insert, ``replica`` modes, column projection, keys.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from pysync.postgres.pgoutput import UNCHANGED_TOAST
from pysync.shapes.definition import Shape
from pysync.shapes.where import WhereRuntimeError

Entry = dict[str, Any]
Row = Sequence[Any]


def relation_prefix(schema: str, table: str) -> str:
    """The ``"schema"."table"`` part of keys (replication-path escaping, see section 5.3)."""
    return f'"{_escape_relation(schema)}"."{_escape_relation(table)}"'


def _escape_relation(name: str) -> str:
    return name.replace("/", "//").replace(".", "..")


def row_key(prefix: str, values: Sequence[str | None]) -> str:
    """``"schema"."table"/"v1"/"v2"``: PK values quoted with ``/`` doubled, NULL as ``_``."""
    parts = [prefix]
    for value in values:
        parts.append("/_" if value is None else '/"' + value.replace("/", "//") + '"')
    return "".join(parts)


def _safe(evaluate: Callable[[Row], bool | None]) -> Callable[[Row], bool | None]:
    """Postgres would raise for the row (overflow, bad input): it does not match."""

    def matches(row: Row) -> bool | None:
        try:
            return evaluate(row)
        except WhereRuntimeError:
            return None

    return matches


class Projection:
    """What a change looks like to every shape with the same table layout, columns and
    replica mode, given whether its new and old rows match the shape: shapes differ only
    in their WHERE clause, so shapes that agree on matching share these entries (the
    collector converts a change once per projection, not once per shape)."""

    __slots__ = ("full", "relation", "prefix", "pk_idx", "pk_names", "selected", "__weakref__")

    def __init__(self, shape: Shape, layout: Sequence[str]) -> None:
        self.full = shape.definition.replica == "full"
        self.relation = [shape.table.schema, shape.table.name]
        self.prefix = relation_prefix(shape.table.schema, shape.table.name)
        position = {name: i for i, name in enumerate(layout)}
        missing = [c for c in shape.columns if c not in position]
        if missing:
            raise KeyError(f"columns {missing} are not in the replicated relation")
        self.pk_idx = tuple(position[c] for c in shape.pk)
        self.pk_names = tuple(shape.pk)
        self.selected = tuple((c, position[c]) for c in shape.columns)

    def convert(
        self, op: str, new: Row | None, old: Row | None, new_match: bool, old_match: bool,
        headers: dict[str, Any],
    ) -> list[Entry]:
        """Entries for one change; ``headers`` holds lsn/op_position/txids (copied per
        entry). Every entry ends with its ``headers`` (the collector adds ``last`` to the
        encoded bytes)."""
        if op == "insert":
            assert new is not None
            return [self._entry("insert", new, headers)] if new_match else []
        if op == "delete":
            assert old is not None
            return [self._delete(old, headers)] if old_match else []
        assert new is not None
        return self._update(new, old, new_match, old_match, headers)

    def _update(
        self, new: Row, old: Row | None, new_match: bool, old_match: bool, headers: dict[str, Any]
    ) -> list[Entry]:
        # Without an old row (no REPLICA IDENTITY FULL) we cannot tell a move-out.
        old_row = old if old is not None else new
        if not new_match:
            return [self._delete(old_row, headers)] if old_match else []
        if not old_match:
            return [self._entry("insert", new, headers)]
        old_key = [old_row[i] for i in self.pk_idx]
        new_key = [new[i] for i in self.pk_idx]
        if old is not None and old_key != new_key:
            delete = self._delete(old_row, headers)
            insert = self._entry("insert", new, {**headers, "op_position": headers["op_position"] + 1})
            new_key_text = row_key(self.prefix, new_key)
            delete["headers"]["key_change_to"] = new_key_text
            insert["headers"]["key_change_from"] = delete["key"]
            return [delete, insert]
        value: dict[str, Any] = {}
        old_value: dict[str, Any] = {}
        changed = False
        full = self.full
        for name, i in self.selected:
            value_new = new[i]
            if value_new is UNCHANGED_TOAST:
                continue
            value_old = old_row[i] if old is not None else UNCHANGED_TOAST
            if value_old != value_new:
                changed = True
                value[name] = value_new
                if full and value_old is not UNCHANGED_TOAST:
                    old_value[name] = value_old
            elif full:
                value[name] = value_new
        if not changed and old is not None:
            return []  # no selected column changed
        for name, i in zip(self.pk_names, self.pk_idx, strict=True):
            value[name] = new[i]
        entry: Entry = {"key": row_key(self.prefix, new_key), "value": value}
        if full:
            entry["old_value"] = old_value
        entry["headers"] = {"operation": "update", "relation": self.relation, **headers}
        return [entry]

    def _entry(self, op: str, row: Row, headers: dict[str, Any]) -> Entry:
        return {
            "key": row_key(self.prefix, [row[i] for i in self.pk_idx]),
            "value": {name: row[i] for name, i in self.selected if row[i] is not UNCHANGED_TOAST},
            "headers": {"operation": op, "relation": self.relation, **headers},
        }

    def _delete(self, old: Row, headers: dict[str, Any]) -> Entry:
        if self.full:
            return self._entry("delete", old, headers)
        return {
            "key": row_key(self.prefix, [old[i] for i in self.pk_idx]),
            "value": {name: old[i] for name, i in zip(self.pk_names, self.pk_idx, strict=True)},
            "headers": {"operation": "delete", "relation": self.relation, **headers},
        }


# Shared by the shapes of one table with the same columns and replica mode (held by
# their converters; gone with the last of them).
_projections: weakref.WeakValueDictionary[tuple[Any, ...], Projection] = weakref.WeakValueDictionary()


def projection_for(shape: Shape, layout: Sequence[str]) -> Projection:
    key = (shape.table.schema, shape.table.name, tuple(layout), shape.columns, shape.pk,
           shape.definition.replica)
    projection = _projections.get(key)
    if projection is None:
        projection = _projections[key] = Projection(shape, layout)
    return projection


class ShapeConverter:
    """One shape's view of changes in one relation layout: which rows match its WHERE
    clause (``matches``), and the shared projection that turns a change into entries."""

    __slots__ = ("projection", "matches")

    def __init__(self, shape: Shape, layout: Sequence[str]) -> None:
        self.projection = projection_for(shape, layout)
        self.matches: Callable[[Row], bool | None] | None = (
            _safe(shape.where.bind(layout)) if shape.where is not None else None  # type: ignore[attr-defined]
        )

    def convert(self, op: str, new: Row | None, old: Row | None, headers: dict[str, Any]) -> list[Entry]:
        """Entries for one change for this shape."""
        new_match, old_match = self.match(op, new, old)
        if not (new_match or old_match):
            return []
        return self.projection.convert(op, new, old, new_match, old_match, headers)

    def match(self, op: str, new: Row | None, old: Row | None) -> tuple[bool, bool]:
        """Whether the change's new and old rows are in the shape."""
        matches = self.matches
        if matches is None:
            return True, True
        if op == "insert":
            return matches(new) is True, False  # type: ignore[arg-type]
        if op == "delete":
            return False, matches(old) is True  # type: ignore[arg-type]
        new_match = matches(new) is True  # type: ignore[arg-type]
        return new_match, (matches(old) is True if old is not None else new_match)
