"""Per-shape conversion of replicated changes into Electric log entries.

Follows Electric (protocol reference section 5): move-in / move-out for WHERE shapes,
primary-key changes as delete + insert, ``replica`` modes, column projection, keys.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from pysync.postgres.pgoutput import UNCHANGED_TOAST, Relation
from pysync.shapes.definition import Shape
from pysync.shapes.subqueries.tags import Tagger

log = logging.getLogger(__name__)

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


def literal(evaluate: Callable[[Row], bool | None], negated: bool) -> Callable[[Row], bool]:
    """Is a DNF literal TRUE for the row: the leaf TRUE (or FALSE when negated)? A leaf
    Postgres would fail on raises WhereRuntimeError: the shape's snapshot query would fail
    on that row too, so the collector invalidates the shape (its refetch gets the error)
    rather than keep or drop the row on a guess."""
    want = not negated

    def is_true(row: Row) -> bool:
        return evaluate(row) is want

    return is_true


def tagger(shape: Shape, layout: Sequence[str], views: Sequence[Any], handle: str) -> Tagger:
    """The Tagger of a shape with ``IN (SELECT ...)`` for rows in ``layout``."""
    where: Any = shape.where
    plan = where.plan
    position = {name: i for i, name in enumerate(layout)}
    literals = [literal(where.bind_node(p.node, layout, views), p.negated) for p in plan.positions]
    slots = [
        (p.columns, tuple(position[c] for c in p.columns)) if p.dependency is not None else None
        for p in plan.positions
    ]
    return Tagger(handle, plan.disjuncts, literals, slots)


class MissingValues(Exception):
    """A change lacks values the shape needs: its table is not ``REPLICA IDENTITY FULL``,
    so an update or delete did not carry the old row, or an unchanged TOASTed value.
    The shape cannot tell what its clients should see: it resyncs (never a guess)."""


def cannot_process(handle: str, table: str, exc: Exception) -> str:
    """Why a shape that failed on a change is invalidated, logged once: the exception's
    type, not its text, which may hold the row's values (those only at DEBUG)."""
    if isinstance(exc, MissingValues):
        reason = str(exc)
    else:
        reason = f"a change could not be processed ({type(exc).__name__})"
    log.warning("shape %s (%s) cannot process a change: %s; it resyncs", handle, table, reason)
    log.debug("shape %s failed on a change", handle, exc_info=exc)
    return reason


class Needs:
    """The columns (positions in one relation layout) a shape reads of a change's rows:
    checked only for updates and deletes of a table that is not ``REPLICA IDENTITY FULL``."""

    __slots__ = ("reads", "selected")

    def __init__(self, shape: Shape, layout: Sequence[str]) -> None:
        position = {name: i for i, name in enumerate(layout)}
        where: Any = shape.where
        reads = {position[c] for c in where.columns} if where is not None else set()
        reads.update(position[c] for c in shape.pk)
        self.selected = frozenset(position[c] for c in shape.columns)
        if shape.definition.replica == "full":
            reads |= self.selected
        self.reads = frozenset(reads)
        """Values both rows must have: the clause's (move-in, move-out), the key's, and
        with replica=full every selected one (whole rows, ``old_value``)."""

    def check(self, op: str, new: Row | None, old: Row | None, relation: Relation) -> None:
        """Raise MissingValues when the change lacks a value the shape needs."""
        if op == "insert":
            return
        # The old row holds the replica identity's columns only; without one (an update
        # that kept them) they are as in the new row.
        known = {i for i, column in enumerate(relation.columns) if column.flags & 1}
        table = f"{relation.namespace}.{relation.name} is not REPLICA IDENTITY FULL"
        if not self.reads <= known:
            raise MissingValues(f"{table}: its {op}s do not carry the old row")
        if op == "delete":
            return
        assert new is not None
        if any(new[i] is UNCHANGED_TOAST for i in self.reads) or (
            # the key changed: the row is inserted under its new key, whole
            old is not None and any(new[i] is UNCHANGED_TOAST for i in self.selected)
        ):
            raise MissingValues(f"{table}: its updates do not carry unchanged TOASTed values")


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
        self,
        op: str,
        new: Row | None,
        old: Row | None,
        new_match: bool,
        old_match: bool,
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
            insert = self._entry(
                "insert", new, {**headers, "op_position": headers["op_position"] + 1}
            )
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
_projections: weakref.WeakValueDictionary[tuple[Any, ...], Projection] = (
    weakref.WeakValueDictionary()
)


