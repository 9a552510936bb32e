"""The sync engine, wired: replication stream -> collector -> shape logs -> flush tracker.

    ReplicationStream (postgres)  committed transactions, in order, with Connected,
            |                      RelationChange and Idle items around them
    Collector (shapes)            routes each change to its consumers, appends
            |
    FlushTracker (shapes)         fsyncs what was appended, then acknowledges
    ShapeRegistry (shapes)        shapes: create (snapshot), find, evict, delete, recover

This module only builds the pieces, starts and stops them, and reports their health.
``ingest.Ingest`` supervises replication (reconnects, the slot's identity, gaps);
``storage_outage.StorageOutage`` stops ingest while shape storage cannot be written.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from pysync.config import Settings
from pysync.idle import IdleClose, catch_up
from pysync.ingest import Ingest, request_position
from pysync.log.log import CHUNK_BYTES, COMPACT_MIN_BYTES
from pysync.log.storage import OS_IO, Io, StorageError
from pysync.metrics import EngineMetrics
from pysync.postgres.connections import Connections
from pysync.postgres.publication import Publisher
from pysync.postgres.replication import ReplicationStream
from pysync.postgres.slot import SlotInUseError, random_name
from pysync.replica_identity import ReplicaIdentityWatch
from pysync.shapes.collector import Collector
from pysync.shapes.compactor import Compactor
from pysync.shapes.consumer import Appender, ShapeConsumer, ShapeGone
from pysync.shapes.definition import ShapeDefinition
from pysync.shapes.drift import SCHEMA_CHECK_INTERVAL, SchemaCheck
from pysync.shapes.flush import Failed, FlushTracker
from pysync.shapes.registry import ShapeRegistry, no_span
from pysync.shapes.store import ShapeStore
from pysync.shapes.subqueries.manager import MAX_ROWS as MAX_SUBQUERY_ROWS
from pysync.slot_wal import SlotWal
from pysync.storage_outage import StorageOutage
from pysync.tracing import NO_TRACER, Tracer

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineUnavailable", "ShapeGone", "Status"]

START_WAIT = 30.0
"""How long ``start`` waits for replication to connect (a busy slot is retried 15 s)."""
SLOT_WAIT = 5.0
"""How long a new shape waits for a replaced slot before the client is told to retry."""
CATCH_UP_WAIT = 10.0
"""How long a request that reopened the connections waits for replication to read what
was written meanwhile (then it is answered with what there is, as on any lag)."""

T = TypeVar("T")


class Status(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    DEGRADED = "degraded"
    STOPPED = "stopped"


class EngineUnavailable(Exception):
    """The engine cannot take on work now (storage failing, not started): retry later."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Engine:
    @classmethod
    def from_settings(
        cls,
        database_url: str,
        settings: Settings,
        *,
        in_memory: bool = False,
        tracer: Tracer = NO_TRACER,
    ) -> Engine:
        """The engine as ``pysync serve`` and an embedded ``Sync`` configure it."""
        slot = settings.slot
        if settings.temporary_slot and settings.random_slot_name:
            slot = random_name(slot)
            log.warning(
                "using the temporary replication slot %s: shape storage does not outlive "
                "this process (every restart resyncs every shape)",
                slot,
            )
        elif settings.random_slot_name:
            log.warning(
                "a random slot name is only used for a temporary slot (--temporary-slot / "
                "CLEANUP_REPLICATION_SLOTS_ON_SHUTDOWN): replicating from slot %s",
                slot,
            )
        return cls(
            database_url,
            storage_dir=None if in_memory else settings.shape_storage,
            pooled_database_url=settings.pooled_conninfo(),
            slot=slot,
            publication=settings.publication,
            max_shapes=settings.max_shapes,
            max_subquery_rows=settings.max_subquery_rows,
            chunk_bytes=settings.chunk_bytes,
            snapshot_connections=settings.snapshot_connections,
            compaction=settings.compaction,
            compact_min_bytes=settings.compact_min_bytes,
            schema_check_interval=settings.schema_check_interval,
            manual_publishing=settings.manual_publishing,
            temporary_slot=settings.temporary_slot,
            idle_timeout=settings.replication_idle_timeout,
            tracer=tracer,
        )

    def __init__(
        self,
        database_url: str,
        *,
        storage_dir: Path | str | None = None,
        pooled_database_url: str | None = None,
        slot: str = "pysync",
        publication: str = "pysync",
        max_shapes: int | None = None,
        max_subquery_rows: int = MAX_SUBQUERY_ROWS,
        snapshot_connections: int = 5,
        chunk_bytes: int = CHUNK_BYTES,
        compaction: bool = True,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
        flush_interval: float = 0.05,
        streaming: bool = False,
        lock_timeout: float = 1.0,
        publish_timeout: float = 5.0,
        schema_check_interval: float = SCHEMA_CHECK_INTERVAL,
        manual_publishing: bool = False,
        temporary_slot: bool = False,
        idle_timeout: float = 0.0,
        io: Io = OS_IO,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``schema_check_interval``: seconds between catalog checks of the shapes' tables
        (dropped, recreated, renamed or altered without a replicated change); 0: none.
        ``manual_publishing``: never alter the publication or a table's replica identity
        (Electric's ``ELECTRIC_MANUAL_TABLE_PUBLISHING``). ``pooled_database_url``: the
        same database through a transaction pooler, for every session but replication's
        (Electric's ``ELECTRIC_POOLED_DATABASE_URL``). ``temporary_slot``: replicate
        from a slot Postgres drops when the connection ends (a restart or reconnect
        resyncs every shape). ``idle_timeout``: seconds without a transaction or a shape
        request after which every database connection is closed (0: never; see
        ``idle``). ``tracer``: spans of each
        transaction and snapshot (``pysync.tracing``; the default makes none)."""
        self.database_url = database_url
        self.slot = slot
        self.publication = publication
        self.store = ShapeStore(
            Path(storage_dir) if storage_dir is not None else None,
            chunk_bytes,
            io,
            compact_min_bytes,
        )
        self.connections = Connections(
            pooled_database_url or database_url,
            pooled=pooled_database_url is not None,
            snapshots=snapshot_connections,
            lock_timeout=lock_timeout,
        )
        self.stream = ReplicationStream(
            database_url,
            slot=slot,
            publication=publication,
            streaming=streaming,
            manual_publication=manual_publishing,
            temporary=temporary_slot,
        )
        self.metrics = EngineMetrics()
        appender = Appender()
        publisher = Publisher(
            self.connections, publication, wait=publish_timeout, manual=manual_publishing
        )
        self.registry = ShapeRegistry(
            self.store,
            self.connections,
            publisher,
            appender,
            relations=self.stream.assembler.relations,
            request_position=functools.partial(request_position, self.stream),
            # The schema check and the storage outage are made with the registry: they
            # are reached through the engine.
            on_storage_error=self._storage_failed,
            on_table_changed=self._table_changed,
            snapshot_span=(
                functools.partial(_snapshot_span, tracer) if tracer.enabled else no_span
            ),
            on_snapshot_done=self.metrics.snapshot_seconds.observe,
            max_shapes=max_shapes,
            max_subquery_rows=max_subquery_rows,
        )
        self.replica_identity = ReplicaIdentityWatch(publisher, self._spawn)
        self.collector = Collector(
            self.registry, appender, on_relation=self.replica_identity.changed
        )
        self.compactor = Compactor(enabled=compaction)
        self.schema_check = SchemaCheck(self.registry, schema_check_interval)
        self.flush = FlushTracker(
            self.collector,
            self.store,
            self.stream.acknowledge,
            on_failure=self._flush_failed,
            interval=flush_interval,
            compactor=self.compactor,
        )
        self._gauges()
        self.outage = StorageOutage(
            self.store,
            self.registry,
            self.collector,
            self.flush,
            self.metrics,
            degrade=self._degrade,
            recover=self._recover,
            spawn=self._spawn,
        )
        self.ingest = Ingest(
            database_url,
            slot,
            self.store,
            self.stream,
            self.registry,
            self.collector,
            self.flush,
            self.outage,
            degrade=self._degrade,
            recover=self._recover,
            tracer=tracer,
        )
        self.tracer = tracer
        self.status = Status.STARTING
        self.problem: str | None = None
        """Why the engine is DEGRADED."""
        self.started = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._servers: list[Callable[[], bool]] = []
        """The layers serving this engine, each True while it is busy (``served_by``)."""
        self.idle = (
            IdleClose(
                idle_timeout,
                lambda: self.collector.last_seen_lsn,
                self._busy,
                self._close_all,
                self._reopen,
            )
            if idle_timeout > 0
            else None
        )
        self._idle_tasks: list[asyncio.Task[None]] = []
        """The tasks that sleep stops and wake starts again (schema check, idle check)."""

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the storage, check the slot, recover shapes, start replicating.

        Raises DirectoryInUse, ReplicationError (what to fix), psycopg errors when the
        database cannot be reached, LogCorruptError for a damaged log."""
        await asyncio.to_thread(self.store.open)
        self.flush.rewind(self.store.acknowledged)
        try:
            await self.connections.open()
            await self.ingest.first_connect()
            if self.connections.pooled:
                await self.connections.check_pooled(self.slot)
        except BaseException:
            await self.connections.close()
            self.store.close()
            raise
        replicating = self.ingest.until_connected()
        self._tasks = [
            asyncio.create_task(self.ingest.run(), name="pysync-ingest"),
            asyncio.create_task(self.flush.run(), name="pysync-flush"),
            asyncio.create_task(self.compactor.run(), name="pysync-compaction"),
        ]
        self._start_idle_tasks()
        # Until replication is connected: a slot another process took meanwhile fails the
        # start here, instead of a retry loop behind an engine that seems to work.
        try:
            await asyncio.wait_for(asyncio.shield(replicating), START_WAIT)
        except SlotInUseError:
            await self.stop()
            raise
        except TimeoutError:
            # Slow, not refused: replication goes on trying, shapes are served meanwhile.
            replicating.cancel()
        self.status = Status.ACTIVE
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
        if self.storage_error is None:
            await self.flush.flush()
        await self.stream.close()
        await self.registry.close()
        await self.connections.close()
        self.store.close()
        self.status = Status.STOPPED

    def _start_idle_tasks(self) -> None:
        """Start what works on the database beside ingest, and the idle check."""
        self._idle_tasks = []
        if self.schema_check.interval > 0:
            self._idle_tasks.append(self._task(self.schema_check.run(), "pysync-schema-check"))
        if self.idle is not None:
            self._idle_tasks.append(self._task(self.idle.run(), "pysync-idle"))

    # -- idle close ---------------------------------------------------------------------

    def served_by(self, busy: Callable[[], bool]) -> None:
        """A layer serving this engine (the HTTP API, in-process views) is made:
        ``busy()`` is True while it answers a shape request, one waits for changes or
        a view follows a shape. Idle close waits while any is."""
        self._servers.append(busy)

    def _busy(self) -> bool:
        return any(busy() for busy in self._servers) or self.connections.busy()

    async def wake(self) -> None:
        """A shape request: reopen the connections if idle closed them, and return once
        replication has read what the database wrote meanwhile.

        Raises EngineUnavailable when the database cannot be reached again."""
        if self.idle is not None:
            await self.idle.wake()

    async def _close_all(self) -> None:
        """Close every database connection (the replication one too); shapes stay as
        they are, served again once ``wake`` reopened the connections."""
        checks = [task for task in self._idle_tasks if task is not asyncio.current_task()]
        for task in checks:
            task.cancel()
        if checks:
            await asyncio.wait(checks)
        self._forget_done()
        # The slot keeps what follows: WAL accumulates until wake resumes from the
        # position confirmed here (a temporary slot is dropped: shapes resync then).
        if self.storage_error is None:
            await self.flush.flush()
        self.stream.confirm()
        await self.pause_replication()
        await self.connections.close()

    async def _reopen(self) -> None:
        log.info("a shape request: opening the database connections again")
        await self.connections.reopen()
        replicating = self.ingest.until_connected()
        self.resume_replication()
        try:
            await asyncio.wait_for(asyncio.shield(replicating), START_WAIT)
            await catch_up(
                self.connections,
                lambda: self.collector.applied_end_lsn,
                self.ingest.request_position,
                CATCH_UP_WAIT,
            )
        except Exception as exc:  # noqa: BLE001 - told to the client, the next request retries
            replicating.cancel()
            log.warning("cannot reopen the database connections: %s", exc)
            await self._close_all()
            raise EngineUnavailable(
                f"cannot reopen the database connections: {exc}", retry_after=5
            ) from exc
        self._start_idle_tasks()

    def _forget_done(self) -> None:
        """Drop ended tasks from the list (sleeping and waking repeat), but ingest's:
        it stays first (``pause_replication``)."""
        self._tasks[1:] = [
            task
            for task in self._tasks[1:]
            if not task.done() or (not task.cancelled() and task.exception() is not None)
        ]

    def _storage_failed(self, exc: StorageError) -> None:
        self.outage.failed(exc)

    def _flush_failed(self, exc: StorageError, failed: Failed) -> None:
        self.outage.flush_failed(exc, failed)

    def _table_changed(self) -> None:
        """A shape's table was found dropped or changed, or a partition came or went:
        the schema check runs now (when there is one)."""
        if self.schema_check.interval > 0:
            self.schema_check.soon()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` as one of the engine's tasks: ``stop`` ends it, ``crashed``
        reports its failure."""
        self._task(work, name)

    def _task(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.append(task)
        return task

    def _gauges(self) -> None:
        gauge, stream = self.metrics.gauge, self.stream
        slot_wal = SlotWal(self.connections, self.slot)
        self.metrics.before_scrape.append(slot_wal.refresh)
        gauge(
            "electric_postgres_replication_slot_retained_wal_size",
            "WAL bytes Postgres retains for the slot (Electric's name).",
            lambda: slot_wal.retained_bytes,
        )
        gauge(
            "electric_postgres_replication_slot_confirmed_flush_lsn_lag",
            "WAL bytes between the server's position and the slot's confirmed one "
            "(Electric's name).",
            lambda: slot_wal.confirmed_lag_bytes,
        )
        gauge("pysync_shapes", "Shapes being served.", lambda: len(self.registry))
        gauge(
            "pysync_received_lsn",
            "WAL position received from Postgres.",
            lambda: stream.received_lsn,
        )
        gauge(
            "pysync_acknowledged_lsn",
            "WAL position confirmed to Postgres (durable).",
            lambda: self.flush.acknowledged,
        )
        gauge(
            "pysync_replication_lag_bytes",
            "WAL received but not yet durable in shape logs.",
            lambda: max(0, stream.received_lsn - self.flush.acknowledged),
        )
        gauge(
            "pysync_replication_lag_seconds",
            "Age of the last transaction applied while behind.",
            self.lag_seconds,
        )
        gauge(
            "pysync_up",
            "1 when active, 0 when degraded, starting or stopped.",
            lambda: 1.0 if self.status is Status.ACTIVE else 0.0,
        )

    def lag_seconds(self) -> float:
        """How far behind the server ingest is, in time (0 when caught up)."""
        if (
            self.stream.received_lsn <= self.collector.applied_end_lsn
            or not self.collector.last_commit_time
        ):
            return 0.0
        return max(0.0, time.time() - self.collector.last_commit_time)

    async def pause_replication(self) -> None:
        """Stop reading replication (shapes keep serving what they have)."""
        ingest = self._tasks[0] if self._tasks else None
        if ingest is not None and not ingest.done():
            ingest.cancel()
            await asyncio.wait([ingest])
        self.stream.disconnect()

    def resume_replication(self) -> None:
        """Read replication again, from the last acknowledged position."""
        if self._tasks and self._tasks[0].done():
            self._tasks[0] = asyncio.create_task(self.ingest.run(), name="pysync-ingest")

    @property
    def crashed(self) -> BaseException | None:
        """The exception that ended one of the engine's tasks, if any did (a bug)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    # -- shapes ---------------------------------------------------------------------

    async def shape(self, definition: ShapeDefinition, *, verify: bool = False) -> ShapeConsumer:
        """The shape for a definition, created (and its snapshot started) if new.
        ``verify``: an existing one is checked against the catalog (initial requests).

        Raises ShapeError (the definition is wrong), EngineUnavailable, or
        psycopg.OperationalError (the database cannot be asked)."""
        if not self.started.is_set():
            raise EngineUnavailable("pysync is starting", retry_after=5)
        await self.wake()
        existing = await (
            self.registry.verified(definition) if verify else self.registry.find(definition)
        )
        if existing is not None:
            existing.last_used = time.monotonic()
            return existing
        if self.storage_error is not None:
            raise EngineUnavailable(
                f"shape storage is failing: {self.storage_error}", retry_after=5
            )
        if not self.ingest.slot_ready.is_set():
            try:
                await asyncio.wait_for(self.ingest.slot_ready.wait(), SLOT_WAIT)
            except TimeoutError:
                raise EngineUnavailable(
                    "pysync is replacing its replication slot", retry_after=5
                ) from None
        try:
            return await self.registry.shape(definition)
        except StorageError as exc:
            self.outage.failed(exc)
            raise EngineUnavailable(f"shape storage is failing: {exc}", retry_after=5) from exc

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """The shape equal to ``definition``, without creating one."""
        await self.wake()
        return await self.registry.find(definition)

    def known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """The shape for ``definition`` if one is at hand without a catalog query (nor a
        wake: None while idle closed the connections)."""
        idle = self.idle
        if idle is not None:
            if idle.asleep:
                return None
            idle.touch()
        if not self.started.is_set():
            return None
        return self.registry.known(definition)

    def get(self, handle: str) -> ShapeConsumer | None:
        return self.registry.get(handle)

    async def compute(self, fn: Callable[..., T], *args: object) -> T:
        return await self.registry.compute(fn, *args)

    async def delete(self, handle: str) -> bool:
        return self.registry.delete(handle)

    async def subset_elsewhere(self, consumer: ShapeConsumer, fields: object, schema: str) -> None:
        """Subsets are answered where the engine runs (``ShapeSource``)."""

    @property
    def storage_error(self) -> StorageError | None:
        """Set while storage fails: ingest is stopped, new shapes are refused."""
        return self.outage.error

    def storage_failure(self) -> asyncio.Future[None]:
        """Done when storage fails (already done while it is failing)."""
        return self.outage.failure()

    @property
    def warnings(self) -> list[str]:
        return list(self.replica_identity.warnings.values())

    @property
    def last_seen_lsn(self) -> int:
        """Commit LSN of the last transaction the pipeline processed."""
        return self.collector.last_seen_lsn

    # -- health ---------------------------------------------------------------------

    def _degrade(self, problem: str) -> None:
        """Something fails that the engine outlives (replication, storage): say what."""
        if self.status in (Status.ACTIVE, Status.DEGRADED):
            self.status, self.problem = Status.DEGRADED, problem

    def _recover(self) -> None:
        """What degraded the engine works again."""
        if self.status is Status.DEGRADED:
            self.status, self.problem = Status.ACTIVE, None


SNAPSHOT_SPAN = "shape_snapshot.create_snapshot_task"
"""Electric's span of a shape's snapshot (publishing its table, querying, writing)."""


def _snapshot_span(tracer: Tracer, consumer: ShapeConsumer) -> AbstractContextManager[object]:
    """The snapshot task inherits the context of the request that created the shape:
    its span is a child of that request's."""
    definition = consumer.definition
    attributes = {
        "shape.handle": consumer.handle,
        "shape.root_table": ".".join(definition.relation),
    }
    if definition.where is not None:
        attributes["shape.where"] = definition.where
    return tracer.span(SNAPSHOT_SPAN, attributes)
