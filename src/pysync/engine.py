"""The sync engine: replication stream -> router -> shape logs, plus shape lifecycle.

One asyncio task reads committed transactions and appends each shape's entries to its
log; another fsyncs touched logs and only then acknowledges the transaction to Postgres,
so after a crash the slot resends exactly what no log has durably.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from pysync.postgres.pgoutput import Relation
from pysync.postgres.publication import publish_table
from pysync.postgres.replication import ReplicationStream, SlotInvalidatedError, drop_slot
from pysync.postgres.snapshot import SnapshotPool, take_snapshot
from pysync.postgres.transactions import Change, Transaction, Truncation
from pysync.shapes.cache import LiveShape, ShapeStore, new_handle
from pysync.shapes.changes import ShapeConverter
from pysync.shapes.definition import Shape, ShapeDefinition, ShapeError, validate
from pysync.shapes.log import CHUNK_BYTES
from pysync.shapes.offset import BEFORE_ALL, LogOffset
from pysync.shapes.router import Router

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0

_encode = msgspec.json.Encoder().encode


class ShapeGone(Exception):
    """The shape was invalidated or deleted (clients get 409 must-refetch)."""


class Engine:
    def __init__(
        self,
        database_url: str,
        *,
        storage_dir: Path | str | None = None,
        slot: str = "pysync",
        publication: str = "pysync",
        max_shapes: int | None = None,
        snapshot_connections: int = 5,
        chunk_bytes: int = CHUNK_BYTES,
        flush_interval: float = 0.05,
        streaming: bool = False,
    ) -> None:
        self.database_url = database_url
        self.store = ShapeStore(Path(storage_dir) if storage_dir is not None else None, chunk_bytes)
        self.slot = slot
        self.publication = publication
        self.max_shapes = max_shapes
        self.flush_interval = flush_interval
        self.stream = ReplicationStream(
            database_url, slot=slot, publication=publication, streaming=streaming
        )
        self.stream.assembler.on_relation = self._on_relation
        self.snapshots = SnapshotPool(database_url, snapshot_connections)
        self.router: Router[LiveShape] = Router()
        self.shapes: dict[str, LiveShape] = {}
        self._by_definition: dict[ShapeDefinition, LiveShape] = {}
        self._by_key: dict[str, LiveShape] = {}
        self.last_seen_lsn = 0
        """Commit LSN of the last transaction the pipeline processed."""
        self._applied_end_lsn = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._catalog: psycopg.Connection[Any] | None = None
        self._catalog_lock = asyncio.Lock()
        self._publisher: psycopg.Connection[Any] | None = None
        self._publish_lock = asyncio.Lock()
        self.on_invalidate: list[Callable[[LiveShape], None]] = []
        self.started = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.stream.setup)
        except SlotInvalidatedError as exc:
            # Lost while we were down: handled as when it happens while running (see
            # _replicate), instead of refusing to start. The new slot makes every stored
            # shape stale; they are discarded below.
            log.error("%s; resyncing every shape", exc)
            await asyncio.to_thread(self._drop_slot)
            await asyncio.to_thread(self.stream.setup)
        if self.stream.slot_created:
            # A new slot cannot resume old logs: whatever was stored is stale.
            self._discard_recorded()
        else:
            await asyncio.to_thread(self._recover)
        self._tasks = [
            asyncio.create_task(self._replicate(), name="pysync-replication"),
            asyncio.create_task(self._flush_loop(), name="pysync-flush"),
        ]
        self.started.set()

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks), []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.warning("engine task %s failed: %r", task.get_name(), task.exception())
        await asyncio.to_thread(self._sync_all)
        self.stream.acknowledge(self._applied_end_lsn)
        await self.stream.close()
        await self.snapshots.close()
        for conn in (self._catalog, self._publisher):
            if conn is not None:
                conn.close()
        self.store.close()
        for live in list(self.shapes.values()):
            live.log.notify()

    # -- shapes ---------------------------------------------------------------------

    async def shape(self, definition: ShapeDefinition) -> LiveShape:
        """The live shape for a definition, created (and its snapshot started) if new."""
        live = self._by_definition.get(definition)
        if live is not None and not live.gone:
            live.last_used = time.monotonic()
            return live
        shape = await self._validate(definition)
        existing = self._by_key.get(shape.key)
        if existing is not None:
            self._by_definition[definition] = existing
            existing.last_used = time.monotonic()
            return existing
        return self._create(shape)

    def existing(self, definition: ShapeDefinition) -> LiveShape | None:
        """The live shape last served for this exact definition, if any (no validation)."""
        live = self._by_definition.get(definition)
        return live if live is not None and not live.gone else None

    async def find(self, definition: ShapeDefinition) -> LiveShape | None:
        """The live shape equal to ``definition``, without creating one."""
        live = self.existing(definition)
        if live is None:
            live = self._by_key.get((await self._validate(definition)).key)
        return live

    def get(self, handle: str) -> LiveShape | None:
        live = self.shapes.get(handle)
        if live is not None:
            live.last_used = time.monotonic()
        return live

    async def wait_ready(
        self, live: LiveShape, after: LogOffset | None = BEFORE_ALL, timeout: float = 60.0
    ) -> None:
        """Wait until the log has entries after ``after`` (by default: the first snapshot
        chunk) or, with ``after=None``, until the snapshot is complete. Raises the
        snapshot's error, ShapeGone, or TimeoutError."""
        deadline = time.monotonic() + timeout
        log_ = live.log
        while not log_.snapshot_done and not (after is not None and log_.has_after(after)):
            if live.error is not None:
                raise live.error
            if live.gone:
                raise ShapeGone(live.handle)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("snapshot produced no data in time")
            grown = log_.waiter()
            await asyncio.wait([grown], timeout=remaining)
            grown.cancel()
        if live.error is not None:
            raise live.error
        if live.gone:
            raise ShapeGone(live.handle)

    def delete(self, handle: str) -> bool:
        live = self.shapes.get(handle)
        if live is None:
            return False
        self._invalidate(live, "deleted")
        return True

    async def _validate(self, definition: ShapeDefinition) -> Shape:
        async with self._catalog_lock:
            return await asyncio.to_thread(self._validate_sync, definition)

    def _validate_sync(self, definition: ShapeDefinition) -> Shape:
        if self._catalog is None or self._catalog.closed:
            self._catalog = psycopg.connect(self.database_url, autocommit=True)
        try:
            return validate(self._catalog, definition)
        except psycopg.OperationalError:
            self._catalog = None
            raise

    def _create(self, shape: Shape) -> LiveShape:
        handle = new_handle(shape)
        live = LiveShape(handle, shape, self.store.new_log(handle))
        self._register(live)
        if self.max_shapes is not None and len(self.shapes) > self.max_shapes:
            self._evict()
        task = asyncio.create_task(self._snapshot(live), name=f"pysync-snapshot-{handle}")
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
        return live

    def _register(self, live: LiveShape) -> None:
        self.shapes[live.handle] = live
        self._by_definition[live.definition] = live
        self._by_key[live.shape.key] = live
        where = live.shape.where
        index = where.equality_index() if where is not None else None  # type: ignore[attr-defined]
        self.router.add(live.definition.relation, live, index)

    async def _snapshot(self, live: LiveShape) -> None:
        table = live.shape.table
        try:
            async with self.snapshots.connection() as conn:
                await conn.execute("SELECT 1")  # reconnect early if the pooled one died
                await self._publish(table.schema, table.name)
                if live.gone:
                    return
                info = await take_snapshot(conn, live.shape, live.log, rows=live.definition.log_mode == "full")
        except Exception as exc:  # noqa: BLE001 - reported to the waiting request
            log.warning("snapshot of %s failed: %s", live.handle, exc)
            live.error = exc
            self._invalidate(live, "snapshot failed")
            return
        if live.gone:
            return
        live.snapshot = info
        pending, live.pending = live.pending or [], None
        for xid, commit_lsn, entries in pending:
            if not live.skip(xid, commit_lsn):
                live.log.append_changes(entries)
        live.log.notify()
        await asyncio.to_thread(self._remember, live)
        # Ready only once durable in the registry: a stop right after must not lose it.
        live.ready = True

    def _remember(self, live: LiveShape) -> None:
        live.log.sync()
        if not live.gone:
            self.store.remember(live)

    async def _publish(self, schema: str, name: str) -> None:
        # Checked for every new shape, not cached: a table dropped and created again
        # under the same name is not in the publication any more.
        async with self._publish_lock:  # one reused connection, not one per snapshot
            await asyncio.to_thread(self._publish_sync, schema, name)

    def _publish_sync(self, schema: str, name: str) -> None:
        if self._publisher is None or self._publisher.closed:
            self._publisher = psycopg.connect(self.database_url, autocommit=True)
        try:
            publish_table(self._publisher, self.publication, schema, name)
        except psycopg.OperationalError:
            self._publisher = None
            raise

    def _evict(self) -> None:
        assert self.max_shapes is not None
        by_age = sorted(self.shapes.values(), key=lambda s: s.last_used)
        for live in by_age[: len(self.shapes) - self.max_shapes]:
            self._invalidate(live, "evicted")

    def _invalidate(self, live: LiveShape, reason: str) -> None:
        if live.gone:
            return
        log.info("shape %s (%s) invalidated: %s", live.handle, live.definition.table, reason)
        live.gone = True
        self.shapes.pop(live.handle, None)
        if self._by_definition.get(live.definition) is live:
            del self._by_definition[live.definition]
        if self._by_key.get(live.shape.key) is live:
            del self._by_key[live.shape.key]
        self.router.remove(live.definition.relation, live)
        live.log.notify()
        for callback in self.on_invalidate:
            callback(live)
        self.store.forget(live.handle)
        live.log.storage.destroy()

    # -- replication ----------------------------------------------------------------

    async def _replicate(self) -> None:
        yielded = time.monotonic()
        while True:
            try:
                async for item in self.stream.transactions():
                    if type(item) is Transaction:
                        self.apply(item)
                    # The stream only awaits when the socket is drained: under a steady
                    # write load it never is, and snapshots, the flush loop (hence
                    # acknowledgements) and requests starved. Let them run every few ms.
                    now = time.monotonic()
                    if now - yielded > 0.005:
                        await asyncio.sleep(0)
                        yielded = time.monotonic()
            except SlotInvalidatedError as exc:
                log.error("%s; resyncing every shape", exc)
                for live in list(self.shapes.values()):
                    self._invalidate(live, "replication slot lost")
                await asyncio.to_thread(self._drop_slot)
                self._applied_end_lsn = 0
                self.stream.acknowledged_lsn = self.stream.delivered_lsn = 0
            except Exception:  # noqa: BLE001 - replication must outlive any one failure
                # E.g. the slot held by another process: say so, then try again; shapes
                # keep serving what they have meanwhile.
                log.exception("replication stopped; retrying in %.0f s", RETRY_SECONDS)
                self.stream.disconnect()
                await asyncio.sleep(RETRY_SECONDS)

    def _drop_slot(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            drop_slot(conn, self.slot)

    def apply(self, txn: Transaction) -> None:
        """Route one committed transaction into the logs of the shapes it touches."""
        tables = self.router.tables
        xid = txn.xid
        commit_lsn = txn.commit_lsn
        headers_base = {"lsn": str(commit_lsn), "txids": [xid]}
        touched: dict[LiveShape, list[dict[str, Any]]] = {}
        op = 0
        for change in txn.changes:
            if type(change) is Truncation:
                for relation in change.relations:
                    routes = tables.get((relation.namespace, relation.name))
                    if routes is not None:
                        for live in list(routes.shapes):
                            self._invalidate(live, "table truncated")
                op += 2
                continue
            assert type(change) is Change
            relation = change.relation
            routes = tables.get((relation.namespace, relation.name))
            if routes is not None:
                layout = relation.column_names
                headers = {**headers_base, "op_position": op}
                for live in routes.candidates(layout, change.new, change.old):
                    if live.gone or live.skip(xid, commit_lsn):
                        continue
                    converter = live.converter
                    if converter is None:
                        converter = self._converter(live, layout)
                        if converter is None:
                            continue
                    entries = converter.convert(change.op, change.new, change.old, headers)
                    if entries:
                        existing = touched.get(live)
                        if existing is None:
                            touched[live] = entries
                        else:
                            existing.extend(entries)
            op += 2
        for live, entries in touched.items():
            entries[-1]["headers"]["last"] = True
            encoded = [
                (LogOffset(commit_lsn, entry["headers"]["op_position"]), _encode(entry))
                for entry in entries
            ]
            if live.pending is not None:
                live.pending.append((xid, commit_lsn, encoded))
            else:
                live.log.append_changes(encoded)
                live.log.notify()
        self.last_seen_lsn = commit_lsn
        self._applied_end_lsn = txn.end_lsn

    def _converter(self, live: LiveShape, layout: tuple[str, ...]) -> ShapeConverter | None:
        try:
            live.converter = ShapeConverter(live.shape, layout)
        except (KeyError, ValueError):
            # Not invalidated here: apply() is iterating the router's set of shapes, and
            # removing from it mid-iteration raised and killed the replication task.
            asyncio.get_running_loop().call_soon(
                self._invalidate, live, "columns no longer replicated"
            )
            return None
        return live.converter

    def _on_relation(self, relation: Relation, previous: Relation | None) -> None:
        """A Relation message: shapes whose table it changed in a way they depend on
        are invalidated (clients refetch); the others rebuild their column positions."""
        key = (relation.namespace, relation.name)
        for other_key, routes in list(self.router.tables.items()):
            for live in list(routes.shapes):
                if other_key != key:
                    if live.shape.table.oid == relation.oid:
                        self._invalidate(live, "table renamed")
                    continue
                live.converter = None
                if _schema_changed(live.shape, relation):
                    self._invalidate(live, "schema changed")

    # -- durability -----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            end_lsn = self._applied_end_lsn
            dirty = [live.log for live in self.shapes.values() if live.log.dirty]
            if dirty:
                await asyncio.to_thread(_sync_logs, dirty)
            if end_lsn:
                self.stream.acknowledge(end_lsn)

    def _sync_all(self) -> None:
        _sync_logs([live.log for live in self.shapes.values()])

    # -- recovery -------------------------------------------------------------------

    def _discard_recorded(self) -> None:
        for record in self.store.recorded():
            self.store.discard(record.handle)
            self.store.forget(record.handle)
        for orphan in list(self.store.orphans(set())):
            self.store.discard(orphan)

    def _recover(self) -> None:
        keep: set[str] = set()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            for record in list(self.store.recorded()):
                handle, snapshot = record.handle, record.snapshot
                assert record.definition is not None
                try:
                    shape = validate(conn, record.definition)
                except ShapeError:
                    self.store.forget(handle)
                    continue
                if _changed_while_down(shape, record.key, record.types):
                    log.info("shape %s dropped: its table changed while pysync was down", handle)
                    self.store.forget(handle)
                    continue
                shape_log = self.store.new_log(handle)
                if not shape_log.snapshot_done or snapshot is None:
                    self.store.forget(handle)
                    continue
                live = LiveShape(handle, shape, shape_log)
                live.snapshot = snapshot
                live.pending = None
                live.ready = True
                self._register(live)
                keep.add(handle)
        for orphan in list(self.store.orphans(keep)):
            self.store.discard(orphan)


def _sync_logs(logs: list[Any]) -> None:
    for shape_log in logs:
        shape_log.sync()


def _changed_while_down(shape: Shape, key: str | None, types: dict[str, int] | None) -> bool:
    if key is not None and key != shape.key:
        return True  # another table under the name, other key or column set
    return types is not None and _retyped(shape, types)


def _schema_changed(shape: Shape, relation: Relation) -> bool:
    """Electric's rule: another table under the name, a select-all shape whose column
    count changed, or a column the shape reads dropped or retyped."""
    if relation.oid != shape.table.oid:
        return True
    layout = {c.name: c.type_oid for c in relation.columns}
    replicated = [c for c in shape.table.columns if not c.generated]
    if shape.definition.columns is None and len(layout) != len(replicated):
        return True
    return _retyped(shape, layout)


def _retyped(shape: Shape, types: dict[str, int]) -> bool:
    """Is a column the shape reads (selected, key, or in its WHERE) gone or of another type?"""
    where = shape.where
    reads = set(shape.columns) | set(shape.pk) | (where.columns if where is not None else set())  # type: ignore[attr-defined]
    return any(types.get(c.name) != c.type_oid for c in shape.table.columns if c.name in reads)
