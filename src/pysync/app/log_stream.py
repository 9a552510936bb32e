"""A shape's messages read from the engine's log in this process (embedded mode): what
``pysync.client.ShapeStream`` yields over HTTP, without HTTP.

The log's entries are the JSON the HTTP layer serves; they are decoded with the same
parsers (``electric-schema`` types) and the same message structs as the client's, so a
``pysync.client.Shape`` materialises either stream alike. Reading follows the protocol
the HTTP layer follows (``http/api.py``): wait for the snapshot, read slices of the log
after an offset, end a read that reached the log's end with ``up-to-date``, wait for
entries after the last offset. A shape that goes away (invalidated, deleted, evicted:
a 409 over HTTP) yields ``must-refetch`` and starts again from the new shape's snapshot.

The reader pulls: it reads the log when its consumer asks for the next message, so a slow
consumer falls behind on the log (kept in storage) and catches up later; the engine only
resolves futures for it and never waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from pysync.client.messages import MUST_REFETCH, UP_TO_DATE, ControlMessage, Message, decode_batch
from pysync.client.values import Parser, column_parsers
from pysync.engine import Engine, EngineUnavailable
from pysync.http.body import INLINE_BYTES
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.shapes.consumer import ShapeConsumer, ShapeGone
from pysync.shapes.definition import ShapeDefinition
from pysync.shapes.schema import schema_header

WAIT = 60.0
"""Seconds one wait for new entries lasts before the reader looks again (a bound on a
wait, never on how long the stream follows the shape)."""
RETRY = 1.0
"""Seconds before asking an unavailable engine for the shape again."""


class LogStream:
    """``async for message in LogStream(engine, definition)``: the shape's messages from
    its snapshot on, following it live. ``handle`` and ``offset`` as ShapeStream's."""

    def __init__(
        self,
        engine: Engine,
        definition: ShapeDefinition,
        *,
        offset: LogOffset = BEFORE_ALL,
        handle: str | None = None,
    ) -> None:
        """``offset`` and ``handle``: resume after that offset of that shape (another
        handle, or an offset the log does not have, starts over with must-refetch)."""
        self.engine = engine
        self.definition = definition
        self.handle = handle
        self.offset = str(offset)
        self._resume = offset
        self._iterator: AsyncGenerator[Message] | None = None

    def __aiter__(self) -> AsyncIterator[Message]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    async def aclose(self) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()

    async def _run(self) -> AsyncGenerator[Message]:
        while True:
            wanted = self.handle
            consumer = await self._load()
            after, self._resume = self._resume, BEFORE_ALL
            if after != BEFORE_ALL and (wanted != consumer.handle or after > consumer.last_offset):
                after = BEFORE_ALL  # not this shape's offset: start over, as a 409 says
                self.offset = str(BEFORE_ALL)
                yield ControlMessage(MUST_REFETCH)
            try:
                async for message in self._follow(consumer, after):
                    yield message
            except ShapeGone:
                # As a 409 over HTTP: the rows start over from the new shape's snapshot.
                self.offset = str(BEFORE_ALL)
                yield ControlMessage(MUST_REFETCH)

    async def _load(self) -> ShapeConsumer:
        """The shape (created if needed); an unavailable engine is asked again."""
        while True:
            try:
                consumer = await self.engine.shape(self.definition)
            except EngineUnavailable:
                await asyncio.sleep(RETRY)
                continue
            self.handle = consumer.handle
            return consumer

    async def _follow(self, consumer: ShapeConsumer, after: LogOffset) -> AsyncGenerator[Message]:
        """The messages of ``consumer``'s log after ``after``; raises ShapeGone once it
        is gone."""
        while not await consumer.wait(None, WAIT, until_snapshot=True):
            pass
        parsers = _parsers(consumer)
        told_up_to_date = False
        while True:
            # In pieces of what a response builds in memory: a catch-up read of a long
            # log holds the event loop no longer than a request's (a snapshot chunk
            # is read whole, as a response serves it).
            part = consumer.slice(after, INLINE_BYTES)
            if part.spans:
                body = b"[" + b",".join(consumer.log.payloads(part)) + b"]"
                for message in decode_batch(body, parsers):
                    yield message
                after = part.end
                self.offset = str(after)
                told_up_to_date = False
            if part.reached and not told_up_to_date:
                told_up_to_date = True
                yield ControlMessage(UP_TO_DATE, str(max(after.tx, 0)))
            if not part.reached:
                continue
            while not await consumer.wait(after, WAIT):
                pass


def _parsers(consumer: ShapeConsumer) -> dict[str, Parser]:
    shape = consumer.shape
    return column_parsers(schema_header(shape.table, shape.columns))
