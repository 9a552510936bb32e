"""The HTTP server under the shape API: uvicorn, plus what it lacks for thousands of
clients on one process.

- A connection limit below the open-files limit: past it a new connection is closed at
  once, so file descriptors never run out (running out made the accept loop fail and log
  hundreds of thousands of lines a minute while health went unanswered).
- A header timeout: a connection that does not send a whole request head in time is
  closed (slow or stalled clients cannot pile up).
- Accept errors logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools
from starlette.responses import Response
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from pysync.log.storage import LogCutError, log_files_budget

if TYPE_CHECKING:
    from pysync.http.parking import Parked

log = logging.getLogger(__name__)

WRITE_BUFFER_BYTES = 32 * 1024
MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers (a GET's WHERE clause travels in the request line)."""
_HEAD_TOO_LARGE_BODY = b'{"message":"Request line and headers over %d bytes"}' % MAX_HEAD_BYTES
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(_HEAD_TOO_LARGE_BODY)
) + _HEAD_TOO_LARGE_BODY
OTHER_FILES = 200
"""Descriptors kept for Postgres sessions, logs, the process's own files."""


def _head_part(data: bytes) -> int:
    """How many bytes of ``data`` belong to the request head being read: up to its blank
    line (the rest is the body), else all of them. A blank line begun in the previous read
    is taken as ended at the start of this one; should it not be, the parser's head is
    still unfinished at the next read, which counts whole."""
    for rest in (b"\n\r\n", b"\r\n", b"\n"):
        if data.startswith(rest):
            return len(rest)
    end = data.find(b"\r\n\r\n")
    return len(data) if end == -1 else end + 4


def open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every waiting client holds a
    socket); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_budget(requested: int | None) -> int:
    """How many client connections to allow: ``requested``, or what the open-files
    limit leaves; warns when that is less than asked for."""
    limit = open_files_limit()
    reserved = log_files_budget() + OTHER_FILES
    available = max(16, limit - reserved)
    if requested is None:
        return available
    if requested > available:
        log.warning(
            "--max-connections %d needs about %d open files, but the limit is %d (ulimit -n): "
            "allowing %d connections",
            requested,
            requested + reserved,
            limit,
            available,
        )
        return available
    return requested