def projection_for(shape: Shape, layout: Sequence[str]) -> Projection:
    key = (
        shape.table.schema,
        shape.table.name,
        tuple(layout),
        shape.columns,
        shape.pk,
        shape.definition.replica,
    )
    projection = _projections.get(key)
    if projection is None:
        projection = _projections[key] = Projection(shape, layout)
    return projection


class ShapeConverter:
    """One shape's view of changes in one relation layout: which rows match its WHERE
    clause (``matches``), and the shared projection that turns a change into entries."""

    __slots__ = ("projection", "matches", "needs")

    def __init__(self, shape: Shape, layout: Sequence[str]) -> None:
        self.projection = projection_for(shape, layout)
        self.needs = Needs(shape, layout)
        self.matches: Callable[[Row], bool | None] | None = (
            # A row Postgres would fail on raises: see ``literal``.
            shape.where.bind(layout) if shape.where is not None else None  # type: ignore[attr-defined]
        )

    def convert(
        self, op: str, new: Row | None, old: Row | None, headers: dict[str, Any]
    ) -> list[Entry]:
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


class TaggedConverter:
    """Changes of a shape with ``IN (SELECT ...)``: rows are in the shape by the DNF of its
    clause evaluated against ``views``, and carry ``tags``, ``removed_tags`` and
    ``active_conditions`` as Electric sends them (``log_items.ex``). Its entries carry
    per-shape headers, so it has a projection of its own and shares nothing."""

    def __init__(
        self, shape: Shape, layout: Sequence[str], views: Sequence[Any], handle: str
    ) -> None:
        self.projection = projection = Projection(shape, layout)
        self.needs = Needs(shape, layout)
        self.tagger = tagger(shape, layout, views, handle)
        self._meta = self.tagger.meta
        self._entry = projection._entry
        self._delete = projection._delete
        where: Any = shape.where
        position = {name: i for i, name in enumerate(layout)}
        self.read_idx = tuple(position[c] for c in where.columns)
        """The columns the clause reads: an update that changes none of them keeps the
        row's tags and conditions."""

    def convert(
        self, op: str, new: Row | None, old: Row | None, headers: dict[str, Any]
    ) -> list[Entry]:
        projection = self.projection
        if op == "insert":
            assert new is not None
            included, tags, active = self._meta(new)
            return (
                [self._tagged(self._entry("insert", new, headers), tags, active)]
                if included
                else []
            )
        if op == "delete":
            assert old is not None
            included, tags, active = self._meta(old)
            return [self._tagged(self._delete(old, headers), tags, active)] if included else []
        assert new is not None
        if old is None:
            old = new  # no old row (not REPLICA IDENTITY FULL): as if the clause did not change
        elif UNCHANGED_TOAST in new:
            new = [o if v is UNCHANGED_TOAST else v for v, o in zip(new, old, strict=True)]
        new_in, new_tags, new_active = self._meta(new)
        if all(old[i] == new[i] for i in self.read_idx):
            old_in, old_tags, old_active = new_in, new_tags, new_active
        else:
            old_in, old_tags, old_active = self._meta(old)
        if not new_in:
            return (
                [self._tagged(self._delete(old, headers), old_tags, old_active)] if old_in else []
            )
        if not old_in:
            return [self._tagged(self._entry("insert", new, headers), new_tags, new_active)]
        removed = [t for t in old_tags if t not in new_tags]
        old_key = [old[i] for i in projection.pk_idx]
        new_key = [new[i] for i in projection.pk_idx]
        if old_key != new_key:
            delete = self._tagged(self._delete(old, headers), new_tags + removed, new_active)
            insert = self._tagged(
                self._entry("insert", new, {**headers, "op_position": headers["op_position"] + 1}),
                new_tags,
                new_active,
            )
            delete["headers"]["key_change_to"] = row_key(projection.prefix, new_key)
            insert["headers"]["key_change_from"] = delete["key"]
            return [delete, insert]
        entries = projection._update(new, old, True, True, headers)
        if entries:
            entry = entries[0]
        elif removed or new_active != old_active:
            # nothing the shape selects changed, but why the row is in it did
            entry = {
                "key": row_key(projection.prefix, new_key),
                "value": {
                    name: new[i]
                    for name, i in zip(projection.pk_names, projection.pk_idx, strict=True)
                },
                "headers": {"operation": "update", "relation": projection.relation, **headers},
            }
            if projection.full:
                entry["old_value"] = {}
        else:
            return []
        self._tagged(entry, new_tags, new_active)
        entry["headers"]["removed_tags"] = removed
        return [entry]

    @staticmethod
    def _tagged(entry: Entry, tags: list[str], active: list[bool]) -> Entry:
        headers = entry["headers"]
        headers["tags"] = tags
        headers["active_conditions"] = active
        return entry


Converter = ShapeConverter | TaggedConverter
