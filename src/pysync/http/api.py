"""The HTTP Shape API (``/v1/shape``, ``/v1/health``, ``/metrics``), wire-compatible
with Electric.

A shape request goes through named steps: authorise -> parse -> admit -> load the shape
-> check it -> wait for its snapshot -> serve (long-poll, SSE or subset); the rules that
the live path of ``pysync serve`` shares are in ``steps.py``. Any step raises
``ShapeAPIError``; ``handle`` renders it, once, the same way for the standalone app and
for routes mounted in an embedding app. An unexpected exception is logged with its
traceback and answered with Electric's redacted 500; the engine keeps running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

import msgspec
import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pysync.config import Settings
from pysync.http import auth, request_span, responses, sse, steps
from pysync.http.admission import Admission, kind_of
from pysync.http.delete import delete_shape
from pysync.http.errors import (
    LOG_CUT,
    MustRefetch,
    ShapeAPIError,
    invalid,
    snapshot_error,
    unavailable,
)
from pysync.http.log_response import LogResponses
from pysync.http.params import ShapeRequest
from pysync.http.response_counts import ResponseCounts
from pysync.http.responses import JSON, common
from pysync.http.shared import SharedResponses
from pysync.http.source import EngineUnavailable, ShapeSource
from pysync.http.subset import SubsetError, serve_subset, subset_fields_from_body
from pysync.http.waiters import InterruptRegistry, Recheck
from pysync.log.log import LogSlice
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.log.storage import LogCutError
from pysync.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pysync.shapes.consumer import ShapeConsumer, ShapeGone
from pysync.shapes.definition import ShapeDefinition, ShapeError
from pysync.tracing import NO_TRACER, Tracer

SSE_TIMEOUT = 60.0
"""Seconds an SSE response lasts before the client reconnects (Electric: 60)."""
log = logging.getLogger(__name__)

SHAPE_METHODS = ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]
SHAPE_PATHS = ("/v1/shape", "/v1/shape/")
SNAPSHOT_WAIT = 60.0
"""How long a request waits for the first snapshot data (Electric: 60 s for a chunk)."""

_encode = msgspec.json.encode


def is_live(query: bytes) -> bool:
    """The request's ``live`` as ``parse_request`` reads it (present, not ``false``)."""
    if b"live=" not in query:
        return False
    value = parse_qs(query.decode("latin-1"), keep_blank_values=True).get("live")
    return value is not None and value[-1] != "false"


