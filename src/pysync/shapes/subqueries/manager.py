"""Every dependency (``IN (SELECT ...)``) of the served shapes, and the part of each
transaction that concerns them.

For each transaction the collector asks ``apply`` first: dependencies take their tables'
changes, innermost first (a subquery's own subqueries before it), and tell the views of
their dependents what changed. Then the shapes' own changes are converted, still with
the views as they were. ``done`` ends the transaction: shapes apply their dependencies'
changes (move-outs, move-in queries) and move-ins waiting for the stream to pass their
snapshot are spliced. Idle positions count as the stream passing too; while a move-in
waits for one, the replication stream is asked for its position every few milliseconds.

Equal subqueries share one ``Dependency``; one no shape needs any more is dropped. A
dependency that cannot go on (its table truncated or changed, its query failing) takes
its dependents with it: their clients refetch.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from pysync.log.storage import StorageError
from pysync.postgres.catalog import Table
from pysync.postgres.connections import Connections
from pysync.postgres.pgoutput import Relation
from pysync.postgres.publication import PublicationError, PublishAbandoned
from pysync.postgres.sqlstate import error_class, safe_reason
from pysync.postgres.transactions import Change, Transaction, Truncation
from pysync.shapes.changes import cannot_process
from pysync.shapes.definition import Subquery
from pysync.shapes.router import MergedRoutes, Router, TableRoutes, partition_routes
from pysync.shapes.snapshotter import StaleSnapshot, query_move_in, query_subquery
from pysync.shapes.subqueries.dependency import Dependency, DependencyGone, DependencyState
from pysync.shapes.subqueries.shape import SubqueryShape

if TYPE_CHECKING:
    from pysync.shapes.consumer import Appender, ShapeConsumer

log = logging.getLogger(__name__)

RECENT = 1024
"""Transactions remembered: a new snapshot must see the recent ones already delivered."""
MAX_ATTEMPTS = 50
"""Tries of a query before its shape is given up (clients refetch)."""
PING_SECONDS = 0.005


MAX_ROWS = 2_000_000
"""Rows all subqueries may hold in memory (about 1 KiB each): without a bound, one
request of a few hundred ``x IN (SELECT ...)`` over a large table takes the machine's
memory."""


class TooManyRows(Exception):
    """A new subquery's rows would take the rows held beyond ``max_rows``."""

    def __init__(self, max_rows: int) -> None:
        super().__init__(
            f"the subqueries of the shapes served hold more than {max_rows:,} rows; "
            "use fewer or narrower subqueries, or raise --max-subquery-rows"
        )


class Stage(enum.Enum):
    """Where the manager is in the stream."""

    BETWEEN = "between"
    """Between transactions: a change of views (a dependency's query spliced) acts now."""
    DEPENDENCIES = "dependencies"
    """``apply``: the dependencies take the transaction's changes, a layer at a time
    (innermost first); a dependency whose views changed joins its layer's work."""
    SHAPES = "shapes"
    """The collector converts the shapes' own changes, with the views as they were:
    shapes whose views changed drain at ``done``."""


