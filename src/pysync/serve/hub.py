"""The replicating process's end of the channel to its HTTP workers.

Workers ask it for shapes (it creates them: snapshots, publications and the registry
stay in one process) and it announces every change of a shape's log: one future per
shape on the log (``ShapeLog.waiter``), resolved by the append itself, so a worker
hears of a commit in the same loop turn that stored it. No polling.

A shape leaving the registry (deleted, invalidated, evicted) is announced at once
(``Gone``), and what follows from it waits until every worker has dropped it: the
``Deleted`` reply, and any ``Found`` written meanwhile (the shape made in its place).
A client told of the change by one worker then finds no worker serving the old handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from pysync.engine import Engine, EngineUnavailable
from pysync.http.errors import ShapeAPIError
from pysync.http.responses import INTERNAL_ERROR
from pysync.http.subset import subset_reply
from pysync.postgres.catalog import Table
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
    Status,
    Subset,
    SubsetDone,
    frame,
    receive,
)
from pysync.shapes.consumer import GONE, ShapeConsumer
from pysync.shapes.definition import Shape, ShapeError

log = logging.getLogger(__name__)

STATUS_INTERVAL = 0.25
"""How often the engine's health is compared with what the workers were told."""
DROP_TIMEOUT = 10.0
"""How long a deletion waits for the workers to drop the shape: a worker that does not
answer in this time is stuck (its requests are not served either)."""


class _Drop:
    """A ``Gone`` some workers have not answered yet."""

    def __init__(self, handle: str, writers: set[asyncio.StreamWriter]) -> None:
        self.handle = handle
        self.waiting = writers
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.check()

    def dropped(self, writer: asyncio.StreamWriter) -> None:
        self.waiting.discard(writer)
        self.check()

    def check(self) -> None:
        if not self.waiting and not self.done.done():
            self.done.set_result(None)


