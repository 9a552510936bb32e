"""The sync engine, wired: replication stream -> collector -> shape logs -> flush tracker.

    ReplicationStream (postgres)  committed transactions, in order, with Connected,
            |                      RelationChange and Idle items around them
    Collector (shapes)            routes each change to its consumers, appends
            |
    FlushTracker (shapes)         fsyncs what was appended, then acknowledges
    ShapeRegistry (shapes)        shapes: create (snapshot), find, evict, delete, recover

This module only builds the pieces, starts and stops them, and supervises ingest:
a storage error stops it (nothing further is acknowledged) until writing works again,
then replication resumes from the last acknowledged position; a slot that is not the
one the shapes came from invalidates every shape instead of carrying on across a gap.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg

from pysync.metrics import EngineMetrics
from pysync.postgres.connections import Connections
from pysync.postgres.publication import Publisher
from pysync.postgres.replication import Connected, Idle, ReplicationStream
from pysync.postgres.slot import ReplicationError, SlotInUseError, SlotInvalidatedError, drop_slot
from pysync.postgres.transactions import RelationChange, Transaction
from pysync.shapes.collector import Collector
from pysync.shapes.consumer import ShapeConsumer, ShapeGone
from pysync.shapes.definition import ShapeDefinition
from pysync.shapes.flush import Failed, FlushTracker
from pysync.shapes.log import CHUNK_BYTES
from pysync.shapes.registry import ShapeRegistry
from pysync.shapes.storage import OS_IO, Io, StorageError
from pysync.shapes.store import ShapeStore, SlotIdentity, gap_reason

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineUnavailable", "ShapeGone", "Status"]

RETRY_SECONDS = 5.0
"""Longest pause between attempts to replicate (or to write storage) again."""
START_WAIT = 30.0
"""How long ``start`` waits for replication to connect (a busy slot is retried 15 s)."""
SLOT_WAIT = 5.0
"""How long a new shape waits for a replaced slot before the client is told to retry."""

T = TypeVar("T")


class Status(enum.Enum):
    STARTING = "starting"
    ACTIVE = "active"
    DEGRADED = "degraded"
    STOPPED = "stopped"


class _Resync(Exception):
    """Reconnect from where the slot is (after adopting another slot)."""


class EngineUnavailable(Exception):
    """The engine cannot take on work now (storage failing, not started): retry later."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


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
        lock_timeout: float = 1.0,
        publish_timeout: float = 5.0,
        io: Io = OS_IO,
    ) -> None:
        self.database_url = database_url
        self.slot = slot
        self.publication = publication
        self.store = ShapeStore(Path(storage_dir) if storage_dir is not None else None, chunk_bytes, io)
        self.connections = Connections(database_url, snapshots=snapshot_connections, lock_timeout=lock_timeout)
        self.stream = ReplicationStream(database_url, slot=slot, publication=publication, streaming=streaming)
        self.registry = ShapeRegistry(
            self.store, self.connections, Publisher(self.connections, publication, wait=publish_timeout),
            max_shapes=max_shapes,
        )
        self.collector = Collector(self.registry)
        self.flush = FlushTracker(self.collector, self.store, self.stream.acknowledge, interval=flush_interval)
        self.metrics = EngineMetrics()
        self._gauges()
        self.registry.on_storage_error = self._storage_failed
        self.registry.subqueries.request_position = self._request_position
        self.registry.on_snapshot_done = self.metrics.snapshot_seconds.observe
        self.flush.on_failure = self._flush_failed
        self.status = Status.STARTING
        self.problem: str | None = None
        """Why the engine is DEGRADED."""
        self.storage_error: StorageError | None = None
        """Set while storage fails: ingest is stopped, new shapes are refused."""
        self.started = asyncio.Event()
        self._storage_ok = asyncio.Event()
        self._storage_ok.set()
        self._storage_failure: asyncio.Future[None] | None = None
        self._slot_ready = asyncio.Event()
        """Set while the slot is the one the shapes come from: new shapes wait for it
        (a shape made while the slot is being replaced could miss changes)."""
        self._halt: StorageError | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._replicating: asyncio.Future[None] | None = None
        """Done once replication first connected (or failed to, on a busy slot)."""

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the storage, check the slot, recover shapes, start replicating.

        Raises DirectoryInUse, ReplicationError (what to fix), psycopg errors when the
        database cannot be reached, LogCorruptError for a damaged log."""
        await asyncio.to_thread(self.store.open)
        self.flush.rewind(self.store.acknowledged)
        try:
            await self.connections.open()
            await self._first_connect()
        except BaseException:
            await self.connections.close()
            self.store.close()
            raise
        self._replicating = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._ingest(), name="pysync-ingest"),
            asyncio.create_task(self.flush.run(), name="pysync-flush"),
        ]
        # Until replication is connected: a slot another process took meanwhile fails the
        # start here, instead of a retry loop behind an engine that seems to work.
        try:
            await asyncio.wait_for(asyncio.shield(self._replicating), START_WAIT)
        except SlotInUseError:
            await self.stop()
            raise
        except TimeoutError:
            # Slow, not refused: replication goes on trying, shapes are served meanwhile.
            self._replicating.cancel()
        self.status = Status.ACTIVE
        self.started.set()

    async def _first_connect(self) -> None:
        try:
            connected = await self.stream.identify()
        except SlotInvalidatedError as exc:
            # Lost while we were down: as when it happens while running (see _ingest).
            log.error("%s; resyncing every shape", exc)
            await asyncio.to_thread(self._drop_slot)
            connected = await self.stream.identify()
        gap = self._slot_gap(connected)
        if gap:
            await asyncio.to_thread(self.registry.discard_recorded)
        else:
            await self.registry.recover()
        self._adopt(connected, gap)
        self._slot_ready.set()

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

    def _gauges(self) -> None:
        gauge, stream = self.metrics.gauge, self.stream
        gauge("pysync_shapes", "Shapes being served.", lambda: len(self.registry))
        gauge("pysync_received_lsn", "WAL position received from Postgres.", lambda: stream.received_lsn)
        gauge("pysync_acknowledged_lsn", "WAL position confirmed to Postgres (durable).",
              lambda: self.flush.acknowledged)
        gauge("pysync_replication_lag_bytes", "WAL received but not yet durable in shape logs.",
              lambda: max(0, stream.received_lsn - self.flush.acknowledged))
        gauge("pysync_replication_lag_seconds", "Age of the last transaction applied while behind.",
              self.lag_seconds)
        gauge("pysync_up", "1 when active, 0 when degraded, starting or stopped.",
              lambda: 1.0 if self.status is Status.ACTIVE else 0.0)

    def lag_seconds(self) -> float:
        """How far behind the server ingest is, in time (0 when caught up)."""
        if self.stream.received_lsn <= self.collector.applied_end_lsn or not self.collector.last_commit_time:
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
            self._tasks[0] = asyncio.create_task(self._ingest(), name="pysync-ingest")

    @property
    def crashed(self) -> BaseException | None:
        """The exception that ended one of the engine's tasks, if any did (a bug)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    # -- shapes ---------------------------------------------------------------------

    async def shape(self, definition: ShapeDefinition) -> ShapeConsumer:
        """The shape for a definition, created (and its snapshot started) if new.

        Raises ShapeError (the definition is wrong), EngineUnavailable, or
        psycopg.OperationalError (the database cannot be asked)."""
        if not self.started.is_set():
            raise EngineUnavailable("pysync is starting", retry_after=5)
        existing = await self.registry.find(definition)
        if existing is not None:
            existing.last_used = time.monotonic()
            return existing
        if self.storage_error is not None:
            raise EngineUnavailable(f"shape storage is failing: {self.storage_error}", retry_after=5)
        if not self._slot_ready.is_set():
            try:
                await asyncio.wait_for(self._slot_ready.wait(), SLOT_WAIT)
            except TimeoutError:
                raise EngineUnavailable("pysync is replacing its replication slot", retry_after=5) from None
        try:
            return await self.registry.shape(definition)
        except StorageError as exc:
            self._storage_failed(exc)
            raise EngineUnavailable(f"shape storage is failing: {exc}", retry_after=5) from exc

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """The shape equal to ``definition``, without creating one."""
        return await self.registry.find(definition)

    def known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        """The shape for ``definition`` if one is at hand without a catalog query."""
        if not self.started.is_set():
            return None
        return self.registry.known(definition)

    def get(self, handle: str) -> ShapeConsumer | None:
        return self.registry.get(handle)

    async def compute(self, fn: Callable[..., T], *args: object) -> T:
        return await self.registry.compute(fn, *args)

    def delete(self, handle: str) -> bool:
        return self.registry.delete(handle)

    def storage_failure(self) -> asyncio.Future[None]:
        """Done when storage fails (already done while it is failing)."""
        future = self._storage_failure
        if future is None or (future.done() and self.storage_error is None):
            future = self._storage_failure = asyncio.get_running_loop().create_future()
        if self.storage_error is not None and not future.done():
            future.set_result(None)
        return future

    @property
    def last_seen_lsn(self) -> int:
        """Commit LSN of the last transaction the pipeline processed."""
        return self.collector.last_seen_lsn

    # -- ingest ---------------------------------------------------------------------

    async def _ingest(self) -> None:
        failures = 0
        while True:
            try:
                await self._storage_ok.wait()
                self._halt = None
                self.stream.rewind()
                self.collector.rewind(self.flush.acknowledged)
                await self._replicate()
            except StorageError as exc:
                if exc is not self._halt:  # else: the halt of a failure seen elsewhere
                    self._storage_failed(exc)
            except _Resync:
                pass
            except SlotInvalidatedError as exc:
                log.error("%s; resyncing every shape", exc)
                self._slot_ready.clear()
                self.registry.invalidate_all("replication slot lost")
                await asyncio.to_thread(self._drop_slot)
                self.stream.reset()
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - replication must outlive any one failure
                if isinstance(exc, SlotInUseError) and self._replicating and not self._replicating.done():
                    self._replicating.set_exception(exc)  # still starting: start() raises it
                    return
                # E.g. the slot taken by another process: say so, then try again; shapes
                # keep serving what they have meanwhile.
                failures += 1
                delay = min(RETRY_SECONDS, 0.5 * 2 ** min(failures, 4))
                self._degrade(f"replication: {exc}")
                if failures == 1 and isinstance(exc, ReplicationError):
                    log.error("replication stopped: %s; retrying every %.0f s", exc, RETRY_SECONDS)
                elif failures == 1:
                    log.exception("replication stopped; retrying every %.0f s", delay)
                else:
                    log.warning("replication still failing (%s); retrying in %.1f s", exc, delay)
                self.stream.disconnect()
                await asyncio.sleep(delay)
            else:
                failures = 0
            finally:
                self.stream.disconnect()

    async def _replicate(self) -> None:
        collector = self.collector
        yielded = time.monotonic()
        async for item in self.stream.transactions():
            if self._halt is not None:
                raise self._halt
            kind = type(item)
            if kind is Transaction:
                collector.apply(item)  # type: ignore[arg-type]
            elif kind is RelationChange:
                collector.relation_changed(item)  # type: ignore[arg-type]
            elif kind is Idle:
                collector.idle(item.lsn)  # type: ignore[union-attr]
            elif kind is Connected:
                self._connected(item)  # type: ignore[arg-type]
            # The stream only awaits when the socket is drained: under a steady write
            # load it never is, and snapshots, the flush loop (hence acknowledgements)
            # and requests starved. Let them run every few ms.
            now = time.monotonic()
            if now - yielded > 0.005:
                await asyncio.sleep(0)
                yielded = time.monotonic()

    # -- the slot -------------------------------------------------------------------

    def _connected(self, connected: Connected) -> None:
        if self._replicating is not None and not self._replicating.done():
            self._replicating.set_result(None)
        gap = self._slot_gap(connected)
        if gap:
            self.registry.invalidate_all("replication slot changed")
        self._adopt(connected, gap)
        self._slot_ready.set()
        if self.status is Status.DEGRADED and self.storage_error is None:
            self.status, self.problem = Status.ACTIVE, None
        if gap and connected.start_lsn > self.flush.acknowledged:
            raise _Resync  # this connection asked for a position of the old slot

    def _slot_gap(self, connected: Connected) -> bool:
        """Is ``connected`` a slot the stored shapes cannot continue from? Logs why."""
        reason = gap_reason(
            self.store.slot_identity, _identity(connected), created=connected.created,
            confirmed=connected.confirmed_lsn, acknowledged=self.flush.acknowledged,
            has_shapes=bool(len(self.registry)) or self.store.has_records(),
        )
        if reason is not None:
            log.warning("%s; every shape is resynced (clients refetch)", reason)
        return reason is not None

    def _adopt(self, connected: Connected, gap: bool) -> None:
        """Go on from this slot: it is what the shapes (now) come from."""
        identity = _identity(connected)
        if not gap and identity == self.store.slot_identity:
            return  # the slot may lag what was acknowledged (Postgres restarted): fine
        position = connected.confirmed_lsn
        self.store.save_acknowledged(position)
        self.store.save_slot_identity(identity)
        self.flush.rewind(position)
        self.collector.rewind(position)
        self.stream.reset()
        self.stream.acknowledge(position)

    def _request_position(self) -> None:
        try:
            self.stream.request_position()
        except (psycopg.Error, OSError) as exc:  # the read loop notices and reconnects
            log.debug("could not ask for the replication position: %s", exc)

    def _drop_slot(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            drop_slot(conn, self.slot)

    # -- storage failures -------------------------------------------------------------

    def _storage_failed(self, exc: StorageError) -> None:
        """Stop ingest (nothing more is acknowledged) until storage can be written."""
        self.metrics.storage_errors.inc()
        if self.storage_error is None:
            log.error("%s: ingest stopped, new shapes refused until it can be written again", exc)
            self.storage_error = exc
            self._halt = exc
            self._degrade(f"storage: {exc}")
            self._storage_ok.clear()
            # Live requests answer now (503) instead of waiting for changes that won't come.
            self.storage_failure()
            self._tasks.append(asyncio.create_task(self._probe_storage(), name="pysync-storage-probe"))

    def _flush_failed(self, exc: StorageError, failed: Failed) -> None:
        # On the event loop, with ingest suspended between transactions: the logs lose
        # what was not durable before anything more is appended, and replication
        # resumes from the acknowledged position, which precedes all of it.
        self._storage_failed(exc)
        # Nothing applied since the last acknowledgement counts any more: the flush
        # tracker must not confirm it (the stream delivers it again).
        self.collector.rewind(self.flush.acknowledged)
        self._halt = self._halt or exc
        for consumer, _ in failed:
            if consumer.subquery is not None:
                # its views are ahead of what its log keeps: the replay cannot rebuild it
                self.registry.invalidate(consumer, "its log lost what it had not synced")
                continue
            try:
                consumer.log.discard_unsynced()
                consumer.storage_rolled_back()
            except StorageError:
                self.registry.invalidate(consumer, "its log could not be repaired")

    async def _probe_storage(self) -> None:
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(self.store.probe)
            except StorageError as exc:
                log.debug("storage still failing: %s", exc)
                delay = min(delay * 2, RETRY_SECONDS)
                continue
            break
        log.warning("shape storage can be written again: resuming ingest")
        self.storage_error = None
        if self.status is Status.DEGRADED:
            self.status, self.problem = Status.ACTIVE, None
        self._storage_ok.set()

    def _degrade(self, problem: str) -> None:
        if self.status in (Status.ACTIVE, Status.DEGRADED):
            self.status, self.problem = Status.DEGRADED, problem


def _identity(connected: Connected) -> SlotIdentity:
    return SlotIdentity(connected.system_id, connected.timeline, connected.database, connected.slot)
