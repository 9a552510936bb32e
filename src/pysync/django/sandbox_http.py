"""The sandbox's shapes served over Electric's protocol: ``SandboxShapes`` is the
``ShapeBackend`` of a ``SandboxSync``, the Sync that ``pysync.django`` views use while a
sandboxed test runs (see ``sandbox.py``).

A request is served in its own event loop (the test client's); the shape is read on the
test's thread (``sync_to_async``, thread-sensitive, as Django's views reach the ORM).
Live requests wait for the sandbox's next change; the sandbox wakes them from the test's
thread, so each waiter is woken in its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from asgiref.sync import sync_to_async
from starlette.requests import Request
from starlette.responses import Response

from pysync.app.shapes import interrupt_target
from pysync.app.sync import Sync
from pysync.django.sandbox import Sandbox, SandboxShape
from pysync.http.api import ShapeAPI
from pysync.http.cursor import next_cursor
from pysync.http.errors import MustRefetch, ShapeAPIError, invalid
from pysync.http.log_response import up_to_date
from pysync.http.params import ShapeRequest
from pysync.http.responses import JSON, common, error_response
from pysync.http.waiters import Recheck, ShapeMatcher, make_matcher
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.shapes.definition import ShapeDefinition, ShapeError

_NOT_IN_SANDBOX = (
    "the pysync sandbox (a test inside a transaction) does not serve {}: test them "
    "with real replication (SyncTestCase, django_db(transaction=True))"
)


class _Waiter:
    """A live request waiting for the sandbox's next change (or an interrupt)."""

    def __init__(self, definition: ShapeDefinition, recheck: Recheck | None) -> None:
        self.definition = definition
        self.recheck = recheck
        self.loop = asyncio.get_running_loop()
        self.woken: asyncio.Future[bool] = self.loop.create_future()
        """True when interrupted, False on a change."""

    def wake(self, interrupted: bool) -> None:
        """From any thread."""

        def set_result() -> None:
            if not self.woken.done():
                self.woken.set_result(interrupted)

        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(set_result)


