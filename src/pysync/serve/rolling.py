"""Rolling deploys: a ``pysync serve`` started on a storage directory another one holds
serves that one's shapes read-only (``standby.py``) and takes over when it stops.

The directory's lock (``lockfile.py``) is the takeover point: only its holder appends
to logs, creates shapes, or touches the slot and the publication. The standby tries the
lock every ``LOCK_POLL``; once it has it (the old process stopped, or died: the lock
dies with it), the engine starts on the directory as after a restart: it recovers the
recorded shapes under their handles, and replication goes on from the slot's confirmed
position (shapes skip what their logs already hold). No client is told to refetch.

A request parked on a standby's shape at the takeover keeps the shape it holds: that
shape now follows the engine's log in this process (as an HTTP worker follows the
replicating process's), so it is answered with the first changes made after the
takeover. It stops following once no request holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import weakref
from collections.abc import Callable
from typing import TypeVar

from pysync.engine import Engine, EngineUnavailable
from pysync.http.source import SubsetReply
from pysync.lockfile import DirectoryInUse
from pysync.log.storage import StorageError
from pysync.metrics import EngineMetrics
from pysync.postgres.connections import Connections
from pysync.serve.standby import StandbyEngine
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.definition import ShapeDefinition

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_POLL = 0.05
"""Seconds between attempts at the storage directory's lock."""
NEW_SHAPE_WAIT = 5.0
"""How long a request for a shape storage does not have waits for the takeover before
it is answered 503 (Electric's ``ELECTRIC_STACK_READY_TIMEOUT`` default)."""
WAITING = (
    "Timeout waiting for storage lock acquisition: another pysync instance holds the "
    "storage directory (a rolling deploy); only its existing shapes are served until this "
    "one takes over"
)


class RollingSource:
    """The ``ShapeSource`` of a ``pysync serve`` that started as a standby: the standby's
    shapes until the takeover, the engine's after."""

    def __init__(self, engine: Engine, standby: StandbyEngine) -> None:
        self.engine = engine
        self.standby = standby
        self.current: Engine | StandbyEngine = standby
        self.took_over = asyncio.Event()
        self.failure: BaseException | None = None
        """Why the takeover failed (the engine could not start): the server stops."""
        self.failed = asyncio.Event()
        """Set with ``failure``."""
        self._locked = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, engine: Engine, *, chunk_bytes: int, hold_seconds: float) -> RollingSource:
        """``hold_seconds``: the longest a request is held (a long-poll, an SSE
        response), and a second: logs used as recently are polled for changes."""
        assert engine.store.directory is not None
        standby = StandbyEngine(
            engine.store.directory,
            Connections(engine.database_url, snapshots=2),
            engine.metrics,
            chunk_bytes=chunk_bytes,
            hold_seconds=hold_seconds,
        )
        await standby.start()
        source = cls(engine, standby)
        source._task = asyncio.create_task(source._take_over(), name="pysync-takeover")
        return source

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.standby.stop()
        if self._locked and self.failure is None:
            await self.engine.stop()  # started, or stopped while it started

    # -- the takeover -----------------------------------------------------------------

    async def _take_over(self) -> None:
        while True:
            try:
                self.engine.store.lock()
                self._locked = True
                break
            except DirectoryInUse:
                await asyncio.sleep(LOCK_POLL)
        log.warning("the storage directory is free: this instance takes over replication")
        try:
            await self.engine.start()
        except Exception as exc:  # noqa: BLE001 - said by ``serve``, which stops
            self.failure = exc
            self.failed.set()
            return
        await self.standby.stop_following()
        for followed in self.standby.release():
            _bridge(followed, self.engine.get(followed.handle))
        self.current = self.engine
        self.took_over.set()
        log.warning("took over: replicating, and serving every shape")

    async def _after_takeover(self) -> None:
        """For what the standby cannot do (make a shape, delete one): wait for the
        takeover, at most ``NEW_SHAPE_WAIT`` (then 503, as Electric)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.took_over.wait()), NEW_SHAPE_WAIT)
        except TimeoutError:
            raise EngineUnavailable(WAITING, retry_after=5) from None

    # -- ShapeSource ------------------------------------------------------------------

    @property
    def metrics(self) -> EngineMetrics:
        return self.engine.metrics

    @property
    def status(self) -> enum.Enum:
        return self.current.status

    @property
    def problem(self) -> str | None:
        return self.current.problem

    @property
    def warnings(self) -> list[str]:
        return self.current.warnings

    @property
    def storage_error(self) -> StorageError | None:
        return self.current.storage_error

    @property
    def started(self) -> asyncio.Event:
        return self.current.started

    @property
    def connections(self) -> Connections:
        return self.current.connections

    @property
    def last_seen_lsn(self) -> int:
        return self.current.last_seen_lsn

    async def shape(self, definition: ShapeDefinition, *, verify: bool = False) -> ShapeConsumer:
        if self.current is self.standby:
            consumer = await self.standby.existing(definition, verify=verify)
            if consumer is not None and self.current is self.standby:
                return consumer
            await self._after_takeover()
        return await self.engine.shape(definition, verify=verify)

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        if self.current is self.standby:
            consumer = await self.standby.existing(definition, verify=False)
            if self.current is self.standby:
                return consumer
        return await self.engine.find(definition)

    def known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        return self.current.known(definition)

    def get(self, handle: str) -> ShapeConsumer | None:
        return self.current.get(handle)

    async def delete(self, handle: str) -> bool:
        if self.current is self.standby:
            await self._after_takeover()
        return await self.engine.delete(handle)

    def storage_failure(self) -> asyncio.Future[None]:
        return self.current.storage_failure()

    async def subset_elsewhere(
        self, consumer: ShapeConsumer, fields: dict[str, object], schema: str
    ) -> SubsetReply | None:
        # Answered in this process: the standby's shapes have no subqueries, and the
        # engine's are here (with workers, each worker asks the engine's hub itself).
        return None

    async def compute(self, fn: Callable[..., T], *args: object) -> T:
        return await self.current.compute(fn, *args)


def _bridge(followed: ShapeConsumer, current: ShapeConsumer | None) -> None:
    """``followed`` (a standby's shape) follows ``current`` (the engine's, on the same
    log) while a request holds it; gone with it (its requests then get a 409)."""
    if current is None:
        followed.invalidate("gone at the takeover")  # its table changed meanwhile
        return
    ref = weakref.ref(followed)

    def step(_: object = None) -> None:
        mirror = ref()
        if mirror is None or mirror.gone:
            return
        if current.gone:
            mirror.invalidate(current.reason or "gone")
            return
        mirror.log.follow(current.log.storage.written_size())
        current.log.waiter().add_done_callback(step)

    step()
