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
import logging
import resource
import time
from collections import OrderedDict
from typing import Any

from pysync.shapes.storage import log_files_budget

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
            "allowing %d connections", requested, requested + reserved, limit, available,
        )
        return available
    return requested


def bounded_protocol(max_connections: int, header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed), with the connection limit and
    the header timeout.

    At the limit, the connection idle longest (one with no request in progress: just
    opened, or kept alive between requests) makes room for the new one, so idle sockets
    cannot lock out real clients (or the health check); with no idle one, the new
    connection is closed at once.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # pragma: no cover - httptools is a dependency
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    idle: OrderedDict[Any, None] = OrderedDict()
    """Connections without a request in progress, longest idle first."""

    class Bounded(Base):
        _shed = False
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                if not idle:
                    self._shed = True
                    transport.abort()
                    return
                oldest, _ = idle.popitem(last=False)
                oldest.transport.abort()
            # A reader that stops reading holds at most this much of a response here
            # (the rest waits in storage), whatever the size of the response.
            transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
            super().connection_made(transport)
            self._idle()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._shed:
                return
            idle.pop(self, None)
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._shed:
                return
            if self in idle:  # still reading a request head: bound its size
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
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

        def on_headers_complete(self) -> None:
            idle.pop(self, None)
            self._cancel_head_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._idle()

        def _idle(self) -> None:
            idle[self] = None
            self._head_bytes = 0
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            # No (next) request head in time: a stalled or slow client, or one kept
            # alive that went quiet. Closing it is what a server must do for both.
            self._head_timer = None
            idle.pop(self, None)
            self.transport.close()

    return Bounded


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


def quiet_accept_errors() -> None:
    """asyncio logs every failed accept(); once a minute is enough to see the problem."""
    logging.getLogger("asyncio").addFilter(_RateLimited("socket.accept() out of system resource"))
