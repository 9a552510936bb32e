"""Transactions into shapes: find the consumers each change touches and hand each its
changes (the hot loop of ingest); a consumer's state decides what becomes of them.

For each transaction: the subqueries' dependencies take their part first (``Subqueries
.apply``); then each change goes to the shapes the router finds for it. A plain shape
whose clause matches gets the change's entries, converted once for every shape with the
same projection and match; a subquery shape's state decides (``SubqueryShape.takes``:
STEADY converts now, WAITING or MOVING holds the change). Then each shape's entries are
appended (``Appender.transaction``, the one way a transaction reaches a log), and the
subqueries end the transaction (``Subqueries.done``: move-outs, move-ins).

Invalidations found while routing (a truncated table, a relation the shape can no
longer read, a change the shape cannot process: its clause or conversion raised, or it
lacks values the shape needs) are carried out after the loop, never while it iterates
the router: one shape's failure never stops the stream for the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pysync.log.offset import LogOffset
from pysync.log.storage import StorageError
from pysync.postgres.pgoutput import Relation
from pysync.postgres.transactions import Change, RelationChange, Transaction, Truncation
from pysync.shapes.changes import ShapeConverter, cannot_process
from pysync.shapes.consumer import Appender, ShapeConsumer, Shared
from pysync.shapes.definition import affected_by, layout_affects
from pysync.shapes.registry import ShapeRegistry
from pysync.shapes.rekey import fold, keys_changed, needs_fold
from pysync.shapes.router import MergedRoutes, TableRoutes, partition_routes

log = logging.getLogger(__name__)

PG_EPOCH = 946_684_800.0
"""Postgres timestamps count from 2000-01-01 UTC."""

Touched = dict[ShapeConsumer, list[dict[str, Any]]]
"""A transaction's entries per shape, in op order."""
Doomed = list[tuple[ShapeConsumer, str]]
"""Shapes to invalidate after the loop, and why."""
Again = set[ShapeConsumer]
"""Shapes whose entries may name a key twice (see ``Collector._fold``)."""
_NO_ENTRIES: list[dict[str, Any]] = []
"""Placeholder (never appended to): no conversion of the change yet."""


class TxnMeasure:
    """What ``Collector.apply`` did with the last transaction, when asked (tracing)."""

    __slots__ = ("shapes", "bytes")

    def __init__(self) -> None:
        self.shapes = 0
        """Shapes it appended to."""
        self.bytes = 0
        """Bytes of the entries appended (a shared entry counts for each shape)."""

    def add(self, frames: list[tuple[LogOffset, bytes]]) -> None:
        """One shape's entries of the transaction, appended."""
        self.bytes += sum(len(payload) for _, payload in frames)


def _ignore(relation: Relation) -> None:
    return None


