"""A dependency: the rows of one subquery (``SELECT cols FROM table WHERE ...`` of an
``IN (SELECT ...)``), materialised in memory, and the values they select.

It is a shape without a log: it takes the replicated changes of its table (routed like a
shape's), keeps its rows by primary key and counts each value, and tells its dependents'
views (``views.View``) which values appeared or went when a transaction is done.
Dependents with equal subqueries share it.

    SNAPSHOTTING --rows read--> LIVE <--> QUERYING (its own dependencies gained values)
         \\------------------------------> GONE (table truncated or changed, query failed)

A subquery may itself have ``IN (SELECT ...)``: then the dependency is a dependent too.
When a value leaves one of its views, rows that no longer match are dropped in memory;
when values join one, the rows they bring are read again from Postgres (the whole
subquery, at a new snapshot, as at the start), while its table's changes are buffered.
After a snapshot, the transactions it saw are skipped, as a shape's are. A table without
a primary key may hold equal rows: each copy counts.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pysync.postgres.pgoutput import UNCHANGED_TOAST, Relation
from pysync.postgres.snapshot import SnapshotInfo, after_snapshot
from pysync.postgres.transactions import Change
from pysync.shapes.definition import Subquery
from pysync.shapes.subqueries.views import Key, View

log = logging.getLogger(__name__)


_NOT_FULL = "is not REPLICA IDENTITY FULL: a change lacks values the subquery reads"


class DependencyState(enum.Enum):
    SNAPSHOTTING = "snapshotting"
    LIVE = "live"
    QUERYING = "querying"
    GONE = "gone"


class DependencyGone(Exception):
    def __init__(self, reason: str, error: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        """The client's fault that ended it (its clause fails on the rows), if any."""


Row = tuple[str | None, ...]
Buffered = tuple[int, int, list[Change]]
"""(xid, commit LSN, the transaction's changes of this dependency's table)."""


class _Binding:
    """Positions of one relation layout (pgoutput's column order)."""

    def __init__(self, dependency: Dependency, relation: Relation) -> None:
        layout = relation.column_names
        position = {name: i for i, name in enumerate(layout)}
        subquery = dependency.subquery
        self.relation = relation
        self.identity = tuple(position[c] for c in subquery.table.identity)
        self.needed = tuple(position[c] for c in dependency.needed)
        where: Any = subquery.where
        self.evaluate = where.bind(layout, dependency.views) if where is not None else None


class Manager(Protocol):
    """What a dependency asks of ``manager.Subqueries`` (a protocol: the manager imports
    this module)."""

    def changed(self, owner: Dependency) -> None: ...

    def requery(self, dep: Dependency) -> None: ...


