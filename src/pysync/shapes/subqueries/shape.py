"""A served shape whose WHERE has ``IN (SELECT ...)``: its views of its dependencies, and
how their changes reach its log as Electric's move-in / move-out.

The shape's rows are always "the table's rows matching the clause with the shape's
views", at the shape's position in the stream. Its views follow the dependencies at
transaction boundaries:

* Values that can only take rows out (a value left an ``IN``, joined a ``NOT IN``):
  at the end of the transaction a ``move-out`` event names the tag patterns of those
  values; clients drop the rows no disjunct keeps. Nothing is queried.
* Values that can bring rows in: a *move-in*. The shape's transactions are buffered
  from here on, and the rows matching the clause with the new views but not with the old
  ones are read at a new snapshot S. Once every transaction S can have seen has arrived
  (the stream passed the WAL position read with S: a transaction commits, durably,
  before it becomes visible), the buffer is split: the transactions S saw go first, converted with the old views (their effect on
  the new rows is in the query's result), then the ``move-in`` event, the rows, a
  ``snapshot-end`` for S, and the rest converted with the new views. Two transactions
  writing one row are seen by S in commit order (the second waited for the first's
  lock), so a split in commit order is right for every row; when S saw a later
  transaction but not an earlier one, or not one already in the log, the query runs
  again at a newer snapshot.

Dependency changes that arrive meanwhile wait in the views (``views.View.diff``) and are
applied after the splice: move-outs first, then the next move-in.

"Commits durably before it becomes visible" is ``synchronous_commit`` (Postgres' default)
of the writers: with it off, a transaction can be visible before its commit record is
written, and could arrive after the splice it belonged before.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from pysync.postgres.snapshot import SnapshotInfo
from pysync.postgres.transactions import Change
from pysync.shapes.changes import Entry, TaggedConverter
from pysync.shapes.querying import Tagging
from pysync.shapes.rekey import fold, keys_changed, needs_fold
from pysync.shapes.snapshotter import snapshot_end
from pysync.shapes.subqueries.dependency import Dependency
from pysync.shapes.subqueries.tags import masks, patterns
from pysync.shapes.subqueries.views import Key, Reverted, View

if TYPE_CHECKING:
    from pysync.shapes.consumer import Appender, ShapeConsumer

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

MAX_BUFFERED = 10_000
"""Transactions a shape buffers while a move-in query runs; past this the shape is
dropped (clients refetch) rather than hold memory without bound (Electric: 1,000)."""
MAX_SCAN = 100_000
"""Values scanned to work out the move-in patterns of a ``NOT IN`` row comparison."""


class Phase(enum.Enum):
    WAITING = "waiting"
    """For its dependencies and its snapshot: transactions are buffered."""
    STEADY = "steady"
    MOVING = "moving"
    """A move-in query runs or waits to be spliced: transactions are buffered."""


class Held(msgspec.Struct):
    """A buffered transaction's changes of the shape's table."""

    xid: int
    commit_lsn: int
    changes: list[tuple[int, Change]]
    """(op position, change)."""


class Move:
    """A move-in being queried and spliced."""

    def __init__(
        self,
        old: dict[int, dict[Key, bool]],
        before: list[Any],
        events: list[dict[str, Any]],
        seen: tuple[int, ...],
        tx: int,
    ) -> None:
        self.old = old
        """Per dependency number, the moved keys' presence before the move."""
        self.before = before
        self.events = events
        self.seen = seen
        """Transactions already in the log: the query's snapshot must see them."""
        self.tx = tx
        """Commit LSN of the last transaction in the log when the move began."""
        self.info: SnapshotInfo | None = None
        self.rows: list[bytes] = []
        self.bound: int | None = None
        """Once known: every transaction the snapshot can see commits before this LSN."""
        self.task: asyncio.Task[None] | None = None
        self.attempts = 0


