"""An HTTP worker's shapes: the replicating process's logs, followed from disk.

A shape becomes known to a worker when it asks the hub for it (the hub creates it if
need be); the worker then reads the shape's log file read-only, and every ``Grown``
announcement indexes what was appended and wakes the waiting requests, exactly as an
append does in the replicating process. Responses are built by the same code from the
same bytes, under the same handles and offsets, so they are the same bytes as a
single-process server's (what makes caching them safe).

A shape that leaves the replicating process's registry (deleted, invalidated, evicted)
is dropped here as soon as the hub says so (``Gone``), and the hub hears back: it
answers the deletion, or hands out the shape made in its place, only once every worker
dropped the old one. Its handle is remembered as gone, so that a reply about it still
on its way does not bring it back. A reply's shape is mirrored as the reply is read,
before the next message: what the hub says of it next (its snapshot done) is not lost.

One difference: a shape whose snapshot failed is reported gone (the client refetches
and the new attempt reports the error), since the error itself stays in the
replicating process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from pysync.engine import EngineUnavailable, Status
from pysync.http.errors import ShapeAPIError
from pysync.http.source import SubsetReply
from pysync.log.followed_storage import FollowedStorage
from pysync.log.log import ShapeLog
from pysync.log.storage import StorageError
from pysync.metrics import EngineMetrics
from pysync.postgres.connections import Connections
from pysync.serve.notify import (
    Ask,
    Delete,
    Deleted,
    Dropped,
    Found,
    Gone,
    Grown,
    Message,
    Ready,
    Subset,
    SubsetDone,
    frame,
    receive,
)
from pysync.serve.notify import Status as StatusMessage
from pysync.shapes.consumer import GONE, LIVE, SNAPSHOTTING, ShapeConsumer, ShapeGone
from pysync.shapes.definition import ShapeDefinition, ShapeError, build_shape

log = logging.getLogger(__name__)

T = TypeVar("T")
COMPILE_TIMEOUT = 10.0
"""As the replicating process's registry allows a clause to compile."""
REMEMBERED_GONE = 10_000
"""Handles of gone shapes kept (handles are never reused; a reply naming one can only
be in flight for moments)."""
ASK_ATTEMPTS = 3
"""Asks for a definition whose answer named a shape gone meanwhile."""