class FastPath(Protocol):
    """Serves some requests straight from the parser callback (``parking.LivePolls``)."""

    def take(self, conn: BoundedProtocol, query: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Serve (or park) the request; False if the ASGI app must serve it."""

    def drop(self, parked: Parked) -> None:
        """The connection of a parked request was lost."""


FAST_PATHS = (b"/v1/shape", b"/v1/shape/")


class ServerConnections:
    """What the connections of one server share: their limit, the header timeout, the
    idle ones, and the live path."""

    def __init__(
        self, max_connections: int, header_timeout: float, fast: FastPath | None = None
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.fast = fast
        """Sees each ``GET /v1/shape`` first (None: the app serves every request)."""
        self.idle: OrderedDict[BoundedProtocol, None] = OrderedDict()
        """Connections without a request in progress, longest idle first."""


def bounded_protocol(
    max_connections: int, header_timeout: float, fast: FastPath | None = None
) -> type[asyncio.Protocol]:
    """What uvicorn's ``http`` takes: ``BoundedProtocol`` with this server's
    ``ServerConnections`` (uvicorn calls it with its keyword arguments, as it would a class)."""
    shared = ServerConnections(max_connections, header_timeout, fast)
    return cast(type[asyncio.Protocol], functools.partial(BoundedProtocol, shared=shared))


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools), with the connection limit, the header
    timeout and the fast path for live requests (``ServerConnections``).

    At the limit, the connection idle longest (one with no request in progress: just
    opened, or kept alive between requests) makes room for the new one, so idle sockets
    cannot lock out real clients (or the health check); with no idle one, the new
    connection is closed at once.

    ``shared.fast`` sees each ``GET /v1/shape`` first: what it takes never becomes an
    ASGI request (no task, no scope kept); a request it parked is answered, or replayed
    through the app, later (``respond``, ``replay``).
    """

    # Slots, not instance attributes: uvicorn's instance dict is full, and one more
    # key in it costs 1.5 KiB per connection.
    __slots__ = ("_shared", "_shed", "_head_timer", "_head_bytes", "_taken", "parked")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        shared: ServerConnections,
    ) -> None:
        self._shared = shared
        self._shed = False
        """Refused (over the limit, or a head too large): nothing more is read."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        """Of the request head being read (bounded by ``MAX_HEAD_BYTES``)."""
        self._taken = False
        """The request being parsed is the fast path's: no ASGI cycle for its body."""
        self.parked: Parked | None = None
        """A live request of this connection waiting in the fast path."""
        super().__init__(config, server_state, app_state, _loop)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        shared = self._shared
        if len(self.connections) >= shared.max_connections:
            if not shared.idle:
                self._shed = True
                transport.abort()
                return
            oldest, _ = shared.idle.popitem(last=False)
            oldest.transport.abort()
        # A reader that stops reading holds at most this much of a response here
        # (the rest waits in storage), whatever the size of the response.
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        super().connection_made(transport)
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self.flow = _Flow(transport)
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._shed:
            return
        self._shared.idle.pop(self, None)
        self._cancel_head_timer()
        fast = self._shared.fast
        if self.parked is not None and fast is not None:
            fast.drop(self.parked)  # frees its place now, not at its timeout
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._shed:
            return
        idle = self._shared.idle
        if self in idle:  # still reading a request head: bound its size
            before = self._head_bytes
            self._head_bytes += len(data)
            # Only the head counts: a POST's body often comes in the same read.
            if self._head_bytes > MAX_HEAD_BYTES and before + _head_part(data) > MAX_HEAD_BYTES:
                # Answer, then go on reading (and dropping) for a moment: closing
                # with unread input would reset the connection before the client
                # reads the answer.
                self.transport.write(_HEAD_TOO_LARGE)
                if self.transport.can_write_eof():
                    self.transport.write_eof()
                self.loop.call_later(1.0, self.transport.close)
                self._shed = True
                idle.pop(self, None)
                self._cancel_head_timer()
                self.connections.discard(self)
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._taken = False

    def on_headers_complete(self) -> None:
        self._shared.idle.pop(self, None)
        self._cancel_head_timer()
        if self.parked is not None:
            # A request pipelined behind a waiting long-poll: its answer must come after
            # the long-poll's (RFC 9112 9.3). uvicorn queues a request behind a cycle
            # not yet complete and starts it when that one's response completes; the
            # parked request has no cycle, so a stand-in tells uvicorn to queue (its
            # answer, ``respond`` or ``replay``, ends in ``on_response_complete``, which
            # starts the queued one). Closing the connection here answered neither.
            self.cycle = _AWAITING_PARKED  # type: ignore[assignment]
            super().on_headers_complete()
            return
        if self._busy():
            # Behind a request the app is still answering (uvicorn queues this one):
            # taken by the fast path it would be answered first, its response ahead of
            # (or inside) the other's, and the client would read it as the other's.
            super().on_headers_complete()
            return
        if self._take():
            self._taken = True
            # Nothing of the request is needed any more (a parked one keeps its own).
            self.scope = self.headers = None  # type: ignore[assignment]
            self.url = b""
            return
        super().on_headers_complete()

    def _busy(self) -> bool:
        """Is an earlier request of this connection still being answered by the app
        (or queued behind one)?"""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def _take(self) -> bool:
        """Does the fast path take the request whose head was just read?"""
        fast = self._shared.fast
        if fast is None:
            return False
        parser = self.parser
        if (
            parser.get_method() != b"GET"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
        ):
            return False
        url = httptools.parse_url(self.url)
        if url.path not in FAST_PATHS:
            return False
        try:
            return fast.take(self, url.query or b"", self.headers)
        except Exception:  # noqa: BLE001 - a bug of the fast path, not of the request
            # Raised out of a parser callback, it would reach httptools and uvicorn
            # would answer a good request with '400 Invalid HTTP request': the app
            # serves it instead (and renders any error once, as for every request).
            log.exception("the live path failed on a request; the app serves it")
            return False

    def on_body(self, body: bytes) -> None:
        if not self._taken and self.cycle is not None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._taken and self.cycle is not None:
            super().on_message_complete()

    def respond(self, response: Response) -> None:
        """Write ``response`` (a Response whose body and headers are bytes) whole,
        as uvicorn would, in one write."""
        if self.transport.is_closing():
            return
        content = [STATUS_LINE[response.status_code]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        for name, value in response.raw_headers:
            content += (name, b": ", value, b"\r\n")
        content += (b"\r\n", bytes(response.body))
        self.transport.write(b"".join(content))
        self.on_response_complete()

    def replay(self, query: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Serve a request the fast path had taken through the app after all."""
        if self.transport.is_closing():
            return
        path = "/v1/shape"
        scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": headers,
            "state": self.app_state.copy(),
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
        }
        self.cycle = RequestResponseCycle(
            scope=scope,  # type: ignore[arg-type]
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=True,
            on_response=self.on_response_complete,
        )
        self.cycle.more_body = False  # a GET: no body to wait for
        self._start_asgi_task(self.cycle, self.app)

    def on_response_complete(self) -> None:
        # The oldest pipelined request, which uvicorn starts now (unless closing).
        started = (
            self.pipeline[-1][0] if self.pipeline and not self.transport.is_closing() else None
        )
        super().on_response_complete()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            # Between requests a kept-alive connection holds no request's objects
            # (the cycle, its scope and event: about 2 KiB each). The one started is
            # the connection's current request: after a replay ``cycle`` was the
            # replayed one, and a request pipelined next must queue behind it.
            self.cycle = started  # type: ignore[assignment]
        if started is None and not self.transport.is_closing():
            # (With a pipelined request started the connection is not idle: neither
            # the header timeout nor the connection limit may close it under that.)
            self._idle()

    def _idle(self) -> None:
        self._shared.idle[self] = None
        self._head_bytes = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._shared.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        # No (next) request head in time: a stalled or slow client, or one kept
        # alive that went quiet. Closing it is what a server must do for both.
        self._head_timer = None
        self._shared.idle.pop(self, None)
        self.transport.close()


class _AwaitingParked:
    """Stands for a parked request's cycle (it has none) while a request pipelined
    behind it is read: uvicorn queues a request behind a cycle whose response is not
    complete."""

    response_complete = False


_AWAITING_PARKED = _AwaitingParked()


class _Flow(FlowControl):
    """uvicorn's flow control, with the future a write waits on made only when one waits:
    its asyncio.Event costs 760 bytes per connection, and few connections ever wait."""

    def __init__(
        self, transport: asyncio.Transport
    ) -> None:  # not super().__init__: it makes the Event
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable: asyncio.Future[None] | None = None

    async def drain(self) -> None:
        while self.write_paused:
            if self._writable is None or self._writable.done():
                self._writable = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._writable)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            if self._writable is not None and not self._writable.done():
                self._writable.set_result(None)


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests as a list: an empty deque costs 760 bytes
    per connection, an empty list 56 (it is nearly always empty)."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _RateLimited(logging.Filter):
    """Lets a message through at most once per ``interval`` seconds (with a count)."""

    def __init__(self, needle: str, interval: float = 60.0) -> None:
        super().__init__()
        self.needle = needle
        self.interval = interval
        self._last = 0.0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.needle not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            self._dropped += 1
            return False
        if self._dropped:
            record.msg = f"{record.msg} (and {self._dropped} more like it)"
            record.args = None
            self._dropped = 0
        self._last = now
        return True


class _CutResponses(logging.Filter):
    """Drops uvicorn's traceback of a response ended unfinished because its log was cut
    (``LogCutError``): no bug, a storage failure, which ``http/body.py`` already logged
    in one line (and health reports)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None or not isinstance(record.exc_info[1], LogCutError)


def quiet_server_logs() -> None:
    """asyncio logs every failed accept(): once a minute is enough to see the problem;
    uvicorn logs a cut response's traceback: its one line is pysync's."""
    logging.getLogger("asyncio").addFilter(_ACCEPT_ERRORS)
    logging.getLogger("uvicorn.error").addFilter(_CUT_RESPONSES)  # once, however often called


_ACCEPT_ERRORS = _RateLimited("socket.accept() out of system resource")
_CUT_RESPONSES = _CutResponses()