class Manager(Protocol):
    """What a subquery shape asks of ``manager.Subqueries`` (a protocol: the manager
    imports this module)."""

    @property
    def position(self) -> int: ...

    @property
    def last_tx(self) -> int: ...

    def recent(self) -> tuple[int, ...]: ...

    def changed(self, owner: SubqueryShape) -> None: ...

    def held(self, shape: SubqueryShape) -> None: ...

    def invalidate(self, shape: SubqueryShape, reason: str) -> None: ...

    def index_add(self, shape: SubqueryShape, number: int, keys: Any) -> None: ...

    def index_remove(self, shape: SubqueryShape, number: int, keys: Any) -> None: ...

    def query_move_in(self, shape: SubqueryShape, retry: bool = False) -> None: ...

    def wait_for_position(self, shape: SubqueryShape) -> None: ...

    def moved(self, shape: SubqueryShape) -> None: ...

    @property
    def appender(self) -> Appender: ...


class SubqueryShape:
    def __init__(
        self, consumer: ShapeConsumer, manager: Manager, deps: Sequence[Dependency]
    ) -> None:
        self.consumer = consumer
        self.manager = manager
        self.shape = consumer.shape
        where: Any = self.shape.where
        self.plan = where.plan
        self.deps = list(deps)
        self.views = [View(dep, self, n, len(dep.subquery.columns)) for n, dep in enumerate(deps)]
        for view in self.views:
            view.source.dependents.append(view)  # type: ignore[attr-defined]
        self.positions = {
            n: [(p, self.plan.positions[p].columns) for p in self.plan.dependency_positions(n)]
            for n in range(len(deps))
        }
        self.phase = Phase.WAITING
        self.held: list[Held] = []
        self.move: Move | None = None
        self.txids: set[int] = set()
        """Transactions whose dependency changes the views have not applied yet."""
        self.seen: tuple[int, ...] = ()
        """Transactions delivered before the snapshot began: it must see them."""
        self.closed = False
        self.index_column: str | None = None
        """The column the router finds the shape by (its view's values), if any."""
        self.index_dependency = -1
        self.routes: Any = None
        self.indexed: set[str] = set()

    def __repr__(self) -> str:
        return f"<SubqueryShape {self.consumer.handle} {self.phase.value}>"

    @property
    def handle(self) -> str:
        return self.consumer.handle

    @property
    def tagging(self) -> Tagging:
        return Tagging(self.handle, self.views)

    def converter(
        self, layout: Sequence[str], views: Sequence[Any] | None = None
    ) -> TaggedConverter:
        return TaggedConverter(
            self.shape, layout, self.views if views is None else views, self.handle
        )

    # -- the stream -------------------------------------------------------------------

    def takes(self, xid: int, commit_lsn: int, op: int, change: Change) -> bool:
        """A change of a transaction new to the shape, before the collector converts it:
        converted now while STEADY; WAITING (for its snapshot) or MOVING (a move-in is
        queried), held and converted when the snapshot or the move-in is spliced."""
        if self.phase is Phase.STEADY:
            return True
        self.hold(xid, commit_lsn, op, change)
        return False

    def hold(self, xid: int, commit_lsn: int, op: int, change: Change) -> None:
        held = self.held
        if held and held[-1].commit_lsn == commit_lsn:
            held[-1].changes.append((op, change))
        else:
            if self.phase is Phase.MOVING and len(held) >= MAX_BUFFERED:
                self.manager.invalidate(self, "too many transactions while a move-in query ran")
                return
            held.append(Held(xid, commit_lsn, [(op, change)]))
            self.manager.held(self)  # its last_lsn moves on once the whole transaction is in

    def dependency_changed(self, view: View, xid: int) -> None:
        if xid:
            self.txids.add(xid)
        self.manager.changed(self)

    def dependency_gone(self, reason: str, error: BaseException | None = None) -> None:
        """``error``: the clause's fault, which a shape still snapshotting fails with (the
        client's request gets it, not a 409 to refetch the same failure)."""
        if error is not None:
            self.consumer.fail(error)
        self.manager.invalidate(self, f"a subquery's shape went away: {reason}")

    # -- the initial snapshot -----------------------------------------------------------

    def start_snapshot(self) -> Tagging:
        """The views follow the dependencies as they are now; from here on the snapshot
        reads them so, and later changes wait for it."""
        for view in self.views:
            view.follow()
            self.manager.index_add(self, view.number, view.keys())
        self.txids.clear()
        self.seen = self.manager.recent()
        return self.tagging

    def snapshot_taken(self, info: SnapshotInfo) -> None:
        consumer = self.consumer
        held, self.held = self.held, []
        consumer.snapshot = info
        filtering = True
        for txn in held:
            if info.visible(txn.xid):
                continue
            if info.started_after(txn.xid):
                filtering = False
            self._append_txn(txn, None)
        consumer.snapshot_taken_held(filtering)
        self.phase = Phase.STEADY
        self.drain(self.manager.last_tx)

    # -- dependency changes -------------------------------------------------------------------

    def drain(self, tx: int) -> None:
        """Apply what the dependencies did: move-outs now, move-ins by a query."""
        if self.phase is not Phase.STEADY or self.closed:
            return
        txids = sorted(self.txids)
        self.txids = set()
        events: list[dict[str, Any]] = []
        grow: dict[int, dict[Key, bool]] = {}
        for view in self.views:
            added, removed = view.pending()
            if not added and not removed:
                continue
            negated = self.plan.negated.get(view.number, False)
            shrink, enter = (added, removed) if negated else (removed, added)
            if shrink:
                if negated:
                    if any(_has_null(k) for k in shrink):
                        self.manager.invalidate(
                            self, "a NULL joined the values of a NOT IN subquery"
                        )
                        return
                    keys = [m for k in shrink for m in masks(k)]
                else:
                    keys = [k for k in shrink if not _has_null(k)]
                view.apply(shrink)
                self.manager.index_remove(self, view.number, shrink)
                if keys:
                    events.append(self._event("move-out", view.number, _unique(keys), txids))
            if enter:
                grow[view.number] = enter
        if events:
            self.manager.appender.after_log(self.consumer, tx, [_encode(e) for e in events])
        if grow:
            self._start_move(grow, txids, tx)

    def _start_move(self, grow: dict[int, dict[Key, bool]], txids: list[int], tx: int) -> None:
        events = []
        for number, keys in grow.items():
            view = self.views[number]
            negated = self.plan.negated.get(number, False)
            if negated:
                if any(_has_null(k) for k in keys):
                    self.manager.invalidate(self, "a NULL left the values of a NOT IN subquery")
                    return
                view.apply(keys)
                found = self._reactivated(view, list(keys))
                if found is None:
                    self.manager.invalidate(self, "a NOT IN subquery moved too many values at once")
                    return
            else:
                view.apply(keys)
                found = [k for k in keys if not _has_null(k)]
            self.manager.index_add(self, number, keys)
            if found:
                events.append(self._event("move-in", number, _unique(found), txids))
        before = [Reverted(v, grow.get(v.number, {})) for v in self.views]
        self.move = Move(grow, before, events, self.manager.recent(), tx)
        self.phase = Phase.MOVING
        self.manager.query_move_in(self)

    def _reactivated(self, view: View, removed: list[Key]) -> list[Key] | None:
        """Of the NULL masks of values that left a NOT IN, those no remaining value keeps
        NULL: rows with that tested value have the position TRUE again."""
        found: list[Key] = []
        if view.width == 1:
            for key in removed:
                if not view.contains(None):
                    found.append(key)
                if not view.nonempty():
                    found.append(None)
            return found
        remaining = view.texts()
        if len(remaining) * len(removed) > MAX_SCAN:
            return None
        for key in removed:
            for mask in masks(key):
                assert isinstance(mask, tuple)
                if not any(_compatible(mask, k) for k in remaining):
                    found.append(mask)
        return found

    def _event(self, kind: str, number: int, keys: list[Key], txids: list[int]) -> dict[str, Any]:
        return {
            "headers": {
                "event": kind,
                "patterns": patterns(self.handle, self.positions[number], keys),
                "txids": txids,
            }
        }

    # -- splicing a move-in -------------------------------------------------------------------

    def query_done(self, info: SnapshotInfo, rows: list[bytes]) -> None:
        move = self.move
        assert move is not None
        move.info = info
        move.rows = rows
        move.bound = info.lsn if self.manager.position >= info.lsn else None
        if move.bound is not None:
            self.splice()
        else:
            self.manager.wait_for_position(self)

    def advance(self, position: int) -> None:
        """The stream moved on: nothing commits before ``position`` that has not been
        delivered."""
        move = self.move
        if move is None or move.info is None or move.bound is not None:
            return
        if position >= move.info.lsn:
            move.bound = move.info.lsn
            self.splice()

    def splice(self) -> None:
        move = self.move
        assert move is not None and move.info is not None and move.bound is not None
        info = move.info
        bound = move.bound
        candidates = [t for t in self.held if t.commit_lsn < bound]
        seen = 0
        while seen < len(candidates) and info.visible(candidates[seen].xid):
            seen += 1
        if any(info.visible(t.xid) for t in candidates[seen:]):
            # The snapshot saw a transaction but not one before it: ask for another.
            self.manager.query_move_in(self, retry=True)
            return
        held, self.held = self.held, []
        before = self.converters(move.before)
        for txn in held[:seen]:
            self._append_txn(txn, before)
        tx = max(move.tx, held[seen - 1].commit_lsn) if seen else move.tx
        block = [_encode(e) for e in move.events] + move.rows
        if move.rows:
            block.append(snapshot_end(info))
        if block:
            self.manager.appender.after_log(self.consumer, tx, block)
        for txn in held[seen:]:
            self._append_txn(txn, None)
        self.move = None
        self.phase = Phase.STEADY
        self.manager.moved(self)
        self.drain(self.manager.last_tx)

    def converters(self, views: Sequence[Any]) -> dict[int, TaggedConverter]:
        """Converters per relation (by id) reading ``views``, built as needed."""
        return _Converters(self, views)  # type: ignore[return-value]

    # -- appending -------------------------------------------------------------------------

    def _append_txn(self, txn: Held, converters: Any) -> None:
        """One buffered transaction's entries, converted with ``converters``' views (the
        shape's own when None)."""
        consumer = self.consumer
        headers_base = {"lsn": str(txn.commit_lsn), "txids": [txn.xid]}
        entries: list[Entry] = []
        for op, change in txn.changes:
            relation = change.relation
            if converters is None:
                converter = consumer.converter
                if consumer.relation is not relation or converter is None:
                    converter = consumer.rebind(relation)
            else:
                converter = converters.get(relation)
            if change.op != "insert" and relation.replica_identity != "f":
                converter.needs.check(change.op, change.new, change.old, relation)
            entries.extend(
                converter.convert(
                    change.op, change.new, change.old, {**headers_base, "op_position": op}
                )
            )
        if len(entries) > 1 and needs_fold(entries):  # see rekey
            assert converter is not None
            changes = [change for _, change in txn.changes]
            table = self.shape.definition.relation
            if keys_changed(changes, table, converter.projection.pk_idx):
                folded = fold(converter, changes, table, entries, headers_base)
                if folded is not None:
                    entries = folded
        if entries:
            self.manager.appender.transaction(consumer, txn.xid, txn.commit_lsn, entries)

    def close(self) -> None:
        """The shape is gone: stop following its dependencies."""
        if self.closed:
            return
        self.closed = True
        move = self.move
        if move is not None and move.task is not None:
            move.task.cancel()
        self.move = None
        self.held = []
        for view in self.views:
            source: Any = view.source
            if view in source.dependents:
                source.dependents.remove(view)


class _Converters:
    def __init__(self, shape: SubqueryShape, views: Sequence[Any]) -> None:
        self.shape = shape
        self.views = views
        self.by_relation: dict[int, tuple[Any, TaggedConverter]] = {}

    def get(self, relation: Any) -> TaggedConverter:
        found = self.by_relation.get(id(relation))
        if found is None or found[0] is not relation:
            found = (relation, self.shape.converter(relation.column_names, self.views))
            self.by_relation[id(relation)] = found
        return found[1]


def _has_null(key: Key) -> bool:
    return key is None or (isinstance(key, tuple) and None in key)


def _compatible(a: tuple[str | None, ...], b: Key) -> bool:
    assert isinstance(b, tuple)
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _unique(keys: list[Key]) -> list[Key]:
    return list(dict.fromkeys(keys))