class MirrorEngine:
    """A ``ShapeSource`` over the hub's shapes."""

    def __init__(
        self,
        hub: Path,
        storage_dir: Path,
        database_url: str,
        *,
        pooled_database_url: str | None = None,
        chunk_bytes: int,
        snapshot_connections: int,
    ) -> None:
        self.hub = hub
        self.storage_dir = storage_dir
        self.chunk_bytes = chunk_bytes
        self.metrics = EngineMetrics()
        self.status = Status.STARTING
        self.problem: str | None = None
        self.warnings: list[str] = []
        self.storage_error: StorageError | None = None
        self.started = asyncio.Event()
        self.connections = Connections(
            pooled_database_url or database_url,
            pooled=pooled_database_url is not None,
            snapshots=snapshot_connections,
        )
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the hub went away (the replicating process ended)."""
        self._lsn = 0
        self._by_handle: dict[str, ShapeConsumer] = {}
        self._by_definition: dict[ShapeDefinition, ShapeConsumer] = {}
        self._asks: dict[int, tuple[ShapeDefinition, asyncio.Future[Found]]] = {}
        self._deletes: dict[int, asyncio.Future[bool]] = {}
        self._subsets: dict[int, asyncio.Future[SubsetDone]] = {}
        self._gone: dict[str, None] = {}
        """Recently gone handles, oldest first."""
        self._asking: dict[
            tuple[ShapeDefinition, bool, bool], asyncio.Future[ShapeConsumer | None]
        ] = {}
        self._ids = itertools.count()
        self._failure: asyncio.Future[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(str(self.hub))
        await self.connections.open()
        self._task = asyncio.create_task(self._listen(reader), name="pysync-mirror")
        started: asyncio.Future[Any] = asyncio.ensure_future(self.started.wait())
        await asyncio.wait([started, self.closed], return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
        await self.connections.close()
        for consumer in self._by_handle.values():
            consumer.log.notify()

    def ready(self, pid: int) -> None:
        self._send(Ready(pid))

    def _send(self, message: Message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(frame(message))

    # -- what the hub says ------------------------------------------------------------

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await receive(reader)
                if isinstance(message, Grown):
                    self._grown(message)
                elif isinstance(message, Found):
                    self._answered(message)
                elif isinstance(message, Gone):
                    self._dropped(message)
                elif isinstance(message, SubsetDone):
                    subset = self._subsets.pop(message.id, None)
                    if subset is not None and not subset.done():
                        subset.set_result(message)
                elif isinstance(message, Deleted):
                    deleted = self._deletes.pop(message.id, None)
                    if deleted is not None and not deleted.done():
                        deleted.set_result(message.found)
                elif isinstance(message, StatusMessage):
                    self._status(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.warning("the replicating process is gone: this worker stops")
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
            replies: list[asyncio.Future[Any]] = [
                *(reply for _, reply in self._asks.values()),
                *self._deletes.values(),
                *self._subsets.values(),
            ]
            for reply in replies:
                if not reply.done():
                    reply.set_exception(EngineUnavailable("pysync is restarting", 1))

    def _grown(self, message: Grown) -> None:
        self._lsn = max(self._lsn, message.lsn)
        consumer = self._by_handle.get(message.handle)
        if consumer is None:
            return
        try:
            self._apply(consumer, message.size, message.state, message.reason)
        except Exception:  # noqa: BLE001 - one shape's failure, not the channel's
            # Out of the channel's loop, it would stop this worker for every shape:
            # the shape is dropped here instead (its clients refetch it through the hub).
            log.exception("this worker cannot follow shape %s: dropped here", consumer.handle)
            self._forget(consumer, "this worker could not read the shape's log")

    def _dropped(self, gone: Gone) -> None:
        self._gone[gone.handle] = None
        if len(self._gone) > REMEMBERED_GONE:
            del self._gone[next(iter(self._gone))]
        consumer = self._by_handle.get(gone.handle)
        if consumer is not None:
            self._forget(consumer, gone.reason or "gone")  # its waiting requests wake
        self._send(Dropped(gone.number))

    def _answered(self, found: Found) -> None:
        """The shape named by a ``Found`` is mirrored here, before the next message is
        read: the ``Grown`` that follows it on the channel (its snapshot done, a commit)
        may already be in the same read, and one for a shape not yet mirrored is lost.
        The request it answers would then wait for a snapshot it is never told of."""
        pending = self._asks.pop(found.id, None)
        if pending is None:
            return
        definition, reply = pending
        if reply.done():
            return
        handle = found.handle
        if handle is not None and handle not in self._gone and handle not in self._by_handle:
            try:
                self._mirror(definition, found)
            except FileNotFoundError:
                pass  # deleted since the reply: the request finds no shape and says so
            except Exception as exc:  # noqa: BLE001 - the request's failure, not the channel's
                reply.set_exception(exc)
                return
        reply.set_result(found)

    def _apply(self, consumer: ShapeConsumer, size: int, state: str, reason: str) -> None:
        if state in (GONE.value, "failed"):
            self._forget(consumer, reason or "gone")
            return
        consumer.log.follow(size)
        if state == LIVE.value and consumer.state is SNAPSHOTTING:
            consumer.state = LIVE
            consumer.log.notify()

    def _forget(self, consumer: ShapeConsumer, reason: str) -> None:
        consumer.invalidate(reason)
        if self._by_handle.get(consumer.handle) is consumer:
            del self._by_handle[consumer.handle]
        for definition in [d for d, c in self._by_definition.items() if c is consumer]:
            del self._by_definition[definition]
        consumer.log.storage.destroy()

    def _status(self, message: StatusMessage) -> None:
        self._lsn = max(self._lsn, message.lsn)
        self.status = Status(message.status)
        self.problem = message.problem
        self.warnings = message.warnings
        if message.storage_error is None:
            self.storage_error = None
        elif self.storage_error is None:
            self.storage_error = StorageError(
                self.storage_dir, OSError(errno.EIO, message.storage_error)
            )
            self.storage_failure()
        self.started.set()

    # -- ShapeSource ------------------------------------------------------------------

    @property
    def last_seen_lsn(self) -> int:
        return self._lsn

    def known(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        consumer = self._by_definition.get(definition)
        if consumer is not None and consumer.state is GONE:
            del self._by_definition[definition]
            return None
        return consumer

    async def shape(self, definition: ShapeDefinition, *, verify: bool = False) -> ShapeConsumer:
        consumer = await self._ask(definition, create=True, verify=verify)
        assert consumer is not None
        return consumer

    async def find(self, definition: ShapeDefinition) -> ShapeConsumer | None:
        return await self._ask(definition, create=False)

    def get(self, handle: str) -> ShapeConsumer | None:
        return self._by_handle.get(handle)

    async def compute(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), COMPILE_TIMEOUT)

    async def delete(self, handle: str) -> bool:
        if self.closed.done():
            raise EngineUnavailable("pysync is restarting", 1)
        delete = Delete(next(self._ids), handle)
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._deletes[delete.id] = reply
        self._send(delete)
        return await reply

    async def subset_elsewhere(
        self, consumer: ShapeConsumer, fields: dict[str, object], schema: str
    ) -> SubsetReply | None:
        if not consumer.shape.dependencies:
            return None  # its rows are all the database's: the query runs here
        if self.closed.done():
            raise EngineUnavailable("pysync is restarting", 1)
        ask = Subset(next(self._ids), consumer.handle, fields, schema)
        reply: asyncio.Future[SubsetDone] = asyncio.get_running_loop().create_future()
        self._subsets[ask.id] = reply
        self._send(ask)
        done = await reply
        if done.status == 409:
            raise ShapeGone(consumer.handle, "gone")
        if done.status != 200:
            raise ShapeAPIError(done.status, done.body, done.headers)
        return SubsetReply(done.body, done.headers)

    def storage_failure(self) -> asyncio.Future[None]:
        future = self._failure
        if future is None or (future.done() and self.storage_error is None):
            future = self._failure = asyncio.get_running_loop().create_future()
        if self.storage_error is not None and not future.done():
            future.set_result(None)
        return future

    # -- asking the hub ---------------------------------------------------------------

    async def _ask(
        self, definition: ShapeDefinition, *, create: bool, verify: bool = False
    ) -> ShapeConsumer | None:
        known = None if verify else self.known(definition)
        if known is not None:
            return known
        if self.closed.done():
            raise EngineUnavailable("pysync is restarting", 1)
        # Concurrent requests for one definition ask once.
        key = (definition, create, verify)
        pending = self._asking.get(key)
        if pending is None:
            pending = self._asking[key] = asyncio.ensure_future(
                self._request(definition, create, verify)
            )
            pending.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(pending)

    async def _request(
        self, definition: ShapeDefinition, create: bool, verify: bool
    ) -> ShapeConsumer | None:
        for _ in range(ASK_ATTEMPTS):
            found = await self._found(Ask(next(self._ids), definition, create, verify))
            if found.handle not in self._gone:
                break
            # Gone between the reply and now: the replicating process knows better now.
        else:
            raise EngineUnavailable("the shape went away while it was made; retry", 1)
        if found.handle is None:
            return None
        consumer = self._by_handle.get(found.handle)  # mirrored as the reply came
        if consumer is None or consumer.gone:
            raise EngineUnavailable("the shape went away while it was made; retry", 1)
        self._by_definition[definition] = consumer
        return consumer

    async def _found(self, ask: Ask) -> Found:
        reply: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
        self._asks[ask.id] = (ask.definition, reply)
        self._send(ask)
        found = await reply
        if found.error == "shape":
            raise ShapeError(found.field, found.message)
        if found.error == "unavailable":
            raise EngineUnavailable(found.message, found.retry_after)
        if found.error == "database":
            raise psycopg.OperationalError("the replicating process cannot reach the database")
        if found.error is not None:
            raise RuntimeError(f"the replicating process failed to find the shape: {found.error}")
        return found

    def _mirror(self, definition: ShapeDefinition, found: Found) -> ShapeConsumer:
        assert found.handle is not None and found.table is not None
        tables = {(table.schema, table.name): table for table in found.tables}
        shape = build_shape(definition, found.table, tables)
        storage = FollowedStorage(self.storage_dir / "shapes" / found.handle / "log")
        consumer = ShapeConsumer(
            found.handle, shape, ShapeLog(storage, self.chunk_bytes), found.snapshot
        )
        self._by_handle[found.handle] = consumer
        self._apply(consumer, found.size, found.state, "")
        return consumer
