"""The replicating process's end of the channel to its HTTP workers.

Workers ask it for shapes (it creates them: snapshots, publications and the registry
stay in one process) and it announces every change of a shape's log: one future per
shape on the log (``ShapeLog.waiter``), resolved by the append itself, so a worker
hears of a commit in the same loop turn that stored it. No polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psycopg

from pysync.engine import Engine, EngineUnavailable
from pysync.serve.notify import Ask, Delete, Found, Grown, Message, Ready, Status, frame, receive
from pysync.shapes.consumer import GONE, ShapeConsumer
from pysync.shapes.definition import ShapeError

log = logging.getLogger(__name__)

STATUS_INTERVAL = 0.25
"""How often the engine's health is compared with what the workers were told."""


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

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        for consumer in self.engine.registry:
            self._watch(consumer)
        self._spawn(self._report_status())

    async def close(self) -> None:
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
        if consumer.handle not in self._watched:
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
                elif isinstance(message, Delete):
                    self.engine.delete(message.handle)
                elif isinstance(message, Ready):
                    self.on_ready(message.pid)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker ended: the supervisor starts another
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, ask: Ask) -> None:
        engine = self.engine
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
        else:
            if consumer is None:
                reply = Found(ask.id)
            else:
                self._watch(consumer)
                reply = Found(
                    ask.id,
                    consumer.handle,
                    consumer.shape.table,
                    consumer.snapshot,
                    consumer.log.storage.written_size(),
                    consumer.state.value,
                )
        if not writer.is_closing():
            writer.write(frame(reply))
