"""Shape responses from Django views: ``render(request, queryset)`` in an async view,
``sync_path(route, queryset)`` in ``urlpatterns``, ``interrupt(queryset)``.

The Django request's ASGI scope becomes a Starlette request for the app layer's
``render`` (the same code path as ``Sync.render``), and its response is sent back as a
Django response: whole, or streamed when the app layer streams (SSE, large logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from typing import Any
from wsgiref.util import is_hop_by_hop

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import URLPattern, path
from starlette.requests import Request
from starlette.responses import Response

from pysync.app.shapes import is_shape_function
from pysync.django.engine import (
    Message,
    background_loop,
    get_sync,
    serves_in_request_loop,
    started_sync,
)
from pysync.django.queryset import queryset_shape
from pysync.shapes.definition import ShapeDefinition

ShapeSource = Any
"""A QuerySet, what ``pysync.shape`` takes, or a function of the request returning one."""


def definition_of(source: object) -> object:
    """A QuerySet as its ShapeDefinition; anything else as ``pysync.shape`` takes it."""
    if isinstance(source, QuerySet):
        return queryset_shape(source)
    return source


async def render(
    request: HttpRequest,
    shape: ShapeSource,
    /,
    *,
    check_secret: bool = True,
    cache: str = "private",
    **options: Any,
) -> HttpResponseBase:
    """The Electric-protocol response for ``shape`` to this request (from an async view;
    the view does the auth; under ASGI, or WSGI for development). ``shape``: a QuerySet, or a function (``fn(request)`` or
    ``fn()``, sync or async) returning one: then a live request is interruptible
    (``interrupt`` runs it again). ``options`` as ``Sync.render`` takes them."""
    source = _per_request(shape, request) if _is_function(shape) else definition_of(shape)

    async def respond(scope: dict[str, Any], whole: bool) -> HttpResponseBase:
        sync = await started_sync()
        response = await sync.render(
            Request(scope, _no_body),
            source,
            check_secret=check_secret,
            cache=cache,  # type: ignore[arg-type]
            **options,
        )
        return await to_django(response, scope, whole=whole)

    return await _in_engine_loop(request, respond)


def sync_path(
    route: str, shape: ShapeSource, /, *, name: str | None = None, **options: Any
) -> URLPattern:
    """A ``urlpatterns`` entry serving ``shape`` (as ``render`` takes it). A fixed shape
    is answered with Electric's ``public`` caching, a function's ``private``."""
    function = _is_function(shape)
    fixed = None if function else definition_of(shape)
    options.setdefault("cache", "private" if function else "public")

    async def view(request: HttpRequest) -> HttpResponseBase:
        return await render(request, shape if function else fixed, **options)

    return path(route, view, name=name)


def interrupt(shape: object = None, /, **options: Any) -> int:
    """Interrupt the waiting live requests whose shape came from a function and matches
    ``shape``: a QuerySet (exactly its shape), a model class (every shape on its table),
    or what ``pysync.interrupt`` takes. From async code, sync views, signal handlers."""
    return get_sync().interrupt(shape, **options)


def electric_view(
    *, tables: Iterable[object] | None = None
) -> Callable[[HttpRequest], Awaitable[HttpResponseBase]]:
    """Electric's ``/v1/shape`` as an async Django view (route it at ``<prefix>/v1/shape``):
    the client chooses the table, WHERE and columns, so give ``tables`` (models,
    QuerySets' tables, names): a request for another table, or whose WHERE reads another
    in a subquery, is a 403. Django's middleware and decorators (``login_required``)
    run before it, as before any view."""
    served = None if tables is None else [_table_of(t) for t in tables]
    endpoints: dict[int, Callable[[Request], Awaitable[Response]]] = {}

    async def view(request: HttpRequest) -> HttpResponseBase:
        body = request.body

        async def respond(scope: dict[str, Any], whole: bool) -> HttpResponseBase:
            sync = await started_sync()
            endpoint = endpoints.get(id(sync))
            if endpoint is None:
                route = sync.routes(tables=served)[0]
                endpoint = endpoints[id(sync)] = route.endpoint  # type: ignore[attr-defined]
            received = False

            async def receive() -> Message:
                nonlocal received
                if not received:
                    received = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await _no_body()

            response = await endpoint(Request(scope, receive))
            return await to_django(response, scope, whole=whole)

        return await _in_engine_loop(request, respond)

    return view


def _table_of(table: object) -> object:
    if isinstance(table, type) and issubclass(table, Model):
        model: Any = table
        return ShapeDefinition.create(model._meta.db_table, namespace="public")
    return definition_of(table)


Respond = Callable[[dict[str, Any], bool], Coroutine[Any, Any, HttpResponseBase]]


async def _in_engine_loop(request: HttpRequest, respond: Respond) -> HttpResponseBase:
    """``respond(scope, whole)`` in the engine's event loop: under ASGI the serving one;
    under WSGI (``runserver``) the engine's own thread, answered whole, except an event
    stream (SSE), which the WSGI server's thread reads from the engine's loop."""
    scope = getattr(request, "scope", None)
    if scope is not None:
        return await respond(dict(scope), False)
    if serves_in_request_loop():  # a sandboxed test's Django test client
        return await respond(_wsgi_scope(request), True)
    future = asyncio.run_coroutine_threadsafe(
        respond(_wsgi_scope(request), True), background_loop()
    )
    return await asyncio.wrap_future(future)


def _wsgi_scope(request: HttpRequest) -> dict[str, Any]:
    """The ASGI scope of a WSGI request (what the app layer reads of it)."""
    meta = request.META
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": str(meta.get("QUERY_STRING", "")).encode("latin-1"),
        "headers": [
            (name.lower().encode("latin-1"), str(value).encode("latin-1"))
            for name, value in request.headers.items()
        ],
        "server": (request.get_host().rsplit(":", 1)[0], int(request.get_port())),
        "client": (str(meta.get("REMOTE_ADDR", "")), 0),
    }


def _is_function(shape: object) -> bool:
    return not isinstance(shape, QuerySet) and is_shape_function(shape)


def _per_request(fn: Callable[..., Any], request: HttpRequest) -> Callable[[], Any]:
    """``fn`` of the Django request as the app layer's shape function: a plain function
    runs as Django runs sync code from async (``sync_to_async``: its ORM use is safe)."""
    takes_request = bool(inspect.signature(fn).parameters)
    args = (request,) if takes_request else ()
    wsgi = getattr(request, "scope", None) is None

    def call() -> object:
        if not wsgi:
            return fn(*args)
        # Under WSGI this runs outside Django's request cycle (in the engine's thread, or
        # the thread of the request it interrupts): close the connections it opened, as
        # a request's end would; left open, they keep a test database from being dropped.
        opened = {
            c.alias for c in connections.all(initialized_only=True) if c.connection is not None
        }
        try:
            return fn(*args)
        finally:
            for conn in connections.all(initialized_only=True):
                if (
                    conn.alias not in opened
                    and conn.connection is not None
                    and not conn.in_atomic_block
                ):
                    conn.close()

    async def shape_function() -> object:
        result: object
        if inspect.iscoroutinefunction(fn):
            result = await fn(*args)
        else:
            result = await sync_to_async(call)()
        if isinstance(result, QuerySet):
            return await sync_to_async(queryset_shape)(result)
        return result

    return shape_function


async def _no_body() -> Message:
    # A shape request has no body, and the app layer does not watch for disconnects:
    # Django does (it cancels the view).
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def to_django(
    response: Response, scope: dict[str, Any], *, whole: bool = False
) -> HttpResponseBase:
    """A Starlette response as Django's: sent to a queue, then streamed as the app layer
    streams it; ``whole`` (a WSGI server's request), answered whole, except an event
    stream (it never ends), whose chunks the server's thread reads from this loop."""
    queue: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.ensure_future(response(scope, _no_body, queue.put))
    start = await _next(queue, task)
    status = int(start["status"])
    headers = _headers(start.get("headers", []))
    if whole:  # WSGI leaves the connection to the server (an SSE's keep-alive)
        headers = [(name, value) for name, value in headers if not is_hop_by_hop(name)]
    events = any(
        name.lower() == "content-type" and value.startswith("text/event-stream")
        for name, value in headers
    )
    # An event stream starts at once: its first event may be a while coming.
    first: Message = {"body": b"", "more_body": True} if events else await _next(queue, task)
    if whole and not events:
        body = bytearray(first.get("body", b""))
        message = first
        while message.get("more_body"):
            message = await _next(queue, task)
            body += message.get("body", b"")
        first = {"body": bytes(body)}
    if not first.get("more_body"):
        await task
        plain = HttpResponse(first.get("body", b""), status=status)
        _copy(headers, plain)
        return plain

    async def chunks() -> AsyncGenerator[bytes]:
        try:
            # Even empty: a WSGI server sends the headers with the first chunk.
            yield first.get("body", b"")
            while True:
                message = await _next(queue, task)
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    content: AsyncIterator[bytes] | Iterator[bytes] = (
        _from_loop(chunks(), asyncio.get_running_loop()) if whole else chunks()
    )
    streamed = StreamingHttpResponse(content, status=status)
    _copy(headers, streamed)
    return streamed


def _from_loop(chunks: AsyncGenerator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """``chunks`` (of ``loop``, the engine's) for a WSGI server's thread: each read in
    ``loop``; closed there when the server stops reading (the client went away)."""

    async def step() -> bytes:
        return await anext(chunks)

    async def close() -> None:
        await chunks.aclose()

    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(step(), loop).result()
            except StopAsyncIteration:
                return
    finally:
        asyncio.run_coroutine_threadsafe(close(), loop).result()


async def _next(queue: asyncio.Queue[Message], task: asyncio.Future[None]) -> Message:
    getter = asyncio.ensure_future(queue.get())
    either: list[asyncio.Future[Any]] = [getter, task]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    task.result()  # raises what the response raised
    raise RuntimeError("the response ended before sending its body")


def _headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def _copy(headers: list[tuple[str, str]], response: HttpResponseBase) -> None:
    for name, value in headers:
        if name.lower() == "content-length" and isinstance(response, StreamingHttpResponse):
            continue
        if name in response.headers and name.lower() != "content-type":
            response.headers[name] = f"{response.headers[name]}, {value}"
        else:
            response.headers[name] = value