class Subqueries:
    def __init__(
        self,
        connections: Connections,
        publish: Callable[[str, str], Any],
        invalidate: Callable[[ShapeConsumer, str], None],
        appender: Appender,
        *,
        storage_failed: Callable[[StorageError], None],
        request_position: Callable[[], None],
        follow_partitions: Callable[[Table], Awaitable[None]],
        max_rows: int = MAX_ROWS,
    ) -> None:
        """``appender``: how the shapes' entries reach their logs (the collector's);
        ``storage_failed``: told when a shape's log cannot be written (ingest stops);
        ``request_position``: asks the replication stream to report its position (an
        Idle soon); ``follow_partitions``: before a subquery on a partitioned table reads
        its rows (``partitions.py``)."""
        self.connections = connections
        self.max_rows = max_rows
        self.publish = publish
        """Coroutine function adding a table to the publication."""
        self._invalidate = invalidate
        self.appender = appender
        self._storage_failed = storage_failed
        self._request_position = request_position
        self._follow_partitions = follow_partitions
        self.router: Router[Dependency] = Router()
        self.by_key: dict[str, Dependency] = {}
        self._recent: deque[int] = deque(maxlen=RECENT)
        self.position = 0
        """Nothing the stream can still deliver commits before this LSN."""
        self.last_tx = 0
        """Commit LSN of the last transaction processed."""
        self.stage = Stage.BETWEEN
        self._layers: dict[int, dict[Dependency, list[Change]]] = {}
        """DEPENDENCIES: per layer, the dependencies with work and their changes."""
        self._to_drain: dict[SubqueryShape, None] = {}
        """SHAPES: shapes whose views changed, drained at ``done`` (in order)."""
        self._holding: list[SubqueryShape] = []
        """SHAPES: shapes that held changes of the transaction (it is theirs at ``done``)."""
        self._waiting: set[SubqueryShape] = set()
        """Shapes whose move-in waits for the stream to pass its snapshot."""
        self._pinger: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.by_key)

    def recent(self) -> tuple[int, ...]:
        return tuple(self._recent)

    # -- shapes and dependencies ---------------------------------------------------------

    def attach(self, consumer: ShapeConsumer) -> SubqueryShape:
        deps = [self.dependency(s) for s in consumer.shape.dependencies]
        shape = SubqueryShape(consumer, self, deps)
        consumer.subquery = shape
        return shape

    def dependency(self, subquery: Subquery) -> Dependency:
        dep = self.by_key.get(subquery.key)
        if dep is not None and not dep.gone:
            return dep
        inner = [self.dependency(s) for s in subquery.dependencies]
        dep = Dependency(subquery, self, inner)
        self.by_key[dep.key] = dep
        where: Any = subquery.where
        self.router.add(dep.relation, dep, where.equality_index() if where is not None else None)
        self._spawn(self._snapshot_dependency(dep, self.recent()), dep)
        return dep

    def release(self, shape: SubqueryShape) -> None:
        """``shape`` is gone: it no longer keeps its dependencies."""
        shape.close()
        self._waiting.discard(shape)
        self._to_drain.pop(shape, None)
        self._index_clear(shape)
        for dep in shape.deps:
            self._drop_if_unused(dep)

    def _drop_if_unused(self, dep: Dependency) -> None:
        if dep.dependents or self.by_key.get(dep.key) is not dep:
            return
        self._remove(dep, "no longer used")
        for inner in dep.inner:
            self._drop_if_unused(inner)

    def _remove(self, dep: Dependency, reason: str, error: BaseException | None = None) -> None:
        dep.invalidate(reason, error)
        self.router.remove(dep.relation, dep)
        if self.by_key.get(dep.key) is dep:
            del self.by_key[dep.key]

    def fail(self, dep: Dependency, reason: str, error: BaseException | None = None) -> None:
        """``dep`` cannot go on: neither can its dependents. ``error``: the clause's fault."""
        if dep.gone:
            return
        log.info("subquery %s of %s.%s dropped: %s", dep.key, *dep.relation, reason)
        dependents = list(dep.dependents)
        self._remove(dep, reason, error)
        for view in dependents:
            owner = view.owner
            if isinstance(owner, Dependency):  # a nested subquery's: the outer one goes too
                self.fail(owner, reason, error)
            else:
                owner.dependency_gone(reason, error)  # type: ignore[attr-defined]
        for inner in dep.inner:
            self._drop_if_unused(inner)

    def invalidate(self, shape: SubqueryShape, reason: str) -> None:
        if not shape.closed:
            self._invalidate(shape.consumer, reason)

    async def ready(self, shape: SubqueryShape) -> None:
        """Until the shape's dependencies hold their rows (DependencyGone if one failed)."""
        for dep in shape.deps:
            await asyncio.shield(dep.ready)

    def tables(self, dep: Dependency) -> list[tuple[str, str]]:
        found = [dep.relation]
        for inner in dep.inner:
            found.extend(t for t in self.tables(inner) if t not in found)
        return found

    # -- transactions -----------------------------------------------------------------

    def apply(self, txn: Transaction) -> None:
        """The dependencies' part of ``txn``, before its shapes' changes are converted."""
        self.stage = Stage.SHAPES
        tables = self.router.tables
        if not tables:
            return
        xid, commit_lsn = txn.xid, txn.commit_lsn
        pending: dict[int, dict[Dependency, list[Change]]] = {}
        for change in txn.changes:
            if type(change) is Truncation:
                for relation in change.relations:
                    self.truncated(relation)
                continue
            assert type(change) is Change
            relation = change.relation
            routes: TableRoutes[Dependency] | MergedRoutes[Dependency] | None
            routes = tables.get((relation.namespace, relation.name))
            if relation.ancestors:  # a partition: subqueries on its partitioned tables too
                routes = partition_routes(tables, relation.ancestors, routes)
            if routes is None:
                continue
            for dep in routes.candidates(relation.column_names, change.new, change.old):
                if dep.accepts(xid, commit_lsn):
                    pending.setdefault(dep.layer, {}).setdefault(dep, []).append(change)
        if not pending:
            return
        self._layers = pending
        self.stage = Stage.DEPENDENCIES
        try:
            layer = 0
            top = max(pending)
            while layer <= top:
                for dep, changes in list(pending.get(layer, {}).items()):
                    if dep.gone:
                        continue
                    try:
                        for change in changes:
                            dep.change(change)
                        dep.finish(xid, commit_lsn)
                    except DependencyGone as exc:
                        self.fail(dep, exc.reason)
                    except (KeyError, ValueError):
                        self.fail(dep, "columns no longer replicated")
                    except Exception as exc:  # noqa: BLE001 - its dependents go, not the stream
                        log.warning(
                            "subquery %s of %s.%s cannot process a change (%s)",
                            dep.key,
                            *dep.relation,
                            type(exc).__name__,
                        )
                        log.debug("subquery %s failed on a change", dep.key, exc_info=exc)
                        self.fail(dep, f"a change could not be processed ({type(exc).__name__})")
                top = max(pending)
                layer += 1
        finally:
            self._layers = {}
            self.stage = Stage.SHAPES

    def changed(self, owner: SubqueryShape | Dependency) -> None:
        """``owner``'s views changed: it acts at the end of the transaction (or now,
        between transactions: a dependency's query was spliced)."""
        stage = self.stage
        if isinstance(owner, Dependency):
            if stage is Stage.DEPENDENCIES:
                self._layers.setdefault(owner.layer, {}).setdefault(owner, [])
            elif stage is Stage.BETWEEN:
                try:
                    owner.finish(0, self.last_tx)
                except DependencyGone as exc:
                    self.fail(owner, exc.reason)
        elif stage is Stage.BETWEEN:
            self._guarded(owner, owner.drain, self.last_tx)
        else:
            self._to_drain[owner] = None

    def held(self, shape: SubqueryShape) -> None:
        self._holding.append(shape)

    def done(self, txn: Transaction) -> None:
        """``txn`` is in every log: shapes apply their dependencies' changes."""
        # Runs for every transaction, with or without subquery shapes: nothing is
        # allocated unless there is something to do.
        if self._holding:
            held, self._holding = self._holding, []
            for shape in held:
                consumer = shape.consumer
                consumer.last_lsn = max(consumer.last_lsn, txn.commit_lsn)
        self._recent.append(txn.xid)
        self.last_tx = txn.commit_lsn
        if txn.end_lsn > self.position:
            self.position = txn.end_lsn
        self.stage = Stage.BETWEEN
        if self._to_drain:
            dirty, self._to_drain = self._to_drain, {}
            for shape in dirty:
                self._guarded(shape, shape.drain, txn.commit_lsn)
        if self._waiting:
            for shape in list(self._waiting):
                self._guarded(shape, shape.advance, txn.end_lsn)

    def idle(self, lsn: int) -> None:
        if lsn <= self.position:
            return
        self.position = lsn
        for shape in list(self._waiting):
            self._guarded(shape, shape.advance, lsn)

    def rewind(self) -> None:
        """Replication starts again from an earlier position."""
        self.stage = Stage.BETWEEN
        self._layers = {}
        self._holding = []

    def truncated(self, relation: Relation) -> None:
        for dep in list(self.by_key.values()):
            if dep.relation == (relation.namespace, relation.name):
                self.fail(dep, "table truncated")
            elif dep.relation in relation.ancestors:
                self.fail(dep, "partition truncated")

    def relation_changed(
        self, relation: Relation, previous: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """A dependency reading a column that went or changed type cannot go on, nor one
        on a partitioned table that a partition left (``previous``: the partition's
        ancestors before)."""
        for dep in list(self.by_key.values()):
            table = dep.subquery.table
            if dep.relation in relation.ancestors or dep.relation in previous:
                # one of its partitions: its columns, and whether it still is one
                if dep.relation not in relation.ancestors:
                    self.fail(dep, "partition detached")
                    continue
                layout = {c.name: c.type_oid for c in relation.columns}
                reads = set(table.identity) | set(dep.needed)
                if any(layout.get(c.name) != c.type_oid for c in table.columns if c.name in reads):
                    self.fail(dep, "schema changed")
                continue
            if relation.oid != table.oid and dep.relation != (relation.namespace, relation.name):
                continue
            if relation.oid != table.oid or dep.relation != (relation.namespace, relation.name):
                self.fail(dep, "table renamed or replaced")
                continue
            layout = {c.name: c.type_oid for c in relation.columns}
            reads = set(table.identity) | set(dep.needed)
            if any(layout.get(c.name) != c.type_oid for c in table.columns if c.name in reads):
                self.fail(dep, "schema changed")

    def _guarded(self, shape: SubqueryShape, action: Callable[..., None], *args: Any) -> None:
        """Run a step of ``shape`` that appends to its log: a storage error stops ingest
        and the shape (its in-memory state is ahead of its log now)."""
        if shape.closed:
            return
        try:
            action(*args)
        except StorageError as exc:
            self._storage_failed(exc)
            self.invalidate(shape, f"its log could not be written: {exc}")
        except (KeyError, ValueError) as exc:  # a relation layout without a column it reads
            log.warning("shape %s cannot convert its changes: %r", shape.handle, exc)
            self.invalidate(shape, "columns no longer replicated")
        except Exception as exc:  # noqa: BLE001 - one shape's failure stays its own
            self.invalidate(shape, cannot_process(shape.handle, shape.shape.definition.table, exc))

    # -- routing index ----------------------------------------------------------------------

    def index_add(self, shape: SubqueryShape, number: int, keys: Any) -> None:
        column = shape.index_column
        if column is None or number != shape.index_dependency:
            return
        routes = shape.routes
        for key in keys:
            if isinstance(key, str) and key not in shape.indexed:
                shape.indexed.add(key)
                routes.add_key(column, key, shape.consumer)

    def index_remove(self, shape: SubqueryShape, number: int, keys: Any) -> None:
        column = shape.index_column
        if column is None or number != shape.index_dependency:
            return
        routes = shape.routes
        for key in keys:
            if key in shape.indexed:
                shape.indexed.discard(key)
                routes.remove_key(column, key, shape.consumer)

    def _index_clear(self, shape: SubqueryShape) -> None:
        if shape.index_column is not None and shape.routes is not None:
            for key in shape.indexed:
                shape.routes.remove_key(shape.index_column, key, shape.consumer)
        shape.indexed = set()

    # -- queries ----------------------------------------------------------------------------

    def wait_for_position(self, shape: SubqueryShape) -> None:
        self._waiting.add(shape)
        if self._pinger is None or self._pinger.done():
            self._pinger = asyncio.create_task(self._ping(), name="pysync-subquery-position")

    def moved(self, shape: SubqueryShape) -> None:
        self._waiting.discard(shape)

    async def _ping(self) -> None:
        while self._waiting:
            self._request_position()
            await asyncio.sleep(PING_SECONDS)

    def requery(self, dep: Dependency) -> None:
        """``dep``'s views gained values that bring rows: read its rows again."""
        dep.start_buffering()
        dep.state = DependencyState.QUERYING
        self._spawn(self._query_dependency(dep, self.recent()), dep)

    def query_move_in(self, shape: SubqueryShape, retry: bool = False) -> None:
        move = shape.move
        assert move is not None
        move.info = None
        move.bound = None
        self._waiting.discard(shape)
        move.task = self._spawn(self._move_in(shape, retry), None)

    def _spawn(self, coro: Any, dep: Dependency | None) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if dep is not None:
            dep.task = task
        return task

    async def _move_in(self, shape: SubqueryShape, retry: bool) -> None:
        move = shape.move
        assert move is not None
        while True:
            if retry or move.attempts:
                await asyncio.sleep(min(0.5, 0.005 * 2 ** min(move.attempts, 7)))
            move.attempts += 1
            if shape.closed or shape.move is not move:
                return
            try:
                async with self.connections.snapshot_session() as conn:
                    info, rows = await query_move_in(
                        conn, shape.shape, shape.tagging, move.before, move.seen
                    )
            except StaleSnapshot:
                pass
            except (psycopg.Error, OSError) as exc:
                _log_failure("move-in query of shape %s failed: %s", shape.handle, exc)
                if isinstance(exc, psycopg.errors.DataError):
                    # The clause fails on the rows moving in: so would every retry; the
                    # clients refetch and get the failure as a 400.
                    self.invalidate(shape, f"its clause fails on the rows: {error_class(exc)}")
                    return
            else:
                if shape.closed or shape.move is not move:
                    return
                self._guarded(shape, shape.query_done, info, rows)
                return
            if move.attempts >= MAX_ATTEMPTS:
                self.invalidate(shape, "its move-in query kept failing")
                return

    async def _snapshot_dependency(self, dep: Dependency, seen: tuple[int, ...]) -> None:
        try:
            for relation in self.tables(dep):
                await self.publish(*relation)
            if dep.subquery.table.partitioned:
                await self._follow_partitions(dep.subquery.table)
            for inner in dep.inner:
                await asyncio.shield(inner.ready)
        except DependencyGone as exc:
            self.fail(dep, exc.reason, exc.error)
            return
        except Exception as exc:  # noqa: BLE001 - its dependents hear why
            # A table pysync may not (or, with manual publishing, must not) publish: the
            # shapes still snapshotting fail with it (a 503 saying so), instead of a 409
            # whose refetch would meet the same.
            unpublishable = isinstance(exc, PublicationError) and not isinstance(
                exc, PublishAbandoned
            )
            self.fail(dep, f"could not publish its table: {exc}", exc if unpublishable else None)
            return
        for view in dep.views:
            view.follow()
        await self._query_dependency(dep, seen)

    async def _query_dependency(self, dep: Dependency, seen: tuple[int, ...]) -> None:
        attempts = 0
        while not dep.gone:
            views = dep.views
            try:
                async with self.connections.snapshot_session() as conn:
                    # A new one reads one row past what the budget leaves: enough to refuse it.
                    limit = (
                        self._room(dep) + 1 if dep.state is DependencyState.SNAPSHOTTING else None
                    )
                    info, rows = await query_subquery(
                        conn, dep.subquery, views, dep.needed, seen, limit
                    )
            except StaleSnapshot:
                pass
            except (psycopg.Error, OSError) as exc:
                _log_failure("query of subquery %s failed: %s", dep.key, exc)
                if isinstance(exc, psycopg.errors.UndefinedTable):
                    self.fail(dep, "table dropped")
                    return
                if isinstance(exc, psycopg.errors.DataError):
                    # Its clause fails on the rows (division by zero, a bad cast): every
                    # retry would too.
                    self.fail(dep, f"its clause fails on the rows: {error_class(exc)}", exc)
                    return
            else:
                if dep.gone:
                    return
                if dep.state is DependencyState.SNAPSHOTTING and len(rows) > self._room(dep):
                    self.fail(dep, "too many subquery rows held", TooManyRows(self.max_rows))
                    return
                width = len(dep.subquery.table.identity)
                try:
                    dep.snapshot_taken(info, [(tuple(r[:width]), tuple(r[width:])) for r in rows])
                except DependencyGone as exc:
                    self.fail(dep, exc.reason)
                return
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                self.fail(dep, "its query kept failing")
                return
            await asyncio.sleep(min(0.5, 0.005 * 2 ** min(attempts, 7)))

    def _room(self, dep: Dependency) -> int:
        """Rows a new ``dep`` may hold within ``max_rows`` (those already served keep
        growing with their tables: they are not refused)."""
        held = sum(len(other.rows) for other in self.by_key.values() if other is not dep)
        return max(0, self.max_rows - held)

    async def close(self) -> None:
        tasks = list(self._tasks)
        if self._pinger is not None:
            tasks.append(self._pinger)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def storage_failed(self) -> None:
        """A log could not be written: every subquery shape's views are ahead of its log."""
        self.stage = Stage.BETWEEN
        self._layers = {}
        self._to_drain = {}
        self._holding = []
        for dep in list(self.by_key.values()):
            for view in list(dep.dependents):
                owner = view.owner
                if isinstance(owner, SubqueryShape):
                    self.invalidate(owner, "its log could not be written")


def _log_failure(message: str, what: object, exc: BaseException) -> None:
    """A query's failure: its class at WARNING, Postgres' message (which may quote a
    row's value or a param) at DEBUG only."""
    log.warning(message, what, safe_reason(exc))
    log.debug(message, what, exc)
