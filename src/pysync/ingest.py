"""Ingest: the replication stream read into the collector, supervised.

Every (re)connect is checked against what the storage directory recorded: a slot that is
not the one the shapes came from (or one that skipped what they hold) invalidates every
shape instead of carrying on across a gap, and is adopted as where shapes now come from.
A failure reconnects with backoff, shapes serving what they have meanwhile; a lost slot
is dropped and made again. A storage outage halts ingest until storage can be written;
each attempt starts again from the last acknowledged position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import psycopg

from pysync.log.storage import StorageError
from pysync.postgres.replication import Connected, Disconnected, Idle, ReplicationStream
from pysync.postgres.slot import ReplicationError, SlotInUseError, SlotInvalidatedError, drop_slot
from pysync.postgres.transactions import Change, RelationChange, Transaction
from pysync.shapes.collector import Collector, TxnMeasure
from pysync.shapes.flush import FlushTracker
from pysync.shapes.registry import ShapeRegistry
from pysync.shapes.store import ShapeStore, SlotIdentity, gap_reason
from pysync.storage_outage import StorageOutage
from pysync.tracing import NO_TRACER, Tracer

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
SLICE = 0.005
"""Seconds of ingest between pauses for the rest of the event loop (requests, flushes)."""
SLICE_BEHIND = 0.05
"""The same while working through a backlog."""
"""Longest pause between attempts to replicate again."""
TXN_SPAN = "pg_txn.replication_client.transaction_received"
"""Electric's span of a transaction's processing (its attribute names too)."""


class _Resync(Exception):
    """Reconnect from where the slot is (after adopting another slot)."""


class Ingest:
    def __init__(
        self,
        database_url: str,
        slot: str,
        store: ShapeStore,
        stream: ReplicationStream,
        registry: ShapeRegistry,
        collector: Collector,
        flush: FlushTracker,
        outage: StorageOutage,
        *,
        degrade: Callable[[str], None],
        recover: Callable[[], None],
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self.database_url = database_url
        self.slot = slot
        self.store = store
        self.stream = stream
        self.registry = registry
        self.collector = collector
        self.flush = flush
        self.outage = outage
        self._degrade = degrade
        self._recover = recover
        self.slot_ready = asyncio.Event()
        """Set while the slot is the one the shapes come from: new shapes wait for it
        (a shape made while the slot is being replaced could miss changes)."""
        self._replicating: asyncio.Future[None] | None = None
        self.tracer = tracer
        self._measure = TxnMeasure()

    async def first_connect(self) -> None:
        """Check the slot, then recover the stored shapes (or discard them, on a gap)."""
        try:
            connected = await self.stream.identify()
        except SlotInvalidatedError as exc:
            # Lost while we were down: as when it happens while running (see run).
            log.error("%s; resyncing every shape", exc)
            await asyncio.to_thread(self._drop_slot)
            connected = await self.stream.identify()
        gap = self._slot_gap(connected)
        if gap:
            await asyncio.to_thread(self.registry.discard_recorded)
        else:
            await self.registry.recover()
        self._adopt(connected, gap)
        self.slot_ready.set()

    def until_connected(self) -> asyncio.Future[None]:
        """Done once replication connects, or failed with SlotInUseError while the slot
        is busy (then ``run`` returns); cancelled, it is no longer waited for."""
        self._replicating = asyncio.get_running_loop().create_future()
        return self._replicating

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.outage.resume()
                self.stream.rewind()
                self.collector.rewind(self.flush.acknowledged)
                await self._replicate()
            except StorageError as exc:
                if exc is not self.outage.halt:  # else: the halt of a failure seen elsewhere
                    self.outage.failed(exc)
            except _Resync:
                pass
            except SlotInvalidatedError as exc:
                log.error("%s; resyncing every shape", exc)
                self.slot_ready.clear()
                self.registry.invalidate_all("replication slot lost")
                await asyncio.to_thread(self._drop_slot)
                self.stream.reset()
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - replication must outlive any one failure
                if (
                    isinstance(exc, SlotInUseError)
                    and self._replicating
                    and not self._replicating.done()
                ):
                    self._replicating.set_exception(exc)  # still starting: Engine.start raises it
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
        collector, outage, stream = self.collector, self.outage, self.stream
        partitions = self.registry.partitions
        yielded = time.monotonic()
        waits = stream.waits
        apply = self.applier()
        async for item in stream.transactions():
            if outage.halt is not None:
                raise outage.halt
            kind = type(item)
            if kind is Transaction:
                apply(item)  # type: ignore[arg-type]
            elif kind is RelationChange:
                if partitions.active:  # a partition's changes go to its ancestors' shapes
                    await partitions.annotate(item.relation)  # type: ignore[union-attr]
                collector.relation_changed(item)  # type: ignore[arg-type]
            elif kind is Idle:
                collector.idle(item.lsn)  # type: ignore[union-attr]
            elif kind is Connected:
                self._connected(item)  # type: ignore[arg-type]
            elif kind is Disconnected:
                self._degrade(item.reason)  # type: ignore[union-attr]
            # The stream only awaits when the socket is drained: under a steady write
            # load it never is, and snapshots, the flush loop (hence acknowledgements)
            # and requests starved. Let them run every few ms; every 50 ms while working
            # through a backlog (the stream has not waited for data since the last
            # pause): every pause lets each live client take a response, and a hundred
            # clients answered after every 5 ms of ingest took half the process with tiny
            # responses while the lag grew. Behind, fewer and larger responses.
            now = time.monotonic()
            if now - yielded > (SLICE if stream.waits != waits else SLICE_BEHIND):
                await asyncio.sleep(0)
                yielded = time.monotonic()
                waits = stream.waits

    def applier(self) -> Callable[[Transaction], None]:
        """What each transaction goes to, chosen once per connection: the collector
        itself, or (tracing) the collector in a span per transaction."""
        return self._traced_apply if self.tracer.enabled else self.collector.apply

    def _traced_apply(self, txn: Transaction) -> None:
        """``collector.apply`` in a span per transaction, with what it did as Electric
        names it, worked out only for a span that is recorded (not sampled out). A
        StorageError is recorded on the span and raised on."""
        collector = self.collector
        with self.tracer.span(TXN_SPAN, {"xid": txn.xid}) as span:
            recording = span.is_recording()
            collector.apply(txn, self._measure if recording else None)
            if not recording:
                return
            changes = txn.changes
            relations: set[int] = set()
            for change in changes:
                if isinstance(change, Change):
                    relations.add(change.relation.oid)
                else:
                    relations.update(relation.oid for relation in change.relations)
            measure = self._measure
            span.set_attributes(
                {
                    "lsn": txn.commit_lsn,
                    "num_changes": len(changes),
                    "num_relations": len(relations),
                    "complete_transaction?": True,
                    "shape_log_collector.affected_shape_count": measure.shapes,
                    "num_bytes": measure.bytes,
                    # Milliseconds from the commit in Postgres until now.
                    "replication_lag": max(
                        0, round((time.time() - collector.last_commit_time) * 1000)
                    ),
                }
            )

    # -- the slot -------------------------------------------------------------------

    def _connected(self, connected: Connected) -> None:
        if self._replicating is not None and not self._replicating.done():
            self._replicating.set_result(None)
        gap = self._slot_gap(connected)
        if gap:
            self.registry.invalidate_all("replication slot changed")
        self._adopt(connected, gap)
        self.slot_ready.set()
        if self.outage.error is None:
            self._recover()
        if gap and connected.start_lsn > self.flush.acknowledged:
            raise _Resync  # this connection asked for a position of the old slot

    def _slot_gap(self, connected: Connected) -> bool:
        """Is ``connected`` a slot the stored shapes cannot continue from? Logs why."""
        reason = gap_reason(
            self.store.slot_identity,
            _identity(connected),
            created=connected.created,
            confirmed=connected.confirmed_lsn,
            acknowledged=self.flush.acknowledged,
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

    def request_position(self) -> None:
        """Have the stream report its position (an ``Idle`` soon)."""
        request_position(self.stream)

    def _drop_slot(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            drop_slot(conn, self.slot)


def request_position(stream: ReplicationStream) -> None:
    """Have ``stream`` report its position (an ``Idle`` soon): a subquery's move-in waits
    for it to pass a snapshot's position, a wake for it to read what was written."""
    try:
        stream.request_position()
    except (psycopg.Error, OSError) as exc:  # the read loop notices and reconnects
        log.debug("could not ask for the replication position: %s", exc)


def _identity(connected: Connected) -> SlotIdentity:
    return SlotIdentity(connected.system_id, connected.timeline, connected.database, connected.slot)