class ShapeAPI:
    """Serves the shapes of an ``Engine`` (or of any ``ShapeSource``); ``interrupts``
    releases waiting live requests."""

    def __init__(
        self,
        engine: ShapeSource,
        *,
        secret: str | None = None,
        long_poll_timeout: float = 20.0,
        sse_timeout: float = SSE_TIMEOUT,
        allow_delete: bool = False,
        max_age: int = 60,
        stale_age: int = 300,
        max_initial_requests: int = 300,
        max_existing_requests: int = 10_000,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``tracer``: a server span per shape request (``pysync.tracing``); with one
        enabled, ``pysync serve`` takes live requests through the app, not its live path
        (``http/parking.py``), so that each has its span."""
        self.engine = engine
        self.tracer = tracer
        self.secret = secret
        self.long_poll_timeout = long_poll_timeout
        self.sse_timeout = sse_timeout
        self.allow_delete = allow_delete
        self.interrupts = InterruptRegistry()
        self.log_responses = LogResponses(
            engine, long_poll_timeout=long_poll_timeout, max_age=max_age, stale_age=stale_age
        )
        self.sse_batches: SharedResponses[sse.Batch] = SharedResponses()
        self.response_counts = ResponseCounts(engine.metrics)
        self._closing: asyncio.Future[None] | None = None
        self.closing = False
        self.admission = Admission(
            engine.metrics, initial=max_initial_requests, existing=max_existing_requests
        )
        engine.metrics.gauge(
            "pysync_waiting_requests",
            "Live requests waiting for changes.",
            lambda: len(self.interrupts),
        )

    @classmethod
    def from_settings(
        cls, engine: ShapeSource, settings: Settings, tracer: Tracer = NO_TRACER
    ) -> ShapeAPI:
        """The API as ``pysync serve`` and an embedded ``Sync`` configure it."""
        return cls(
            engine,
            secret=settings.secret,
            long_poll_timeout=settings.long_poll_timeout,
            allow_delete=settings.allow_delete,
            max_age=settings.cache_max_age,
            stale_age=settings.cache_stale_age,
            max_initial_requests=settings.max_initial_requests,
            max_existing_requests=settings.max_existing_requests,
            tracer=tracer,
        )

    def close(self) -> None:
        """Server shutdown: waiting live requests answer now instead of holding it up."""
        self.closing = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        self.interrupts.release_all()

    def _closing_future(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
            if self.closing:
                self._closing.set_result(None)
        return self._closing

    # -- routes ---------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """Electric's routes: ``/v1/shape``, ``/v1/health``, and ``/metrics``."""
        return [
            Route("/v1/shape", self.endpoint, methods=SHAPE_METHODS),
            Route("/v1/shape/", self.endpoint, methods=SHAPE_METHODS),
            Route("/v1/health", self.health, methods=["GET", "HEAD"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    def app(self, lifespan: Any = None) -> ASGIApp:
        """The standalone ASGI app: ``/v1/shape`` goes straight to the handler, everything
        else through Starlette (which also answers ``/`` as Electric does). Skipping
        Starlette's middleware and routing on the hot path saves a good share of the CPU
        of each live response."""
        starlette = Starlette(
            routes=[*self.routes(), Route("/", self.root, methods=["GET", "HEAD"])],
            lifespan=lifespan,
        )
        counts = self.response_counts
        tracer = self.tracer

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await starlette(scope, receive, send)
                return

            async def counting(message: Message) -> None:
                if message["type"] == "http.response.start":
                    counts.status(message["status"])
                await send(message)

            if scope["path"] not in SHAPE_PATHS or scope["method"] not in SHAPE_METHODS:
                await starlette(scope, receive, counting)
                return
            status = 0
            headers: Sequence[tuple[bytes, bytes]] = ()
            size = 0

            async def measuring(message: Message) -> None:
                nonlocal status, headers, size
                if message["type"] == "http.response.start":
                    status = message["status"]
                    counts.status(status)
                    headers = message.get("headers", ())
                elif message["type"] == "http.response.body":
                    size += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        live = is_live(scope["query_string"])
                        counts.shape_response(status, headers, live, size)
                await send(message)

            if tracer.enabled:
                respond = functools.partial(self._respond, scope, receive)
                await request_span.traced(tracer, scope, measuring, respond)
                return
            response = await self.endpoint(Request(scope, receive))
            await response(scope, receive, measuring)

        return asgi

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async def root(self, request: Request) -> Response:
        return Response(b"", headers=common({}, request, shape_route=False))

    async def health(self, request: Request) -> Response:
        engine = self.engine
        status = engine.status.value
        body: dict[str, Any] = {"status": status}
        # The details name tables and paths: with a secret, only for who gives it (a
        # probe needs only the status and its code, as Electric's health has).
        if auth.secret_ok(request.query_params, self.secret):
            if engine.problem and status == "degraded":
                body["reason"] = engine.problem
            if engine.warnings:
                body["warnings"] = engine.warnings
        code = {"active": 200, "starting": 202, "waiting": 202, "degraded": 503}.get(status, 503)
        headers = common(
            {"cache-control": "no-cache, no-store, must-revalidate"}, request, shape_route=False
        )
        return Response(_encode(body), status_code=code, media_type=JSON, headers=headers)

    async def metrics(self, request: Request) -> Response:
        return Response(await self.engine.metrics.scrape(), media_type=METRICS_CONTENT_TYPE)

    async def endpoint(self, request: Request) -> Response:
        """``/v1/shape``: every method."""
        return await self.handle(request, self._shape_request)

    @property
    def in_flight(self) -> dict[str, int]:
        """Shape requests being served, by admission kind (``admission.py``)."""
        return self.admission.in_flight

    def busy(self) -> bool:
        """A shape request is being answered or waits for changes (idle close waits)."""
        return bool(len(self.interrupts)) or self.admission.busy()

    async def handle(
        self, request: Request, step: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Run ``step``; render what it raises. Every shape route goes through here."""
        try:
            return await step(request)
        except ShapeAPIError as exc:
            return responses.error_response(request, exc)
        except LogCutError:
            return responses.error_response(request, LOG_CUT)
        except Exception:  # noqa: BLE001 - as Electric: a redacted 500, never a crash
            log.exception("error serving %s %s", request.method, request.url.path)
            return responses.error_response(request, responses.INTERNAL_ERROR)

    # -- the steps ------------------------------------------------------------------

    async def _shape_request(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return responses.options(request, allow_delete=self.allow_delete)
        self.authorise(request)
        if request.method == "DELETE":
            return await delete_shape(self, request)
        parsed, subset = await self._parse(request)
        assert parsed.definition is not None
        return await self._serve(request, parsed, parsed.definition, None, subset)

    def authorise(self, request: Request) -> None:
        """The configured secret, as ``?secret=`` (or the deprecated ``api_secret``)."""
        steps.authorise(request.query_params, self.secret)

    async def _parse(self, request: Request) -> tuple[ShapeRequest, dict[str, object] | None]:
        query: dict[str, str] = dict(request.query_params)
        if request.method != "POST":
            return steps.validate(query)
        try:
            subset = await subset_fields_from_body(request, query)  # other keys join query
        except SubsetError as exc:
            raise steps.bad_subset(exc) from None
        return steps.parse(query), subset

    @staticmethod
    def parse_query(query: Any, *, shape_from_params: bool = True) -> ShapeRequest:
        """``steps.parse``, for the routes an app defines (``app/render.py``)."""
        return steps.parse(query, shape_from_params=shape_from_params)

    async def serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None = None,
        subset: dict[str, object] | None = None,
    ) -> Response:
        """The response to a validated request for ``definition``: how app-defined
        shapes are served (``recheck`` re-evaluates the shape after an interrupt)."""
        if parsed.definition is None:
            parsed.definition = definition  # what interrupts match this request by

        async def step(request: Request) -> Response:
            return await self._serve(request, parsed, definition, recheck, subset)

        return await self.handle(request, step)

    async def _serve(
        self,
        request: Request,
        parsed: ShapeRequest,
        definition: ShapeDefinition,
        recheck: Recheck | None,
        subset: dict[str, object] | None,
    ) -> Response:
        with self.admission.admitted(kind_of(self.engine.known(definition))):
            # A new client's shape is checked against the catalog (its table may have
            # been dropped and created again); the others follow the handle they have.
            consumer = await self._load(definition, verify=parsed.offset == BEFORE_ALL)
            steps.check_shape(parsed, consumer)
            offset = parsed.offset
            await self._wait_for_snapshot(parsed, consumer)
            if subset is not None:
                try:
                    return await serve_subset(
                        request, self.engine, consumer, subset, self.log_responses.schema(consumer)
                    )
                except ShapeGone:
                    raise await self.gone(parsed, consumer) from None
            if offset == "now":
                nothing = LogSlice([], [], consumer.last_offset, True, 0)
                return self.log_responses.response(
                    request, parsed, consumer, nothing, up_to_date=True, has_data=False
                )
            if parsed.sse:
                return sse.response(self, request, parsed, consumer, offset, recheck)
            return await self._serve_log(request, parsed, consumer, offset, recheck)

    async def _load(self, definition: ShapeDefinition, verify: bool = False) -> ShapeConsumer:
        try:
            return await self.engine.shape(definition, verify=verify)
        except ShapeError as exc:
            raise invalid({exc.field: [exc.message]}) from None
        except EngineUnavailable as exc:
            raise unavailable(exc.reason, exc.retry_after) from None
        except psycopg.OperationalError:
            raise unavailable(
                "Cannot connect to the database to verify the shape. Please try again later.", 1
            ) from None

    async def _wait_for_snapshot(self, parsed: ShapeRequest, consumer: ShapeConsumer) -> None:
        # Electric points 0_k at chunk k+1 while the snapshot is still being written and
        # waits for that chunk: answering [] at the same offset without up-to-date would
        # make the client re-ask at once (a busy loop, read as a proxy loop by the TS client).
        after = None if parsed.offset == "now" else parsed.offset
        try:
            ready = await consumer.wait(after, SNAPSHOT_WAIT, until_snapshot=True)
        except ShapeGone:
            raise await self.gone(parsed, consumer) from None
        except Exception as exc:  # noqa: BLE001 - the snapshot's failure, for the client
            raise snapshot_error(exc) from exc
        if not ready:
            raise unavailable("Snapshot timed out, please retry", 10)

    async def _serve_log(
        self,
        request: Request,
        parsed: ShapeRequest,
        consumer: ShapeConsumer,
        offset: LogOffset,
        recheck: Recheck | None,
    ) -> Response:
        part = consumer.slice(offset)
        step = steps.next_step(parsed, consumer, offset, part)
        if step is steps.Next.HOLD:
            await self.hold(parsed, consumer, offset, self.long_poll_timeout, recheck)
            part = consumer.slice(offset)
        elif step is steps.Next.AHEAD:
            await self.hold(parsed, consumer, offset, self.long_poll_timeout / 2, None)
            part = consumer.slice(offset)
            if steps.out_of_bounds(consumer, offset, part):
                self._check_storage()  # ahead because storage lost unsynced frames: retry
                raise invalid(steps.OUT_OF_BOUNDS)
        if consumer.gone:
            raise await self.gone(parsed, consumer)
        return self.live_response(request, parsed, consumer, part)

    def live_response(
        self, request: Request, parsed: ShapeRequest, consumer: ShapeConsumer, part: LogSlice
    ) -> Response:
        """The response to a log request with ``part`` read after its offset."""
        up_to_date = part.reached and parsed.offset != BEFORE_ALL
        # Only a live request that waited without data (timeout, interrupt) is a "no change"
        # response (has-data false, unrevalidatable etag); a non-live read that finds nothing
        # new still answers has-data true, as Electric's no_change_response is long-poll only.
        no_change = parsed.live and not part.spans
        return self.log_responses.response(
            request, parsed, consumer, part, up_to_date=up_to_date, has_data=not no_change
        )

    async def hold(
        self,
        parsed: ShapeRequest,
        consumer: ShapeConsumer,
        offset: LogOffset,
        timeout: float,
        recheck: Recheck | None,
    ) -> None:
        """Wait up to ``timeout`` for data after ``offset``.

        Returns on data, timeout, shutdown or an interrupt (after which a re-checked shape
        that did not change goes on waiting). Raises MustRefetch when the shape is gone or
        its definition changed, 503 when storage fails meanwhile."""
        deadline = time.monotonic() + timeout
        closing = self._closing_future()
        # Matched by the definition this request asked for (the shape may have been
        # created by an equivalent one written differently).
        with self.interrupts.waiting(parsed.definition or consumer.definition, recheck) as waiter:
            while not self.closing:
                self._check_storage()
                wake = (waiter.released, closing, self.engine.storage_failure())
                try:
                    got = await consumer.wait(offset, deadline - time.monotonic(), wake=wake)
                except ShapeGone:
                    raise await self.gone(parsed, consumer) from None
                self._check_storage()
                if got or not waiter.released.done() or waiter.recheck is None:
                    return  # data, timeout or shutdown (only app-defined shapes are interrupted)
                current = await waiter.recheck()
                if current != waiter.definition:
                    try:
                        replacement = await self.engine.shape(current)
                    except (ShapeError, EngineUnavailable, psycopg.OperationalError):
                        raise steps.refetch(parsed, None) from None
                    if replacement is not consumer:  # else: written differently, same shape
                        raise steps.refetch(parsed, replacement.handle)
                waiter.rearm()

    def _check_storage(self) -> None:
        error = self.engine.storage_error
        if error is not None:
            raise unavailable(f"pysync cannot store changes right now ({error.reason}); retry", 5)

    async def gone(self, parsed: ShapeRequest, consumer: ShapeConsumer) -> MustRefetch:
        """The 409 for a request that was served ``consumer``, now gone: with the handle
        to refetch (a new shape for the same definition, as Electric) if one can be had.
        Never the error a new request would get (its table or a column it selects gone
        meanwhile): that is for the refetch."""
        try:
            handle: str | None = (await self.engine.shape(consumer.definition)).handle
        except (ShapeError, EngineUnavailable, psycopg.OperationalError):
            handle = None
        return steps.refetch(parsed, handle)
