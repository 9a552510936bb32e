"""Live long-polls of ``pysync serve`` without a task each: answered at once, or parked.

Through the ASGI path a waiting long-poll holds a task, its coroutine frames, the ASGI
scope and request objects, a timer and the futures ``asyncio.wait`` makes: about 16 KiB,
and some 100 µs of CPU per response. Here a plain live request of a known, complete shape
(no SSE, no subset, no conditional request) is answered straight from the connection's
parser callback when data is there, and otherwise parked: a small record in its shape's
group, woken by one future per shape (not per request), timed out by a shared timer per
quarter second. A commit then answers its shape's parked requests in one loop, with the
body and shared headers built once (``log_response.LogResponses``).

The rules are the app's, run from ``steps.py``: the secret, the params (a shape's parsed
once, ``live_queries.py``), the shape's handle, what a read at the offset does (answer or
hold). Where a step raises, or would await (loading a shape, waiting for its snapshot),
the request goes to the app unchanged, which answers it by the same steps: errors are
rendered there, once.

What a parked request still has, it has as ``ShapeAPI.hold`` gives it: it is registered
with ``api.interrupts`` (an interrupt or shutdown answers it with no change), holds a
place in admission control (``api.admission``, the app's count), and gets a 409
must-refetch when its shape goes (deleted, invalidated), with the new shape's handle if
one can be had. The other outcomes (storage failing, a body too large to build) replay
the request through the ASGI app, which answers it as it would have (a 503, a streamed
body); not a gone shape: replayed, the request would be a new one, a 400 when its table
or a column it selects went meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request
from starlette.responses import Response

from pysync.http import steps
from pysync.http.admission import kind_of
from pysync.http.errors import LOG_CUT, ShapeAPIError
from pysync.http.live_queries import LiveQueries
from pysync.http.params import ShapeRequest
from pysync.http.responses import INTERNAL_ERROR, error_response
from pysync.http.shared import Prebuilt
from pysync.http.waiters import Waiter
from pysync.log.log import LogSlice
from pysync.log.offset import LogOffset
from pysync.log.storage import LogCutError
from pysync.shapes.consumer import LIVE, ShapeConsumer, ShapeGone

if TYPE_CHECKING:
    from pysync.http.api import ShapeAPI

log = logging.getLogger(__name__)

TICK = 0.25
"""Timeouts are checked this often: a long-poll ends within a quarter second of its time."""


class Connection(Protocol):
    """What the HTTP connection offers the fast path (``server.BoundedProtocol``)."""

    parked: Parked | None

    def respond(self, response: Response) -> None:
        """Write a complete response (body and headers are bytes) and finish the request."""

    def replay(self, query: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Run the request through the ASGI app after all."""


class Parked:
    """One waiting live request."""

    __slots__ = ("conn", "consumer", "parsed", "query", "origin", "tick", "waiter", "_registration")

    def __init__(
        self,
        conn: Connection,
        consumer: ShapeConsumer,
        parsed: ShapeRequest,
        query: bytes,
        origin: bytes | None,
        deadline: float,
        registration: AbstractContextManager[Waiter],
    ) -> None:
        self.conn = conn
        self.consumer = consumer
        self.parsed = parsed
        self.query = query
        self.origin = origin
        self.tick = math.ceil(deadline / TICK)
        """The timer tick it times out at."""
        self._registration = registration
        self.waiter: Waiter | None = registration.__enter__()

    def unregister(self) -> None:
        """Leave the interrupt registry (once)."""
        if self.waiter is not None:
            self.waiter = None
            self._registration.__exit__(None, None, None)