class Dependency:
    def __init__(self, subquery: Subquery, manager: Manager, inner: Sequence[Dependency]) -> None:
        self.subquery = subquery
        self.key = subquery.key
        self.manager = manager
        self.state = DependencyState.SNAPSHOTTING
        self.counts: dict[Key, int] = {}
        self.null_keys = 0
        self.rows: dict[Row, Row] = {}
        """Identity -> the needed columns' texts, of every row in the subquery."""
        self.copies: dict[Row, int] | None = None if subquery.table.primary_key else {}
        """Without a primary key a row is identified by all its columns: equal rows."""
        where: Any = subquery.where
        reads = sorted(where.columns - set(subquery.columns)) if where is not None else []
        self.needed: tuple[str, ...] = tuple(subquery.columns) + tuple(reads)
        self.width = len(subquery.columns)
        self.inner = list(inner)
        self.views = [View(dep, self, n, len(dep.subquery.columns)) for n, dep in enumerate(inner)]
        self.negated: dict[int, bool] = where.plan.negated if self.views else {}
        self.layer: int = 1 + max((d.layer for d in inner), default=-1)
        self.dependents: list[View] = []
        """The views dependents hold of this dependency's values."""
        self.last_lsn = 0
        self.snapshot: SnapshotInfo | None = None
        self._filtering = False
        self.buffer: list[Buffered] | None = []
        self._txn: list[Change] = []
        self._flips: dict[Key, bool] = {}
        self._bindings: dict[int, _Binding] = {}
        self._inner_changed = False
        self._txids: set[int] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reason = ""
        self.task: asyncio.Task[None] | None = None
        self._evaluate_stored: Callable[[Sequence[Any]], bool | None] | None = (
            where.bind(self.needed, self.views) if where is not None else None
        )
        for view in self.views:
            view.source.dependents.append(view)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<Dependency {self.subquery.relation} {self.key} {self.state.value}>"

    @property
    def relation(self) -> tuple[str, str]:
        return self.subquery.relation

    @property
    def gone(self) -> bool:
        return self.state is DependencyState.GONE

    # -- transactions -----------------------------------------------------------------

    def accepts(self, xid: int, commit_lsn: int) -> bool:
        if commit_lsn <= self.last_lsn:
            return False  # replayed after a reconnect: already applied
        new, self._filtering = after_snapshot(self.snapshot, xid, commit_lsn, self._filtering)
        return new

    def change(self, change: Change) -> None:
        """One change of the subquery's table in the current transaction."""
        if self.buffer is not None:
            self._txn.append(change)
        else:
            self._apply(change)

    def finish(self, xid: int, commit_lsn: int) -> None:
        """The transaction's changes are all in: apply what the dependencies of this one
        did, then tell the dependents which values changed."""
        self.last_lsn = max(self.last_lsn, commit_lsn)
        if self.buffer is not None:
            if self._txn:
                self.buffer.append((xid, commit_lsn, self._txn))
                self._txn = []
            self._inner_changed = False
            return
        if self._inner_changed:
            self._inner_changed = False
            self._follow_inner(xid)
        self._notify(xid)

    def dependency_changed(self, view: View, xid: int) -> None:
        """Called by an inner dependency's values changing (``View.changed``)."""
        if xid:
            self._txids.add(xid)
        self._inner_changed = True
        self.manager.changed(self)

    def _notify(self, xid: int) -> None:
        flips = self._flips
        if not flips:
            return
        self._flips = {}
        counts = self.counts
        changes = {key: was for key, was in flips.items() if (key in counts) != was}
        if changes:
            for view in list(self.dependents):
                view.changed(changes, xid)

    # -- rows --------------------------------------------------------------------------

    def _binding(self, relation: Relation) -> _Binding:
        binding = self._bindings.get(id(relation))
        if binding is None or binding.relation is not relation:
            binding = self._bindings[id(relation)] = _Binding(self, relation)
        return binding

    def _apply(self, change: Change) -> None:
        b = self._binding(change.relation)
        new: Any = change.new
        old: Any = change.old
        if change.op != "insert" and old is not None:
            identity = tuple(old[i] for i in b.identity)
            if UNCHANGED_TOAST in identity:  # the old row of a table not REPLICA IDENTITY FULL
                raise DependencyGone(f"{self.relation[0]}.{self.relation[1]} {_NOT_FULL}")
            self._remove(identity)
        if change.op == "delete":
            return
        assert new is not None
        # An unchanged TOASTed value the old row did not fill in (not REPLICA IDENTITY FULL).
        if UNCHANGED_TOAST in new and (
            any(new[i] is UNCHANGED_TOAST for i in b.identity)
            or any(new[i] is UNCHANGED_TOAST for i in b.needed)
        ):
            raise DependencyGone(f"{self.relation[0]}.{self.relation[1]} {_NOT_FULL}")
        identity = tuple(new[i] for i in b.identity)
        if old is None and change.op == "update":
            self._remove(identity)
        if self._matches(b.evaluate, new):
            self._put(identity, tuple(new[i] for i in b.needed))

    @staticmethod
    def _matches(
        evaluate: Callable[[Sequence[Any]], bool | None] | None, row: Sequence[Any]
    ) -> bool:
        if evaluate is None:
            return True
        # A row the subquery's clause fails on raises WhereRuntimeError: the dependency's
        # shapes are invalidated (their refetch gets Postgres' error), never a guess.
        return evaluate(row) is True

    def _value(self, row: Row) -> Key:
        return row[0] if self.width == 1 else row[: self.width]

    def _put(self, identity: Row, row: Row) -> None:
        copies = self.copies
        if copies is not None:
            copies[identity] = copies.get(identity, 0) + 1
            self.rows[identity] = row
            self._count(self._value(row))
            return
        old = self.rows.get(identity)
        if old is not None:
            self._uncount(self._value(old))
        self.rows[identity] = row
        self._count(self._value(row))

    def _remove(self, identity: Row) -> None:
        copies = self.copies
        if copies is not None and identity in copies:
            left = copies[identity] - 1
            if left:
                copies[identity] = left
                self._uncount(self._value(self.rows[identity]))
                return
            del copies[identity]
        old = self.rows.pop(identity, None)
        if old is not None:
            self._uncount(self._value(old))

    def _count(self, key: Key) -> None:
        counts = self.counts
        n = counts.get(key, 0)
        if n == 0:
            self._flips.setdefault(key, False)
            if key is None or (isinstance(key, tuple) and None in key):
                self.null_keys += 1
        counts[key] = n + 1

    def _uncount(self, key: Key) -> None:
        counts = self.counts
        n = counts[key] - 1
        if n:
            counts[key] = n
            return
        del counts[key]
        self._flips.setdefault(key, True)
        if key is None or (isinstance(key, tuple) and None in key):
            self.null_keys -= 1

    # -- following inner dependencies ------------------------------------------------------

    def _follow_inner(self, xid: int) -> None:
        """Apply what the inner dependencies did: rows that may leave are checked in
        memory; values that may bring rows make the subquery be read again."""
        leave = False
        enter = False
        for view in self.views:
            added, removed = view.pending()
            negated = self.negated.get(view.number, False)
            shrink, grow = (added, removed) if negated else (removed, added)
            if shrink:
                view.apply(shrink)
                leave = True
            if grow:
                enter = True
        if leave:
            evaluate = self._evaluate_stored
            for identity, row in list(self.rows.items()):
                if not self._matches(evaluate, row):
                    for _ in range(self.copies.pop(identity, 1) if self.copies is not None else 1):
                        self._uncount(self._value(row))
                    del self.rows[identity]
        if enter:
            for view in self.views:
                added, removed = view.pending()
                view.apply(removed if self.negated.get(view.number, False) else added)
            self.manager.requery(self)

    # -- snapshots -------------------------------------------------------------------------

    def start_buffering(self) -> None:
        if self.buffer is None:
            self.buffer = []

    def snapshot_taken(self, info: SnapshotInfo, rows: list[tuple[Row, Row]]) -> None:
        """The subquery's rows at ``info`` (read with the views as they are now): they
        replace the rows, then the buffered transactions the snapshot did not see are
        applied; dependents hear of every value that changed."""
        buffer, self.buffer = self.buffer or [], None
        old_counts = self.counts
        self.rows = {}
        if self.copies is not None:
            self.copies = {}
        self.counts = {}
        self.null_keys = 0
        self._flips = {}
        for identity, row in rows:
            self._put(identity, row)
        for xid, _, changes in buffer:
            if not info.visible(xid):
                for change in changes:
                    self._apply(change)
        self.snapshot = info
        self._filtering = True
        new_counts = self.counts
        self._flips = {key: True for key in old_counts if key not in new_counts}
        self._flips.update({key: False for key in new_counts if key not in old_counts})
        first = self.state is DependencyState.SNAPSHOTTING
        self.state = DependencyState.LIVE
        if first:
            self._flips = {}
            if not self.ready.done():
                self.ready.set_result(None)
        txid = max(self._txids, default=0)
        self._txids = set()
        self._notify(txid)
        if any(view.pending() != ({}, {}) for view in self.views):
            self._follow_inner(txid)
            self._notify(txid)

    def invalidate(self, reason: str, error: BaseException | None = None) -> None:
        if self.state is DependencyState.GONE:
            return
        self.state = DependencyState.GONE
        self.reason = reason
        self.buffer = None
        if not self.ready.done():
            self.ready.set_exception(DependencyGone(reason, error))
            self.ready.exception()  # retrieved: nobody may wait for it
        if self.task is not None:
            self.task.cancel()
        for view in self.views:
            source: Any = view.source
            if view in source.dependents:
                source.dependents.remove(view)