class Collector:
    def __init__(
        self,
        registry: ShapeRegistry,
        appender: Appender,
        *,
        on_relation: Callable[[Relation], None] = _ignore,
    ) -> None:
        """``appender``: the one the registry's subqueries append with too (its ``dirty``
        is the flush tracker's work); ``on_relation``: told of every Relation message
        (its replica identity is watched)."""
        self.registry = registry
        self.appender = appender
        self.on_relation = on_relation
        self.last_seen_lsn = 0
        """Commit LSN of the last transaction processed."""
        self.last_commit_time = 0.0
        """Its commit time (Unix seconds)."""
        self.applied_end_lsn = 0
        """Everything up to here is in the logs (or was of no shape's concern)."""
        self.subqueries = registry.subqueries

    def apply(self, txn: Transaction, measure: TxnMeasure | None = None) -> None:
        """Route one committed transaction into the logs of the shapes it touches;
        ``measure`` (a recorded tracing span's) is told its shapes and bytes.

        Raises StorageError when a log cannot be written; what was appended before is
        kept (each shape's part of a transaction is appended whole or not at all) and the
        transaction counts as not applied.
        """
        try:
            subqueries = self.subqueries
            # Dependencies first: shapes convert with their views as they were.
            subqueries.apply(txn)
            touched, doomed, again, reused = self._route(txn)
            if doomed is not None:
                for consumer, reason in doomed:
                    touched.pop(consumer, None)
                    self.registry.invalidate(consumer, reason)
            if again is not None:
                self._fold(txn, touched, again)
            if touched:
                # Each shape's entries, appended: a loop here, not a function per
                # transaction (most transactions touch one shape or none).
                transaction = self.appender.transaction
                xid, commit_lsn = txn.xid, txn.commit_lsn
                shared = Shared() if reused else None
                if measure is None:
                    for consumer, entries in touched.items():
                        transaction(consumer, xid, commit_lsn, entries, shared)
                else:
                    measure.shapes, measure.bytes = len(touched), 0
                    for consumer, entries in touched.items():
                        measure.add(transaction(consumer, xid, commit_lsn, entries, shared))
            elif measure is not None:
                measure.shapes = measure.bytes = 0
            subqueries.done(txn)
            self.last_seen_lsn = txn.commit_lsn
            self.last_commit_time = txn.commit_time / 1e6 + PG_EPOCH
            self.applied_end_lsn = txn.end_lsn
        except StorageError:
            self.subqueries.storage_failed()
            raise

    def _route(self, txn: Transaction) -> tuple[Touched, Doomed | None, Again | None, bool]:
        """Each change of ``txn`` to the shapes it touches: their entries (``touched``),
        the shapes that cannot go on (``doomed``), those changed twice or more but by
        inserts (``again``: see ``_fold``), and whether shapes share entries (to encode
        them once). ``doomed`` and ``again`` are None when empty, as they nearly always
        are: nothing is allocated for them then."""
        # One loop, not a function per change or shape: it runs for every change.
        touched: Touched = {}
        doomed: Doomed | None = None
        again: Again | None = None
        tables = self.registry.router.tables
        xid = txn.xid
        commit_lsn = txn.commit_lsn
        lsn_text = str(commit_lsn)
        txids = [xid]
        reused = False  # did shapes share converted entries (to encode them once)?
        op = 0
        routes: TableRoutes[ShapeConsumer] | MergedRoutes[ShapeConsumer] | None
        for change in txn.changes:
            if type(change) is Truncation:
                for relation in change.relations:
                    routes = tables.get((relation.namespace, relation.name))
                    if relation.ancestors:  # a partition's: its partitioned tables'
                        routes = partition_routes(tables, relation.ancestors, routes)
                    if routes is not None:
                        # Not for a shape whose snapshot already saw the truncate.
                        truncated = [
                            (consumer, "table truncated")
                            for consumer in routes.shapes
                            if consumer.accepts(xid, commit_lsn)
                        ]
                        if truncated:
                            doomed = truncated if doomed is None else doomed + truncated
                op += 2
                continue
            assert type(change) is Change
            relation = change.relation
            routes = tables.get((relation.namespace, relation.name))
            if relation.ancestors:  # a partition: the shapes on its partitioned tables too
                routes = partition_routes(tables, relation.ancestors, routes)
            if routes is None:
                op += 2
                continue
            headers = None
            # Shapes with the same projection and match outcome get the same entries:
            # converted once per change. The first conversion is kept in locals (most
            # changes match one shape), the others in ``shared``, made for a second.
            first: Any = None  # the first conversion's projection
            first_new = first_old = False  # ... its match
            first_entries: list[dict[str, Any]] = _NO_ENTRIES
            shared: dict[tuple[Any, bool, bool], list[dict[str, Any]]] | None = None
            kind, new, old = change.op, change.new, change.old
            # Updates and deletes without the whole old row: each shape checks that
            # what it reads was sent.
            partial = kind != "insert" and relation.replica_identity != "f"
            try:
                candidates = routes.candidates(relation.column_names, new, old)
            except Exception:  # noqa: BLE001 - unroutable values: every shape decides
                candidates = set(routes.shapes)
            for consumer in candidates:
                # One shape failing on a change (its clause, a value it cannot convert)
                # loses that shape only, never the stream; no cost unless raised.
                try:
                    existing = touched.get(consumer)
                    converter = consumer.converter
                    # ``accepted``: is the transaction known to be new to the shape (in
                    # neither its snapshot nor its log)? Asked once, as late as can be:
                    # most shapes a scan reaches do not match.
                    if (
                        consumer.relation is not relation
                        or converter is None
                        or consumer.subquery is not None
                    ):
                        # Rarer: a shape whose state decides (subqueries), or one not
                        # bound to this layout yet (rebound only for a change it takes:
                        # a replayed one from before a column was added must not doom it).
                        if existing is None:
                            if not consumer.accepts(xid, commit_lsn):
                                continue
                            subquery = consumer.subquery
                            if subquery is not None and not subquery.takes(
                                xid, commit_lsn, op, change
                            ):
                                continue
                        accepted = True
                        if consumer.relation is not relation or converter is None:
                            try:
                                converter = consumer.rebind(relation)
                            except (KeyError, ValueError):
                                if doomed is None:
                                    doomed = []
                                doomed.append((consumer, "columns no longer replicated"))
                                continue
                    else:
                        accepted = existing is not None
                    if headers is None:
                        headers = {"lsn": lsn_text, "txids": txids, "op_position": op}
                    if partial:
                        if not accepted:
                            if not consumer.accepts(xid, commit_lsn):
                                continue
                            accepted = True
                        converter.needs.check(kind, new, old, relation)
                    if type(converter) is not ShapeConverter:
                        entries = converter.convert(kind, new, old, headers)  # tags: its own
                        fresh = True
                    else:
                        # The clause first: most shapes a scan reaches do not match, and
                        # then nothing else about them matters.
                        new_match, old_match = converter.match(kind, new, old)
                        if not (new_match or old_match):
                            continue
                        if not accepted and not consumer.accepts(xid, commit_lsn):
                            continue  # in its snapshot, or already in its log
                        projection = converter.projection
                        if first is None:
                            first, first_new, first_old = projection, new_match, old_match
                            entries = first_entries = projection.convert(
                                kind, new, old, new_match, old_match, headers
                            )
                            fresh = True
                        elif (
                            projection is first
                            and new_match is first_new
                            and old_match is first_old
                        ):
                            entries, fresh, reused = first_entries, False, True
                        else:
                            key = (projection, new_match, old_match)
                            if shared is None:
                                shared = {}
                            found = shared.get(key)
                            if found is None:
                                found = shared[key] = projection.convert(
                                    kind, new, old, new_match, old_match, headers
                                )
                                fresh = True
                            else:
                                fresh, reused = False, True
                            entries = found
                    if not entries:
                        continue
                    if existing is None:
                        # The shape that converted the change keeps the list; the
                        # others get a copy (a shape's list grows with its next change).
                        touched[consumer] = entries if fresh else list(entries)
                    else:
                        existing.extend(entries)
                        if kind != "insert":  # may name a key again: see _fold
                            if again is None:
                                again = set()
                            again.add(consumer)
                except Exception as exc:  # noqa: BLE001 - see above
                    doomed = self._failed(consumer, exc, doomed)
            op += 2
        return touched, doomed, again, reused

    def _fold(
        self,
        txn: Transaction,
        touched: Touched,
        again: Again,
    ) -> None:
        """Shapes that name a key twice in a transaction that changed keys get its net
        change per key instead (see ``rekey``): in WAL order, a client could delete the
        row another key change just moved there."""
        rekeyed: dict[tuple[str, str], bool] = {}
        for consumer in again:
            entries = touched.get(consumer)
            converter = consumer.converter
            if entries is None or converter is None:
                continue
            table = consumer.definition.relation
            # A partitioned table's rows move between partitions as a delete and an
            # insert (under a new key: see rekey), never as an update of the key.
            changed = consumer.shape.table.partitioned or rekeyed.get(table)
            if changed is None:
                changed = rekeyed[table] = keys_changed(
                    txn.changes, table, converter.projection.pk_idx
                )
            if not changed or not needs_fold(entries):
                continue
            try:
                headers = {"lsn": str(txn.commit_lsn), "txids": [txn.xid]}
                folded = fold(converter, txn.changes, table, entries, headers)
            except Exception as exc:  # noqa: BLE001 - as in the loop: this shape only
                del touched[consumer]
                reason = cannot_process(consumer.handle, consumer.definition.table, exc)
                self.registry.invalidate(consumer, reason)
                continue
            if folded is None:
                continue
            if folded:
                touched[consumer] = folded
            else:
                del touched[consumer]

    @staticmethod
    def _failed(consumer: ShapeConsumer, exc: Exception, doomed: Doomed | None) -> Doomed:
        """``consumer`` cannot process a change: it is invalidated after the loop."""
        if doomed is None:
            doomed = []
        elif any(c is consumer for c, _ in doomed):
            return doomed
        doomed.append((consumer, cannot_process(consumer.handle, consumer.definition.table, exc)))
        return doomed

    def idle(self, lsn: int) -> None:
        """Nothing pending up to ``lsn``: once the logs are durable it may be confirmed."""
        if lsn > self.applied_end_lsn:
            self.applied_end_lsn = lsn
        self.subqueries.idle(lsn)

    def relation_changed(self, item: RelationChange) -> None:
        """Shapes whose table changed in a way they depend on are invalidated (clients
        refetch); the others rebuild their column positions at their next change."""
        relation = item.relation
        self.on_relation(relation)
        key = (relation.namespace, relation.name)
        doomed: list[tuple[ShapeConsumer, str]] = []
        tables = self.registry.router.tables
        partitions = self.registry.partitions
        previous = partitions.left.pop(relation.oid, ())
        if relation.ancestors or previous:  # a partition (or one no more)
            for ancestor in (*relation.ancestors, *previous):
                routes = tables.get(ancestor)
                if routes is None:
                    continue
                for consumer in routes.shapes:
                    if ancestor not in relation.ancestors:
                        # not a shape made after the detach (the stream may be behind)
                        if partitions.holds(consumer.shape.table, relation.oid):
                            doomed.append((consumer, "partition detached"))
                    elif layout_affects(consumer.shape, relation):
                        doomed.append((consumer, "schema changed"))
        for other_key, routes in tables.items():
            for consumer in routes.shapes:
                if other_key != key:
                    if consumer.shape.table.oid == relation.oid:
                        doomed.append((consumer, "table renamed"))
                elif affected_by(consumer.shape, relation):
                    doomed.append((consumer, "schema changed"))
        for consumer, reason in doomed:
            self.registry.invalidate(consumer, reason)
        self.subqueries.relation_changed(relation, previous)

    def rewind(self, acknowledged: int) -> None:
        """Replication resumes from ``acknowledged``: nothing after it counts as applied."""
        self.applied_end_lsn = acknowledged
        self.subqueries.rewind()