class Hub:
    def __init__(self, engine: Engine, path: Path, on_ready: Callable[[int], None]) -> None:
        self.engine = engine
        self.path = path
        self.on_ready = on_ready
        self._writers: set[asyncio.StreamWriter] = set()
        self._watched: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._status: Status | None = None
        self._numbers = itertools.count(1)
        self._drops: dict[int, _Drop] = {}
        self._unwatch: Callable[[], None] | None = None
        """Ends the registry's telling us of shapes gone (``start`` to ``close``)."""

    async def start(self) -> None:
        self._unwatch = self.engine.registry.watch(self._gone)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        for consumer in self.engine.registry:
            self._watch(consumer)
        self._spawn(self._report_status())

    async def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- announcing -------------------------------------------------------------------

    def _watch(self, consumer: ShapeConsumer) -> None:
        if consumer.handle not in self._watched and not consumer.gone:
            self._watched.add(consumer.handle)
            self._arm(consumer)

    def _arm(self, consumer: ShapeConsumer) -> None:
        consumer.log.waiter().add_done_callback(lambda _: self._changed(consumer))

    def _changed(self, consumer: ShapeConsumer) -> None:
        self._broadcast(
            Grown(
                consumer.handle,
                consumer.log.storage.written_size(),
                consumer.state.value,
                self.engine.last_seen_lsn,
                consumer.reason,
            )
        )
        if consumer.state is GONE or consumer.error is not None:
            self._watched.discard(consumer.handle)
        else:
            self._arm(consumer)

    def _gone(self, consumer: ShapeConsumer) -> None:
        """In the registry's ``invalidate``: before anything can be made in its place."""
        number = next(self._numbers)
        writers = {w for w in self._writers if not w.is_closing()}
        drop = self._drops[number] = _Drop(consumer.handle, writers)
        drop.done.add_done_callback(lambda _: self._drops.pop(number, None))
        self._broadcast(Gone(consumer.handle, consumer.reason, number))

    async def _dropped_everywhere(self, handle: str | None = None) -> None:
        """Until every worker dropped the shapes gone so far (or ``handle``)."""
        pending = [d.done for d in self._drops.values() if handle is None or d.handle == handle]
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=DROP_TIMEOUT)
        if late:
            log.warning(
                "%d HTTP worker(s) did not drop a removed shape in %.0f s",
                len({w for d in self._drops.values() for w in d.waiting}),
                DROP_TIMEOUT,
            )

    def _broadcast(self, message: Message) -> None:
        data = frame(message)
        for writer in self._writers:
            if not writer.is_closing():
                writer.write(data)

    def _current_status(self) -> Status:
        engine = self.engine
        error = engine.storage_error
        return Status(
            engine.status.value,
            engine.problem,
            error.reason if error else None,
            engine.last_seen_lsn,
            engine.warnings,
        )

    async def _report_status(self) -> None:
        while True:
            status = self._current_status()
            if status != self._status:
                self._status = status
                self._broadcast(status)
            await asyncio.sleep(STATUS_INTERVAL)

    # -- a worker's requests ----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        writer.write(frame(self._current_status()))
        try:
            while True:
                message = await receive(reader)
                if isinstance(message, Ask):
                    self._spawn(self._answer(writer, message))
                elif isinstance(message, Dropped):
                    drop = self._drops.get(message.number)
                    if drop is not None:
                        drop.dropped(writer)
                elif isinstance(message, Delete):
                    self._spawn(self._delete(writer, message))
                elif isinstance(message, Subset):
                    self._spawn(self._subset(writer, message))
                elif isinstance(message, Ready):
                    self.on_ready(message.pid)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker ended: the supervisor starts another
        finally:
            self._writers.discard(writer)
            for drop in list(self._drops.values()):
                drop.dropped(writer)  # a worker gone has no shapes to drop
            writer.close()

    async def _delete(self, writer: asyncio.StreamWriter, delete: Delete) -> None:
        found = await self.engine.delete(delete.handle)
        await self._dropped_everywhere(delete.handle)
        if not writer.is_closing():
            writer.write(frame(Deleted(delete.id, found)))

    async def _subset(self, writer: asyncio.StreamWriter, ask: Subset) -> None:
        consumer = self.engine.get(ask.handle)
        if consumer is None or consumer.gone:
            reply = SubsetDone(ask.id, 409)
        else:
            try:
                done = await subset_reply(self.engine, consumer, ask.fields, ask.schema)
            except ShapeAPIError as exc:
                reply = _failed_subset(ask.id, exc)
            except Exception:  # noqa: BLE001 - a bug: that request's 500, not a silent hang
                log.exception("error answering a subset for an HTTP worker")
                reply = _failed_subset(ask.id, INTERNAL_ERROR)
            else:
                reply = SubsetDone(ask.id, 200, done.body, done.headers)
        if not writer.is_closing():
            writer.write(frame(reply))

    async def _answer(self, writer: asyncio.StreamWriter, ask: Ask) -> None:
        engine = self.engine
        consumer: ShapeConsumer | None = None
        try:
            consumer = await (
                engine.shape(ask.definition, verify=ask.verify)
                if ask.create
                else engine.find(ask.definition)
            )
        except ShapeError as exc:
            reply = Found(ask.id, error="shape", field=exc.field, message=exc.message)
        except EngineUnavailable as exc:
            reply = Found(
                ask.id, error="unavailable", message=exc.reason, retry_after=exc.retry_after
            )
        except psycopg.OperationalError:
            reply = Found(ask.id, error="database")
        except Exception:  # noqa: BLE001 - a bug: that request's 500, not a silent hang
            # Unanswered, the worker's request (and every one asking for the same
            # definition with it) would wait until its client gave up.
            log.exception("error finding a shape for an HTTP worker")
            reply = Found(ask.id, error="internal")
        else:
            reply = Found(ask.id)
        # A shape gone meanwhile (this very request may have invalidated the one the
        # definition had) is first dropped by every worker: a client given the new
        # handle, or told the table is gone, then meets the old one nowhere.
        await self._dropped_everywhere()
        if consumer is not None:
            self._watch(consumer)
            reply = Found(
                ask.id,
                consumer.handle,
                consumer.shape.table,
                consumer.snapshot,
                consumer.log.storage.written_size(),
                consumer.state.value,
                _subquery_tables(consumer.shape),
            )
        if not writer.is_closing():
            writer.write(frame(reply))


def _failed_subset(number: int, exc: ShapeAPIError) -> SubsetDone:
    body = exc.body if isinstance(exc.body, bytes) else msgspec.json.encode(exc.body)
    return SubsetDone(number, exc.status, body, exc.headers)


def _subquery_tables(shape: Shape) -> list[Table]:
    """The tables of a shape's subqueries (nested ones too), as they were read for it:
    a worker builds the same shape from them without a catalog of its own."""
    found: list[Table] = []
    pending = list(shape.dependencies)
    while pending:
        subquery = pending.pop()
        found.append(subquery.table)
        pending.extend(subquery.dependencies)
    return found