class SandboxShapes:
    """A ``ShapeBackend`` serving the shapes of a ``Sandbox``."""

    def __init__(self, sandbox: Sandbox, *, long_poll_timeout: float = 20.0) -> None:
        self.sandbox = sandbox
        self.long_poll_timeout = long_poll_timeout
        self._waiters: set[_Waiter] = set()
        self.closing = False
        sandbox.watch(self._changed)

    async def serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None,
    ) -> Response:
        try:
            return await self._serve(request, parsed, definition, recheck)
        except ShapeAPIError as exc:
            return error_response(request, exc)

    async def electric(self, request: Request) -> Response:
        try:
            query = dict(request.query_params)
            if request.method == "POST" or any(k.startswith("subset__") for k in query):
                raise invalid({"subset": [_NOT_IN_SANDBOX.format("subset snapshots")]})
            parsed = ShapeAPI.parse_query(query)
        except ShapeAPIError as exc:
            return error_response(request, exc)
        assert parsed.definition is not None
        return await self.serve(request, parsed, parsed.definition, None)

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"active"}', media_type=JSON, headers=common({}, request))

    def interrupt(self, shape: ShapeMatcher | None, **options: Any) -> int:
        matches = make_matcher(shape, **options)
        woken = 0
        for waiter in list(self._waiters):
            if waiter.recheck is not None and matches(waiter.definition):
                waiter.wake(True)
                woken += 1
        return woken

    def close(self) -> None:
        self.closing = True
        for waiter in list(self._waiters):
            waiter.wake(False)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _changed(self) -> None:
        for waiter in list(self._waiters):
            waiter.wake(False)

    # -- serving ----------------------------------------------------------------------

    async def _shape(self, definition: ShapeDefinition) -> SandboxShape:
        try:
            return await sync_to_async(self.sandbox.shape)(definition)
        except ShapeError as exc:
            raise invalid({exc.field: [exc.message]}) from None

    async def _serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None,
    ) -> Response:
        if parsed.sse:
            raise invalid({"live_sse": [_NOT_IN_SANDBOX.format("Server-Sent Events")]})
        shape = await self._shape(definition)
        offset = parsed.offset
        refetch = MustRefetch(shape.handle, offset, parsed.live, parsed.sse)
        if offset != "now" and offset != BEFORE_ALL and parsed.handle != shape.handle:
            raise refetch
        if offset == "now":
            return self._response(request, parsed, shape, [], shape.last_offset, up_to_date=True)
        if offset > shape.last_offset:
            raise invalid({"offset": ["out of bounds for this shape"]})
        deadline = time.monotonic() + self.long_poll_timeout
        while True:
            # Registered before reading: a change made meanwhile (on the test's thread)
            # wakes it.
            with self._waiting(definition, recheck) as waiter:
                entries, end = shape.after(offset)
                remaining = deadline - time.monotonic()
                if entries or not parsed.live or self.closing or shape.gone or remaining <= 0:
                    break
                try:
                    interrupted = await asyncio.wait_for(waiter.woken, remaining)
                except TimeoutError:
                    continue
            if interrupted and recheck is not None:
                current = await recheck()
                if current != definition:
                    replacement = await self._shape(current)
                    if replacement is not shape:
                        raise MustRefetch(replacement.handle, offset, parsed.live, parsed.sse)
        if shape.gone is not None:
            raise refetch
        return self._response(request, parsed, shape, entries, end, up_to_date=offset != BEFORE_ALL)

    @contextlib.contextmanager
    def _waiting(self, definition: ShapeDefinition, recheck: Recheck | None) -> Iterator[_Waiter]:
        waiter = _Waiter(definition, recheck)
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)

    def _response(
        self,
        request: Request,
        parsed: ShapeRequest,
        shape: SandboxShape,
        entries: list[bytes],
        end: LogOffset,
        *,
        up_to_date: bool,
    ) -> Response:
        """``entries`` of the log up to ``end`` (read together: a change appended since
        is after ``end``, so the client asks for it next)."""
        messages = list(entries)
        if up_to_date:
            messages.append(_up_to_date(end.tx))
        has_data = bool(entries) or not parsed.live
        headers = {
            "electric-handle": shape.handle,
            "electric-offset": str(end),
            "electric-has-data": "true" if has_data else "false",
            # A test's responses are its own: no cache may keep them.
            "cache-control": "no-store",
        }
        if up_to_date:
            headers["electric-up-to-date"] = ""
        if parsed.live:
            headers["electric-cursor"] = next_cursor(
                int(self.long_poll_timeout * 1000), parsed.cursor
            )
        else:
            headers["electric-schema"] = shape.schema
        body = b"[" + b",".join(messages) + b"]"
        return Response(body, media_type=JSON, headers=common(headers, request))


def _up_to_date(sequence: int) -> bytes:
    return up_to_date(max(sequence, 0))


class SandboxSync(Sync):
    """The Sync of a sandboxed test: started at once, its shapes those of ``sandbox``.
    It has no engine: ``materialise``, ``subscribe`` and ``live_html`` need a
    ``SyncTestCase`` (real replication)."""

    serves_in_request_loop = True
    """Requests are served in their own event loop, so that the sandbox's reads reach
    the test's thread (``pysync.django.views``)."""

    def __init__(self, sandbox: Sandbox, **settings: Any) -> None:
        """``settings``: of ``Sync`` (``secret``, ``long_poll_timeout``)."""
        super().__init__(None, env=False, in_memory=True, **settings)
        self.sandbox = sandbox
        self._backend = SandboxShapes(sandbox, long_poll_timeout=self.settings.long_poll_timeout)

    async def start(self) -> None:
        """Already started (the sandbox needs no engine)."""

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        """Waiting requests answer now; later ones find no Sync."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def interrupt(self, shape_: object = None, /, **options: Any) -> int:
        """As ``Sync.interrupt``, from any thread (waiters are woken in their own loop)."""
        backend = self._backend
        if backend is None:
            return 0
        matcher, narrowed = interrupt_target(shape_, options)
        return backend.interrupt(matcher, **narrowed)  # type: ignore[arg-type]
