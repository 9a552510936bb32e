"""``pysync.Sync``: the one object an app holds (Phoenix.Sync for Starlette / FastAPI).

    sync = pysync.Sync()                      # settings from arguments or PYSYNC_* / DATABASE_URL
    app = FastAPI(lifespan=sync.lifespan)     # or: async with sync: ... inside your lifespan
    app.router.routes.append(sync.route("/shapes/todos", Todo))    # a predefined shape
    # Electric's API (the client picks the shape), if wanted: behind the app's auth, and
    # only for the tables it may serve
    app.router.routes.append(sync.mount("/electric", tables=[Todo]))

    @app.get("/shapes/my-todos")
    async def my_todos(request: Request, user: User = Depends(current_user)):
        return await sync.render(request, lambda: pysync.shape(Todo, where=Todo.owner_id == user.id))

    sync.interrupt(Todo)    # after a change to who sees what: from any code or thread

    async with sync.materialise(Todo) as view:     # the shape's rows in this process, live
        async for change in view.changes(): ...

Two modes, one app code: ``mode="embedded"`` (default) runs the engine in this process
(one process per slot and storage directory); ``mode="http"`` forwards to a ``pysync
serve`` or Electric server at ``url`` (for several app workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from pysync import tracing
from pysync.app import logs
from pysync.app.cors import CORS
from pysync.app.http_mode import RemoteShapes
from pysync.app.instances import instance_maker
from pysync.app.live_html import Render, Source, html_events, shape_changed
from pysync.app.log_stream import LogStream
from pysync.app.render import Cache, EmbeddedShapes, ShapeBackend, check_cache, render
from pysync.app.routes import app_route, electric_routes, mount
from pysync.app.served_tables import ServedTables
from pysync.app.shapes import (
    call_shape_function,
    interrupt_target,
    is_shape_function,
    shape,
)
from pysync.app.transform import Transform
from pysync.app.view import MAX_BEHIND, Change, View
from pysync.client.client import Client
from pysync.client.shape import MessageSource, Shape
from pysync.config import Settings, env_origins, from_env, make_settings
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.http.waiters import InterruptRegistry
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.postgres.private import PrivateDatabase
from pysync.redact import redacted
from pysync.shapes.definition import ShapeDefinition

log = logging.getLogger("pysync")

_FROM_ENV: Any = object()
_running: list[Sync] = []


class Sync:
    """Settings: any field of ``pysync serve``'s (``storage_dir``, ``data_dir``, ``secret``,
    ``long_poll_timeout``, ``slot``, ``publication``, ``max_shapes``, ``chunk_bytes``,
    ``log_level`` ...), as keyword arguments, else from ``PYSYNC_*`` / ``ELECTRIC_*``
    environment variables (``env=False`` ignores those).

    ``database_url``: the Postgres to sync from; by default ``DATABASE_URL``; ``None`` (or
    ``Sync.dev()``) starts a private Postgres in ``<data_dir>/postgres`` (read its URL
    from ``sync.database_url`` once started). ``in_memory``: shape logs in memory (tests).
    ``cors``: CORS and vary of the app's shape routes (default: any origin, no
    credentials). ``mode="http"`` with ``url``: forward to that sync service.
    """

    def __init__(
        self,
        database_url: str | None = _FROM_ENV,
        *,
        mode: Literal["embedded", "http"] = "embedded",
        url: str | None = None,
        cors: CORS | None = None,
        in_memory: bool = False,
        env: bool = True,
        **settings: Any,
    ) -> None:
        self.settings = _settings(database_url, env, settings)
        if mode not in ("embedded", "http"):
            raise ValueError(f"mode must be 'embedded' or 'http', not {mode!r}")
        self.mode = mode
        self.url = url or (os.environ.get("PYSYNC_URL") if env else None)
        if mode == "http" and not self.url:
            raise ValueError(
                "mode='http' needs url= (or PYSYNC_URL): the sync service to forward to"
            )
        self.cors = cors or CORS()
        self.in_memory = in_memory
        self._backend: ShapeBackend | None = None
        self._engine: Engine | None = None
        self._api: ShapeAPI | None = None
        self._private: PrivateDatabase | None = None
        self._database_url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._views: set[View] = set()

    def configure(
        self,
        database_url: str | None = _FROM_ENV,
        *,
        in_memory: bool = False,
        env: bool = True,
        **settings: Any,
    ) -> None:
        """Replace the settings of a Sync that is not started, as the constructor takes
        them. For an app's tests: a module-level ``sync = pysync.Sync()`` read its settings
        when the app was imported; ``sync.configure(test_database_url, **settings)`` makes
        its next start use the test's database (see ``pysync.testing``)."""
        if self._backend is not None or self._private is not None:
            raise RuntimeError("configure a Sync before it starts (or after it stopped)")
        self.settings = _settings(database_url, env, settings)
        self.in_memory = in_memory

    @classmethod
    def dev(cls, **settings: Any) -> Sync:
        """A Sync on the private Postgres of ``data_dir`` (default ``./.pysync``)."""
        return cls(None, **settings)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start replicating (embedded) or connect (http). Raises what to fix: e.g.
        SlotInUseError when another process replicates from the same slot."""
        if self._backend is not None:
            raise RuntimeError("this Sync is already started")
        logs.configure(self.settings.log_level)
        settings = self.settings
        if self.mode == "http":
            assert self.url is not None
            remote = RemoteShapes(self.url, secret=settings.secret)
            await remote.start()
            self._backend = remote
            log.info("forwarding shape requests to %s", redacted(self.url))
        else:
            await self._start_engine(settings)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        _running.append(self)

    async def _start_engine(self, settings: Settings) -> None:
        url = settings.database_url
        if PrivateDatabase.wanted(settings.data_dir, url):
            self._private = PrivateDatabase(settings.data_dir)
            url = await asyncio.to_thread(self._private.start)
            log.info(
                "private Postgres of %s: DATABASE_URL=%s",
                settings.data_dir,
                self._private.cluster.shown_url(),
            )
        assert url is not None
        # The private Postgres is local, without TLS: the settings are for DATABASE_URL.
        # (``database_url`` stays the URL given, for the app's own engines.)
        conninfo = url if self._private is not None else settings.conninfo(url)
        tracer = tracing.from_settings(settings)
        engine = Engine.from_settings(conninfo, settings, in_memory=self.in_memory, tracer=tracer)
        try:
            await engine.start()
        except BaseException:
            await asyncio.to_thread(tracer.shutdown)
            await self._stop_private()
            raise
        self._database_url = url
        self._engine = engine
        self._api = api = ShapeAPI.from_settings(engine, settings, tracer)
        engine.served_by(api.busy)
        # A view following a shape is served too: idle close must not stop its changes.
        engine.served_by(lambda: bool(self._views))
        self._backend = EmbeddedShapes(engine, api)
        log.info("syncing shapes (slot %s, publication %s)", engine.slot, settings.publication)

    async def stop(self) -> None:
        if self in _running:
            _running.remove(self)
        for view in list(self._views):
            await view.close()
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()
        if isinstance(backend, RemoteShapes):
            await backend.stop()
        engine, self._engine, self._api = self._engine, None, None
        if engine is not None:
            await engine.stop()
            await asyncio.to_thread(engine.tracer.shutdown)
        await self._stop_private()

    async def _stop_private(self) -> None:
        private, self._private = self._private, None
        if private is not None:
            await asyncio.to_thread(private.stop)

    async def __aenter__(self) -> Sync:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def lifespan(self, app: object = None) -> contextlib.AbstractAsyncContextManager[None]:
        """A Starlette/FastAPI ``lifespan`` (``Starlette(lifespan=sync.lifespan)``), or
        ``async with sync.lifespan(app):`` inside the app's own."""
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # -- state ------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The database synced from (the private one's URL once started)."""
        if self._database_url is not None:
            return self._database_url
        if self.settings.database_url is not None and self._private is None:
            return self.settings.database_url
        raise RuntimeError(
            "the private Postgres starts with the Sync: read database_url after start"
        )

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("no engine: the Sync is not started, or runs in http mode")
        return self._engine

    @property
    def api(self) -> ShapeAPI:
        if self._api is None:
            raise RuntimeError("no ShapeAPI: the Sync is not started, or runs in http mode")
        return self._api

    @property
    def started(self) -> bool:
        return self._backend is not None

    @property
    def waiting(self) -> int:
        """Live requests waiting for changes now (on this Sync's routes)."""
        return self._backend.waiting if self._backend is not None else 0

    def _get_backend(self) -> ShapeBackend:
        if self._backend is None:
            raise RuntimeError(
                "the Sync is not started: use sync.lifespan as the app's lifespan, "
                "or `async with sync:` inside it"
            )
        return self._backend

    # -- routes -----------------------------------------------------------------------

    def routes(
        self, *, tables: Iterable[object] | None = None, metrics: bool = False
    ) -> list[BaseRoute]:
        """Electric's API at the app's root: ``/v1/shape`` (client-defined shapes, every
        method) and ``/v1/health``; ``/metrics`` too when asked. Nothing at ``/``.

        The client chooses the table, WHERE and columns: without ``tables`` anyone who
        reaches these routes reads any table. ``tables``: the tables served (names,
        SQLAlchemy Tables or ORM classes); a request for another, or whose WHERE selects
        from another in a subquery, is a 403. The app's middleware (its auth) runs
        before these routes, as before any other."""
        served = ServedTables(tables) if tables is not None else None
        return electric_routes(
            self._get_backend,
            self.cors,
            metrics=metrics,
            tables=served,
            # In http mode the sync service decides: DELETE is forwarded to it.
            allow_delete=self.mode == "http" or self.settings.allow_delete,
        )

    def mount(
        self,
        path: str = "/electric",
        *,
        tables: Iterable[object] | None = None,
        metrics: bool = False,
    ) -> Mount:
        """Electric's API under ``path``: ``<path>/v1/shape``, ``<path>/v1/health``;
        ``tables`` as for ``routes``."""
        return mount(path, self.routes(tables=tables, metrics=metrics))

    def route(
        self,
        path: str,
        shape_: object,
        /,
        *,
        transform: Transform | None = None,
        check_secret: bool = True,
        cors: CORS | None = None,
        cache: Cache | None = None,
        name: str | None = None,
        **shape_options: Any,
    ) -> Route:
        """A route serving a shape the app defines: ``shape_`` is what ``pysync.shape``
        takes (plus its keywords: ``where=``, ``params=``, ``columns=``, ``replica=`` ...)
        or a function of the request returning one. Clients send only offset, handle,
        live, cursor and live_sse; their table/where/columns are ignored.

        With a ``secret`` configured the route requires it, unless ``check_secret=False``
        (the app authorises requests itself). ``cache``: a fixed shape is answered with
        Electric's ``public`` caching, a function's shape ``private`` (it is per request;
        say ``cache="public"`` if it is the same for everyone)."""
        source: object
        if is_shape_function(shape_):
            if shape_options:
                raise TypeError("give a shape function's options in the shape it returns")
            source = shape_
        else:
            source = shape(shape_, **shape_options)
        caching = check_cache(
            cache if cache is not None else "private" if source is shape_ else "public"
        )

        async def endpoint(request: Request) -> Response:
            return await self._render(request, source, transform, check_secret, cors, caching)

        return app_route(path, endpoint, name=name)

    async def render(
        self,
        request: Request,
        shape_: object,
        /,
        *,
        transform: Transform | None = None,
        check_secret: bool = True,
        cors: CORS | None = None,
        cache: Cache = "private",
        **shape_options: Any,
    ) -> Response:
        """The response for ``shape_`` to this request, from any endpoint (Phoenix.Sync's
        ``sync_render``): ``shape_`` and its keywords as for ``route``. With a function
        (``lambda: pysync.shape(...)``, or one taking the request), a live request is
        interruptible: ``interrupt`` runs it again.

        The shape is the request's (an endpoint may build it from the user), so the
        response is ``private`` to the client's cache; ``cache="public"`` lets shared
        caches (a CDN) keep it too, for a shape that is the same for everyone."""
        source = (
            shape_
            if is_shape_function(shape_) and not shape_options
            else shape(shape_, **shape_options)
        )
        caching = check_cache(cache)
        return await self._render(request, source, transform, check_secret, cors, caching)

    async def _render(
        self,
        request: Request,
        source: object,
        transform: Transform | None,
        check_secret: bool,
        cors: CORS | None,
        cache: Cache,
    ) -> Response:
        return await render(
            self._get_backend(),
            request,
            source,
            secret=self.settings.secret if check_secret else None,
            cors=cors or self.cors,
            transform=transform,
            cache=cache,
        )

    # -- shapes in this process ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def materialise(
        self, shape_: object, /, *, timeout: float | None = None, **shape_options: Any
    ) -> AsyncIterator[View]:
        """``async with sync.materialise(Todo) as view:`` the shape's rows in this process,
        live (``view.rows``, ``view.changes()``, ``view.wait_for_txid``), from the
        engine's log (embedded mode) or the sync service (http mode). ``shape_`` and its
        keywords as ``pysync.shape`` takes them; the rows of an ORM class are instances
        of it. Waits (up to ``timeout``) until the rows are up to date."""
        view = self._view(shape_, shape_options)
        try:
            await view.wait_up_to_date(timeout)
            yield view
        finally:
            await view.close()

    async def subscribe(
        self, shape_: object, /, *, max_behind: int | None = MAX_BEHIND, **shape_options: Any
    ) -> AsyncGenerator[Change]:
        """``async for change in sync.subscribe(Todo):`` the shape's rows as inserts, then
        every change to them (``Change``), live; ``max_behind`` as for ``View.changes``."""
        view = self._view(shape_, shape_options)
        try:
            # Subscribed before the view reads anything: its first rows are changes too.
            async for change in view.changes(max_behind=max_behind):
                yield change
        finally:
            await view.close()

    async def live_html(
        self,
        request: Request,
        shape_: object,
        /,
        *,
        render: Render,
        target: str,
        **shape_options: Any,
    ) -> Response:
        """The shape's rows as live HTML: Server-Sent Events that htmx's SSE extension
        swaps into the element ``target`` (a CSS selector, ``"#todos"``), each row as
        ``render(row)`` returns it (one element with an id). A reconnect resumes after
        the last event (``Last-Event-ID``). ``shape_`` as ``render`` takes it (a
        function of the request for a per-user shape, which ``interrupt`` runs again:
        a changed shape sends its rows anew); read with ``replica="full"``. The
        endpoint's own auth applies (as to any of the app's routes). See
        docs/in-process.md."""
        function = is_shape_function(shape_)
        if function:
            definition = await call_shape_function(shape_, request)  # type: ignore[arg-type]
        else:
            definition = shape(shape_, **shape_options)
        backend = self._get_backend()

        def source_of(definition: ShapeDefinition) -> Source:
            full = msgspec.structs.replace(definition, replica="full")

            def source(offset: LogOffset, handle: str | None) -> MessageSource:
                return self._source(backend, full, offset, handle)

            return source

        async def events() -> AsyncIterator[bytes]:
            last_event_id = request.headers.get("last-event-id")
            if not function:
                async for event in html_events(
                    source_of(definition), render, target, last_event_id
                ):
                    yield event
                return

            async def recheck() -> ShapeDefinition:
                return await call_shape_function(shape_, request)  # type: ignore[arg-type]

            with _interrupts(backend).waiting(definition, recheck) as waiter:

                async def reshaped() -> Source:
                    return source_of(await shape_changed(waiter))

                async for event in html_events(
                    source_of(definition), render, target, last_event_id, reshaped
                ):
                    yield event

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            # Per request (the endpoint's auth, a per-user shape): no cache may keep it.
            headers={"cache-control": "private, no-store", "x-accel-buffering": "no"},
        )

    def _source(
        self,
        backend: ShapeBackend,
        definition: ShapeDefinition,
        offset: LogOffset = BEFORE_ALL,
        handle: str | None = None,
    ) -> MessageSource:
        """The shape's messages from the engine's log, or from the sync service."""
        if isinstance(backend, RemoteShapes):
            client = Client(http=backend.http, secret=backend.secret)
            return client.stream(definition, offset=str(offset), handle=handle)
        return LogStream(self.engine, definition, offset=offset, handle=handle)

    def _view(self, shape_: object, options: dict[str, Any]) -> View:
        definition = shape(shape_, **options)
        source = self._source(self._get_backend(), definition)
        view = View(
            Shape(source, changes_only=definition.log_mode == "changes_only"),
            instance_maker(shape_),
            self._views.discard,
        )
        self._views.add(view)
        return view

    # -- interrupts ---------------------------------------------------------------------

    def interrupt(self, shape_: object = None, /, **options: Any) -> int:
        """Interrupt the waiting live requests whose shape came from a function and
        matches; returns how many. Each re-runs its function: an unchanged shape goes on
        waiting, a changed one gets 409 must-refetch with the new handle.

        ``shape_``: a table name, a ShapeDefinition, an ORM class or Table (every shape
        on its table), a ``select()`` or ORM class with ``where=`` (exactly that shape),
        or a predicate over the normalised shape (a dict of table, namespace, where,
        params, columns). ``table=``, ``namespace=``, ``where=``, ``params=``,
        ``columns=`` narrow a table match.

        Callable from async code, sync code and other threads (then it waits for the
        event loop to run the interrupt, so never call it from a thread the loop is
        blocked on)."""
        backend = self._backend
        loop = self._loop
        if backend is None or loop is None:
            return 0
        matcher, narrowed = interrupt_target(shape_, options)
        if threading.get_ident() == self._loop_thread or not loop.is_running():
            return backend.interrupt(matcher, **narrowed)  # type: ignore[arg-type]

        async def on_loop() -> int:
            return backend.interrupt(matcher, **narrowed)  # type: ignore[arg-type]

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result()