class LivePolls:
    def __init__(self, api: ShapeAPI) -> None:
        self.api = api
        self._groups: dict[ShapeConsumer, set[Parked]] = {}
        self._due: dict[int, set[Parked]] = {}
        self._storage_watch: object = None
        self._refetching: set[asyncio.Task[None]] = set()
        """Answering the requests of gone shapes (``_gone``)."""
        self._queries = LiveQueries()
        """The requests' queries, each shape's part parsed once."""

    # -- taking a request -------------------------------------------------------------

    def take(self, conn: Connection, query: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Serve a plain live request now or park it; False: the app must serve it."""
        if b"live=" not in query:
            return False
        origin = None
        for name, value in headers:
            if name == b"origin":
                origin = value
            elif name == b"if-none-match":
                return False  # the app answers conditional requests (304)
        api = self.api
        engine = api.engine
        if api.closing or engine.storage_error is not None or not engine.started.is_set():
            return False  # the app answers at once (shutdown) or with its 503
        try:
            parsed = self._queries.parse(query, api.secret)
        except ShapeAPIError:
            return False
        if parsed is None or not parsed.live or parsed.sse:
            return False  # a subset request, or not a long-poll
        offset = parsed.offset
        # Live: the params refused offset=now and -1 already.
        assert parsed.definition is not None and isinstance(offset, LogOffset)
        consumer = engine.known(parsed.definition)
        if consumer is None or consumer.state is not LIVE or not consumer.snapshot_done:
            return False  # loading the shape or waiting for its snapshot: awaits
        try:
            steps.check_shape(parsed, consumer)
        except ShapeAPIError:
            return False
        try:
            part = consumer.slice(offset)
        except ShapeGone:
            return False  # the app answers with the 409
        step = steps.next_step(parsed, consumer, offset, part)
        if step is steps.Next.AHEAD:
            return False  # not for a live request; the app's, should that change
        admission = api.admission
        kind = kind_of(consumer)
        if not admission.try_enter(kind):
            return False  # the app refuses it, and counts the refusal
        consumer.last_used = time.monotonic()
        if step is steps.Next.HOLD:
            parsed.definition = consumer.definition  # one copy for every waiter of the shape
            self._park(conn, consumer, parsed, query, origin)  # keeps the place
            return True
        admission.leave(kind)  # answered now, without an await: the place is free again
        try:
            response = api.live_response(_request(origin), parsed, consumer, part)
        except LogCutError:
            # A worker read past a cut its writer made (a failed sync): the app reads
            # again and answers, with the 503 to retry if the cut still stands.
            return False
        if not isinstance(response, Prebuilt):
            return False  # a body to stream: the app's
        self._send(conn, response)
        return True

    def _park(
        self,
        conn: Connection,
        consumer: ShapeConsumer,
        parsed: ShapeRequest,
        query: bytes,
        origin: bytes | None,
    ) -> None:
        api = self.api
        deadline = time.monotonic() + api.long_poll_timeout
        parked = Parked(
            conn,
            consumer,
            parsed,
            query,
            origin,
            deadline,
            api.interrupts.waiting(consumer.definition, None),
        )
        assert parked.waiter is not None
        parked.waiter.released.add_done_callback(functools.partial(self._released, parked))
        conn.parked = parked
        group = self._groups.get(consumer)
        if group is None:
            group = self._groups[consumer] = set()
            self._watch(consumer)
        group.add(parked)
        self._schedule(parked)
        self._watch_storage()

    # -- waking -----------------------------------------------------------------------

    def _watch(self, consumer: ShapeConsumer) -> None:
        """One future per shape wakes all of its parked requests."""
        consumer.log.waiter().add_done_callback(lambda _: self._grown(consumer))

    def _grown(self, consumer: ShapeConsumer) -> None:
        group = self._groups.get(consumer)
        if not group:
            self._groups.pop(consumer, None)
            return
        if consumer.gone:
            self._gone(consumer, [parked for parked in list(group) if self._leave(parked)])
            self._groups.pop(consumer, None)
            return
        if self.api.engine.storage_error is not None:
            for parked in list(group):
                self._replay(parked)
            self._groups.pop(consumer, None)  # a request parked later makes a new group
            return
        # Waiters of a shape mostly wait at the same offset: the log is read once for them.
        parts: dict[LogOffset, LogSlice] = {}
        for parked in list(group):
            offset = parked.parsed.offset
            assert isinstance(offset, LogOffset)
            if consumer.has_after(offset):
                part = self._answer(parked, parts.get(offset))
                if part is not None:
                    parts[offset] = part
        if group:
            self._watch(consumer)
        else:
            self._groups.pop(consumer, None)

    def _released(self, parked: Parked, _: object) -> None:
        """Interrupted or shut down: answered now, as ``hold`` returns then."""
        if parked.conn.parked is parked:
            self._answer(parked)

    def _watch_storage(self) -> None:
        failure = self.api.engine.storage_failure()
        if failure is not self._storage_watch:
            self._storage_watch = failure
            failure.add_done_callback(lambda _: self._storage_failed())

    def _storage_failed(self) -> None:
        for group in list(self._groups.values()):
            for parked in list(group):
                self._replay(parked)

    # -- timeouts ---------------------------------------------------------------------

    def _schedule(self, parked: Parked) -> None:
        tick = parked.tick
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = set()
            asyncio.get_running_loop().call_later(
                max(0.0, tick * TICK - time.monotonic()), self._expire, tick
            )
        due.add(parked)

    def _expire(self, tick: int) -> None:
        for parked in list(self._due.pop(tick, ())):
            self._answer(parked)

    # -- answering --------------------------------------------------------------------

    def _leave(self, parked: Parked) -> bool:
        """Unpark; False if it was not parked any more."""
        conn = parked.conn
        if conn.parked is not parked:
            return False
        conn.parked = None
        group = self._groups.get(parked.consumer)
        if group is not None:
            group.discard(parked)
        due = self._due.get(parked.tick)
        if due is not None:
            due.discard(parked)
        self.api.admission.leave(kind_of(parked.consumer))
        parked.unregister()
        return True

    def drop(self, parked: Parked) -> None:
        """The client went away."""
        self._leave(parked)

    def _answer(self, parked: Parked, part: LogSlice | None = None) -> LogSlice | None:
        """Answer with ``part`` (the log after its offset, read now if None); returns the
        part it answered with."""
        if not self._leave(parked):
            return part
        consumer, parsed = parked.consumer, parked.parsed
        if part is None:
            offset = parsed.offset
            assert isinstance(offset, LogOffset)
            try:
                part = consumer.slice(offset)
            except ShapeGone:
                self._gone(consumer, [parked])
                return None
        try:
            response = self.api.live_response(_request(parked.origin), parsed, consumer, part)
        except LogCutError:  # one shape's log, cut: its waiters retry, the others go on
            self._send(parked.conn, error_response(_request(parked.origin), LOG_CUT))
            return None
        except Exception:  # noqa: BLE001 - as the app: a redacted 500, never a crash
            # A bug answering one request must not leave the others woken with it (a
            # commit's group, a tick's timeouts) parked until their clients give up.
            log.exception("error answering a live request of shape %s", consumer.handle)
            self._send(parked.conn, error_response(_request(parked.origin), INTERNAL_ERROR))
            return None
        if isinstance(response, Prebuilt):
            self._send(parked.conn, response)
        else:
            parked.conn.replay(parked.query, _headers(parked.origin))  # a body to stream
        return part

    def _gone(self, consumer: ShapeConsumer, parked: list[Parked]) -> None:
        """``consumer`` went away: its requests (unparked already) get ``hold``'s 409."""
        if not parked:
            return
        task = asyncio.ensure_future(self._refetch(consumer, parked))
        self._refetching.add(task)  # kept: the loop holds tasks only weakly
        task.add_done_callback(self._refetching.discard)

    async def _refetch(self, consumer: ShapeConsumer, parked: list[Parked]) -> None:
        api = self.api
        try:
            # One lookup (maybe a new shape) for all of them.
            handle = (await api.gone(parked[0].parsed, consumer)).handle
        except Exception:  # noqa: BLE001 - as the app: a redacted 500, never a crash
            log.exception("error answering the requests of gone shape %s", consumer.handle)
            for one in parked:
                self._send(one.conn, error_response(_request(one.origin), INTERNAL_ERROR))
            return
        for one in parked:
            error = steps.refetch(one.parsed, handle)
            self._send(one.conn, error_response(_request(one.origin), error))

    def _send(self, conn: Connection, response: Response) -> None:
        counts = self.api.response_counts  # as the app counts its responses
        counts.status(response.status_code)
        # Every response sent here answers a live request.
        counts.shape_response(response.status_code, response.raw_headers, True, len(response.body))
        conn.respond(response)

    def _replay(self, parked: Parked) -> None:
        if self._leave(parked):
            parked.conn.replay(parked.query, _headers(parked.origin))


def _headers(origin: bytes | None) -> list[tuple[bytes, bytes]]:
    return [(b"origin", origin)] if origin is not None else []


def _request(origin: bytes | None) -> Request:
    """What rendering a response reads of the request: its method and origin."""
    return Request(
        {"type": "http", "method": "GET", "headers": _headers(origin), "query_string": b""}
    )
