"""Every shape being served: get-or-create, by handle, eviction, deletion, the router's
membership, the on-disk record and recovery.

Creating a shape registers its consumer with the router at once (so no transaction
is missed), then a task publishes its table and writes its snapshot; the shape is
recorded on disk once the snapshot is complete, and only then survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import psycopg

from pysync.log.storage import PendingSync, StorageError
from pysync.postgres.catalog import Table, load_table_async, why_unreadable_async
from pysync.postgres.connections import Connections
from pysync.postgres.pgoutput import Relation
from pysync.postgres.publication import PublishAbandoned, Publisher
from pysync.postgres.sqlstate import safe_reason
from pysync.shapes.consumer import GONE, SNAPSHOTTING, Appender, ShapeConsumer
from pysync.shapes.definition import (
    Shape,
    ShapeDefinition,
    ShapeError,
    build_shape,
    retyped,
    subquery_relations,
)
from pysync.shapes.partitions import Partitions
from pysync.shapes.router import Router
from pysync.shapes.snapshotter import StaleSnapshot, write_snapshot
from pysync.shapes.store import RegistryRecord, ShapeStore, new_handle
from pysync.shapes.subqueries.dependency import DependencyGone
from pysync.shapes.subqueries.manager import MAX_ROWS, Subqueries
from pysync.shared_runs import Abandoned, SharedRuns

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPILE_INLINE_CHARS = 2_000
"""Clauses up to this long compile on the event loop (tens of microseconds); longer
ones in a worker thread, so a large clause never stalls other requests."""


class CompileTimeout(ShapeError):
    """The clause did not compile within ``compile_timeout``."""


def no_span(consumer: ShapeConsumer) -> AbstractContextManager[object]:
    """A snapshot task without a tracing span."""
    return contextlib.nullcontext()


class ShapeRegistry:
    def __init__(
        self,
        store: ShapeStore,
        connections: Connections,
        publisher: Publisher,
        appender: Appender,
        *,
        relations: Mapping[int, Relation],
        request_position: Callable[[], None],
        on_storage_error: Callable[[StorageError], None],
        on_table_changed: Callable[[], None],
        snapshot_span: Callable[[ShapeConsumer], AbstractContextManager[object]] = no_span,
        on_snapshot_done: Callable[[float], None] = lambda seconds: None,
        max_shapes: int | None = None,
        max_subquery_rows: int = MAX_ROWS,
        compile_timeout: float = 10.0,
    ) -> None:
        """``appender``: how entries reach the shapes' logs (the collector's too);
        ``relations``: the replication stream's relations by oid (partitions');
        ``request_position``: asks the stream to report its position (subqueries' move-ins);
        ``on_storage_error``: a shape's log could not be written (ingest stops);
        ``on_table_changed``: a request found a shape's table dropped or changed, or a
        partition came or went: the other shapes on it are stale too
        (``drift.SchemaCheck.soon``);
        ``snapshot_span``: around each snapshot task (a tracing span);
        ``on_snapshot_done``: told each snapshot's seconds (metrics)."""
        self.store = store
        self.connections = connections
        self.publisher = publisher
        self.max_shapes = max_shapes
        self.compile_timeout = compile_timeout
        self.router: Router[ShapeConsumer] = Router()
        self._by_handle: dict[str, ShapeConsumer] = {}
        self._by_definition: dict[ShapeDefinition, ShapeConsumer] = {}
        self._by_key: dict[str, ShapeConsumer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recordings: set[asyncio.Future[None]] = set()
        self._building: dict[ShapeDefinition, asyncio.Future[Shape]] = {}
        self._unreadable_said: set[tuple[str, str]] = set()
        """Tables whose missing SELECT was logged: only tables that exist, so bounded."""
        self._tables: SharedRuns[tuple[str, str], Table | None] = SharedRuns(self._load_table)
        self._compiler = ThreadPoolExecutor(2, thread_name_prefix="pysync-compile")
        self._watchers: list[Callable[[ShapeConsumer], None]] = []
        """Told of each shape leaving the registry (``watch``)."""
        self.on_storage_error = on_storage_error
        self.on_snapshot_done = on_snapshot_done
        self.on_table_changed = on_table_changed
        self.snapshot_span = snapshot_span
        self.partitions = Partitions(connections, relations, on_table_changed)
        self.subqueries = Subqueries(
            connections,
            publisher.publish,
            self.invalidate,
            appender,
            storage_failed=on_storage_error,
            request_position=request_position,
            follow_partitions=self.partitions.follow,
            max_rows=max_subquery_rows,
        )

    def __len__(self) -> int:
        return len(self._by_handle)

    def __iter__(self) -> Iterator[ShapeConsumer]:
        return iter(list(self._by_handle.values()))

    # -- lookups ---------------------------------------------------------------------

    def get(self, handle: str) -> ShapeConsumer | None:
        consumer = self._by_handle.get(handle)
        if consumer is not None:
            consumer.last_used = time.monotonic()
        return consumer

    async def shape(self, definition: ShapeDefinition) -> ShapeConsumer:
        """The consumer for ``definition``, created (and its snapshot started) if new.

        Raises ShapeError for a definition the catalog refutes, psycopg.OperationalError
        when the database cannot be asked."""
        consumer = self._known(definition)
        if consumer is None:
            shape = await self._build_once(definition)
            # Looked up again after the await: a concurrent request may have made it.
            consumer = self._by_key.get(shape.key) or self._create(shape)
            self._by_definition[definition] = consumer
        consumer.last_used = time.monotonic()
        return consumer

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """The consumer serving ``definition`` (or an equal one), without creating one."""
        consumer = self._known(definition)
        if consumer is None:
            consumer = self._by_key.get((await self._build_once(definition)).key)
            if consumer is not None:
                self._by_definition[definition] = consumer
        return consumer

    async def verified(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """The known consumer for ``definition`` if the catalog still builds the same
        shape. A table dropped and created again (its own or a subquery's) is no longer
        published and sends nothing, so no change ever tells: the old shape would serve
        the old rows forever. It is invalidated instead (its clients refetch), and a table
        that is gone is the ShapeError of a new request."""
        consumer = self._known(definition)
        if consumer is None:
            return None
        try:
            shape = await self._build_once(definition)
        except CompileTimeout:
            raise  # a busy machine says nothing of the catalog
        except ShapeError:
            self.invalidate(consumer, "table dropped or changed")
            self.on_table_changed()
            raise
        if shape.key != consumer.shape.key:
            self.invalidate(consumer, "table dropped or changed")
            self.on_table_changed()
            return None
        return consumer

    def known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """The consumer serving ``definition`` as spelt, if one is known without asking
        the catalog (the live path's lookup: no await)."""
        return self._known(definition)

    def _known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        consumer = self._by_definition.get(definition)
        if consumer is not None and consumer.state is GONE:
            del self._by_definition[definition]  # another spelling of a shape now gone
            return None
        return consumer

    async def _build_once(self, definition: ShapeDefinition) -> Shape:
        """``build``, shared by concurrent requests for the same definition (300 clients
        asking for a new shape at once ask the catalog once)."""
        pending = self._building.get(definition)
        if pending is None:
            pending = self._building[definition] = asyncio.ensure_future(self.build(definition))
            pending.add_done_callback(lambda done: self._built(definition, done))
        return await asyncio.shield(pending)

    def _built(self, definition: ShapeDefinition, done: asyncio.Future[Shape]) -> None:
        self._building.pop(definition, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    async def build(self, definition: ShapeDefinition) -> Shape:
        """Validate ``definition`` against the live catalog."""
        inline = definition.where is None or len(definition.where) <= COMPILE_INLINE_CHARS
        try:
            table = await self._tables(definition.relation)
            if table is None:
                return build_shape(definition, table)  # raises: no such table
            relations = (
                subquery_relations(definition)
                if inline
                else await self.compute(subquery_relations, definition)
            )
            found = await asyncio.gather(*(self._tables(rel) for rel in relations))
            tables = dict(zip(relations, found, strict=True))
            if inline:
                return build_shape(definition, table, tables)
            return await self.compute(build_shape, definition, table, tables)
        except TimeoutError:
            raise CompileTimeout(
                "where",
                f"the clause took more than {self.compile_timeout:g} s to compile; simplify it",
            ) from None

    async def _load_table(self, relation: tuple[str, str], abandoned: Abandoned) -> Table | None:
        """The table as the catalog has it now (``self._tables``: one lookup answers the
        new shapes of a table that asked before it started)."""
        async with self.connections.catalog_session() as conn:
            table = await load_table_async(conn, *relation)
            if table is None:
                await self._say_why_missing(conn, relation)
        return table

    async def _say_why_missing(
        self, conn: psycopg.AsyncConnection[Any], relation: tuple[str, str]
    ) -> None:
        """Log (once per table) why a table the role may not read is "missing": its
        client only learns that it does not exist."""
        if relation in self._unreadable_said:
            return
        reason = await why_unreadable_async(conn, *relation)
        if reason is not None:
            self._unreadable_said.add(relation)
            log.warning("%s", reason)

    async def compute(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the compile threads, within ``compile_timeout`` (TimeoutError):
        parsing and compiling large clauses must not stall the event loop."""
        work = asyncio.get_running_loop().run_in_executor(self._compiler, fn, *args)
        return await asyncio.wait_for(work, self.compile_timeout)

    # -- lifecycle -------------------------------------------------------------------

    def _create(self, shape: Shape) -> ShapeConsumer:
        routes = self.router.tables.get(shape.definition.relation)
        if routes is not None and next(iter(routes.shapes)).shape.table.oid != shape.table.oid:
            self.on_table_changed()  # the table was created again: the old one's shapes go
        handle = new_handle(shape)
        consumer = ShapeConsumer(handle, shape, self.store.new_log(handle))
        if shape.dependencies:
            self.subqueries.attach(consumer)
        self.add(consumer)
        if self.max_shapes is not None and len(self._by_handle) > self.max_shapes:
            self._evict()
        task = asyncio.create_task(
            self._snapshot_in_span(consumer), name=f"pysync-snapshot-{consumer.handle}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return consumer

    def add(self, consumer: ShapeConsumer) -> None:
        """Serve ``consumer`` (new, or recovered with its snapshot) and route to it."""
        self._by_handle[consumer.handle] = consumer
        self._by_definition[consumer.definition] = consumer
        self._by_key[consumer.shape.key] = consumer
        where: Any = consumer.shape.where
        index = where.routing_index() if where is not None else None
        relation = consumer.definition.relation
        subquery = consumer.subquery
        found = where.subquery_index() if subquery is not None and index is None else None
        if subquery is not None and found is not None:
            self.router.add(relation, consumer, None, dynamic=found[0])
            subquery.index_column, subquery.index_dependency = found
            subquery.routes = self.router.tables[relation]
        else:
            self.router.add(relation, consumer, index)

    async def _snapshot_in_span(self, consumer: ShapeConsumer) -> None:
        with self.snapshot_span(consumer):
            await self._snapshot(consumer)

    async def _snapshot(self, consumer: ShapeConsumer) -> None:
        table = consumer.shape.table
        started = time.monotonic()
        try:
            # A request that gives up while the table is locked takes the work with it,
            # unless another request still waits for the shape.
            # Abandoned when every request that waited for it gave up; one that none ever
            # waited for (made in-process: an app's, a test's) is nobody's to give up.
            await self.publisher.publish(
                table.schema, table.name, lambda: consumer.waited and consumer.waiting == 0
            )
            if table.partitioned:
                await self.partitions.follow(table)
            if consumer.state is not SNAPSHOTTING:
                return
            if consumer.subquery is not None:
                await self._subquery_snapshot(consumer)
                self.on_snapshot_done(time.monotonic() - started)
                return
            async with self.connections.snapshot_session() as conn:
                info = await write_snapshot(
                    conn,
                    consumer.shape,
                    consumer.log,
                    rows=consumer.definition.log_mode == "full",
                    helper=self.connections.spare_snapshot_session,
                )
                if consumer.state is not SNAPSHOTTING:
                    return
                # At once, before handing the session back (that may await): readers that
                # see the snapshot's end must see what the shape buffered meanwhile too,
                # since up-to-date's global_last_seen_lsn already counts it.
                consumer.snapshot_taken(info)
            if table.partitioned:
                # Not recorded: its partitions may change while pysync is down, which
                # only the running schema check sees. Dropped on restart (a 409).
                self.on_snapshot_done(time.monotonic() - started)
                return
            sync = consumer.log.begin_sync()
            # Clients may read the shape from here on, so a stop must not lose its record:
            # close() waits for recordings it cannot cancel (they run in a thread).
            recording = asyncio.ensure_future(asyncio.to_thread(self._record, consumer, sync))
            self._recordings.add(recording)
            recording.add_done_callback(self._recordings.discard)
            await asyncio.shield(recording)
        except DependencyGone as exc:
            self.invalidate(consumer, f"a subquery's shape went away: {exc.reason}")
            return
        except Exception as exc:  # noqa: BLE001 - reported to the waiting requests
            if consumer.state is GONE:
                return  # deleted meanwhile: whatever failed does not matter any more
            if isinstance(exc, psycopg.errors.UndefinedTable):
                # Dropped while we looked: as Electric, the client refetches (409).
                self.invalidate(consumer, "table dropped during the snapshot")
                return
            if isinstance(exc, PublishAbandoned):
                self.invalidate(consumer, "every request for it gave up while its table was locked")
                return
            if isinstance(exc, StorageError):
                self.on_storage_error(exc)
            # Postgres' message may quote a row's value or the shape's params: the
            # class only above DEBUG.
            reason = safe_reason(exc)
            log.warning("snapshot of %s failed: %s", consumer.handle, reason)
            log.debug("snapshot of %s failed: %s", consumer.handle, exc)
            consumer.fail(exc)
            self.invalidate(consumer, f"snapshot failed: {reason}")
            return
        self.on_snapshot_done(time.monotonic() - started)
        if consumer.state is GONE:
            self.store.forget(consumer.handle)  # deleted while it was being recorded

    async def _subquery_snapshot(self, consumer: ShapeConsumer) -> None:
        """A shape with ``IN (SELECT ...)``: once its dependencies hold their rows, its own
        rows read with its views of them. It is not recorded: it does not survive a
        restart (as in Electric 1.7.10); its clients get a 409 and refetch."""
        subquery = consumer.subquery
        assert subquery is not None
        await self.subqueries.ready(subquery)
        attempts = 0
        while True:
            if consumer.state is not SNAPSHOTTING:
                return
            tagging = subquery.start_snapshot()
            try:
                async with self.connections.snapshot_session() as conn:
                    info = await write_snapshot(
                        conn,
                        consumer.shape,
                        consumer.log,
                        rows=consumer.definition.log_mode == "full",
                        tagging=tagging,
                        seen=subquery.seen,
                    )
                    if consumer.state is SNAPSHOTTING:
                        subquery.snapshot_taken(info)  # at once, as in _snapshot
                return
            except StaleSnapshot:
                attempts += 1
                await asyncio.sleep(min(0.5, 0.005 * 2 ** min(attempts, 7)))

    def _record(self, consumer: ShapeConsumer, sync: PendingSync | None) -> None:
        if sync is not None:
            sync.run()
        if consumer.state is not GONE:
            self.store.remember(consumer)
            # Only once durable in the registry: a stop right after must not lose it.
            consumer.recorded = True

    def _evict(self) -> None:
        assert self.max_shapes is not None
        by_age = sorted(self._by_handle.values(), key=lambda c: c.last_used)
        for consumer in by_age[: len(self._by_handle) - self.max_shapes]:
            self.invalidate(consumer, "evicted")

    def invalidate(self, consumer: ShapeConsumer, reason: str) -> None:
        """The shape is gone (clients get 409 and refetch, or the snapshot's error if it
        failed); it leaves the registry and its log is deleted."""
        consumer.invalidate(reason)
        if self._by_handle.get(consumer.handle) is not consumer:
            return
        log.info(
            "shape %s (%s) invalidated: %s", consumer.handle, consumer.definition.table, reason
        )
        self._by_handle.pop(consumer.handle, None)
        if self._by_definition.get(consumer.definition) is consumer:
            del self._by_definition[consumer.definition]
        if self._by_key.get(consumer.shape.key) is consumer:
            del self._by_key[consumer.shape.key]
        self.router.remove(consumer.definition.relation, consumer)
        if consumer.subquery is not None:
            self.subqueries.release(consumer.subquery)
        for gone in tuple(self._watchers):  # one may end its watch when told
            gone(consumer)
        if consumer.recorded:
            try:
                self.store.forget(consumer.handle)
            except StorageError as exc:
                # The log goes below; recovery drops a record without one.
                log.error("could not record that shape %s is gone: %s", consumer.handle, exc)
        consumer.log.storage.destroy()

    def watch(self, gone: Callable[[ShapeConsumer], None]) -> Callable[[], None]:
        """``gone`` is told of each shape leaving the registry (deleted, invalidated,
        evicted), inside ``invalidate``: before anything can be made in its place. For
        what comes and goes while the registry lives (the workers' hub); returns what
        ends it."""
        self._watchers.append(gone)

        def unwatch() -> None:
            with contextlib.suppress(ValueError):
                self._watchers.remove(gone)

        return unwatch

    def invalidate_all(self, reason: str) -> None:
        for consumer in list(self._by_handle.values()):
            self.invalidate(consumer, reason)

    def delete(self, handle: str) -> bool:
        consumer = self._by_handle.get(handle)
        if consumer is None:
            return False
        self.invalidate(consumer, "deleted")
        return True

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._recordings:
            done, _ = await asyncio.wait(list(self._recordings))
            for recording in done:
                if recording.exception() is not None:
                    log.warning("a shape could not be recorded at stop: %s", recording.exception())
        await self.subqueries.close()
        await self._tables.close()
        await self.publisher.close()
        self._compiler.shutdown(wait=False, cancel_futures=True)
        for consumer in self._by_handle.values():
            consumer.log.notify()

    # -- recovery --------------------------------------------------------------------

    async def recover(self) -> None:
        """Serve again the shapes that were complete at the last stop, with the same
        handles; drop those whose table changed while pysync was down."""
        keep: set[str] = set()
        records = await asyncio.to_thread(self.store.recorded)
        for record in records:
            shape = await self._recovered_shape(record)
            if shape is None:
                await asyncio.to_thread(self.store.forget, record.handle)
                continue
            shape_log = await asyncio.to_thread(self.store.new_log, record.handle)
            if not shape_log.snapshot_done or record.snapshot is None:
                await asyncio.to_thread(self.store.forget, record.handle)
                continue
            self.add(ShapeConsumer(record.handle, shape, shape_log, record.snapshot))
            keep.add(record.handle)
        for orphan in list(self.store.orphans(keep)):
            self.store.discard(orphan)

    async def _recovered_shape(self, record: RegistryRecord) -> Shape | None:
        assert record.definition is not None
        try:
            shape = await self.build(record.definition)
        except ShapeError:
            return None
        if (record.key is not None and record.key != shape.key) or (
            record.types is not None and retyped(shape, record.types)
        ):
            log.info("shape %s dropped: its table changed while pysync was down", record.handle)
            return None
        return shape

    def discard_recorded(self) -> None:
        """Forget every stored shape (they came from a slot that is gone)."""
        for record in self.store.recorded():
            self.store.discard(record.handle)
            self.store.forget(record.handle)
        for orphan in list(self.store.orphans(set())):
            self.store.discard(orphan)