def _interrupts(backend: ShapeBackend) -> InterruptRegistry:
    """Where ``interrupt`` finds the waiting function-defined shapes of ``backend``."""
    if isinstance(backend, RemoteShapes):
        return backend.interrupts
    assert isinstance(backend, EmbeddedShapes)
    return backend.api.interrupts


def _settings(database_url: str | None, env: bool, settings: dict[str, Any]) -> Settings:
    unknown = sorted(set(settings) - set(Settings.__struct_fields__))
    if unknown:
        raise TypeError(
            f"unknown Sync setting(s) {', '.join(unknown)}; the settings are "
            f"{', '.join(Settings.__struct_fields__)}"
        )
    values: dict[str, object] = dict(from_env()) if env else {}
    given = {k: v for k, v in settings.items() if v is not None}
    if database_url is not _FROM_ENV:
        given["database_url"] = database_url
    values.update(given)
    # A bad value is named by the variable it came from, or by its argument.
    origins = {k: v for k, v in (env_origins() if env else {}).items() if k not in given}
    return make_settings(values, origins)


def interrupt(shape_: object = None, /, **options: Any) -> int:
    """``Sync.interrupt`` on every started Sync of this process; the total count."""
    return sum(sync.interrupt(shape_, **options) for sync in list(_running))
