"""The process's ``pysync.Sync`` for Django, from ``settings.PYSYNC``, and its lifecycle.

Django's ASGI handler has no lifespan, so the Sync starts on the first shape request, in
the event loop that serves it (``uvicorn project.asgi:application``). Wrapping the
application in ``pysync.django.asgi(application)`` starts it at startup instead and stops
it at shutdown (waiting requests answered, the slot released) from the ASGI lifespan.
Under WSGI (``runserver``) it starts on the first shape request too, in an event loop
of its own thread (``background_loop``), and ends with the process.

``settings.PYSYNC`` takes what ``pysync.Sync`` takes: ``mode``, ``url``, ``in_memory``,
``env`` and any field of ``pysync serve``'s Settings (``slot``, ``publication``,
``secret``, ``storage_dir`` ...). ``database_url`` defaults to ``DATABASES["default"]``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlencode

from pysync.app.sync import Sync

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_sync: Sync | None = None
_starting: asyncio.Lock | None = None
_sync_loop: asyncio.AbstractEventLoop | None = None
_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()


def get_sync() -> Sync:
    """The process's Sync (made from the settings on first use; not started)."""
    global _sync
    if _sync is None:
        _sync = make_sync()
    return _sync


def make_sync(**overrides: Any) -> Sync:
    from django.conf import settings

    options: dict[str, Any] = {**(getattr(settings, "PYSYNC", None) or {}), **overrides}
    if "database_url" not in options:
        options["database_url"] = database_url(settings.DATABASES["default"])
    url = options.pop("database_url")
    return Sync(url, **options)


def database_url(database: dict[str, Any]) -> str:
    """A ``postgresql://`` URL of a ``DATABASES`` entry (its OPTIONS as URL parameters)."""
    engine = str(database.get("ENGINE", ""))
    if not engine.startswith("django.db.backends.postgresql"):
        raise ValueError(
            f'DATABASES["default"] is {engine or "not set"}, not PostgreSQL: give '
            'PYSYNC = {"database_url": ...}'
        )
    user = quote(str(database.get("USER") or ""), safe="")
    password = quote(str(database.get("PASSWORD") or ""), safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = str(database.get("HOST") or "")
    if host.startswith("/"):  # a socket directory goes in the parameters
        options = {"host": host}
        host = ""
    else:
        options = {}
    port = f":{database['PORT']}" if database.get("PORT") else ""
    name = quote(str(database.get("NAME") or ""), safe="")
    options.update(
        {k: str(v) for k, v in (database.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    )
    query = f"?{urlencode(options)}" if options else ""
    return f"postgresql://{credentials}{host}{port}/{name}{query}"


async def started_sync() -> Sync:
    """The Sync, started in this event loop if it is not yet."""
    global _starting, _sync_loop
    sync = get_sync()
    if sync.started:
        return sync
    if _starting is None:
        _starting = asyncio.Lock()
    async with _starting:
        if not sync.started:
            await sync.start()
            _sync_loop = asyncio.get_running_loop()
    return sync


def background_loop() -> asyncio.AbstractEventLoop:
    """An event loop in a thread of its own, for the engine under WSGI (``runserver``),
    where each request's async view runs in a loop of its own that ends with it."""
    global _background
    with _background_lock:
        if _background is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="pysync", daemon=True).start()
            _background = loop
        return _background


async def stop() -> None:
    """Stop the Sync (a later request starts it again)."""
    if _sync is not None and _sync.started:
        await _sync.stop()


def replace_sync(**overrides: Any) -> None:
    """From sync code (a test case's setup): stop the Sync if it runs, and make the next
    one from the settings as they are now (a test database's name) with ``overrides``."""
    global _sync, _starting
    stop_blocking()
    _sync, _starting = make_sync(**overrides), None


def use(sync: Sync | None) -> Sync | None:
    """Make ``sync`` the process's Sync (None: the next is made from the settings);
    the one it replaces, not stopped (a sandboxed test puts it back after)."""
    global _sync, _starting
    previous, _sync, _starting = _sync, sync, None
    return previous


def serves_in_request_loop() -> bool:
    """Does the Sync serve each request in the request's own event loop (the sandbox,
    whose reads run on the test's thread), not in the engine's?"""
    return bool(getattr(_sync, "serves_in_request_loop", False))


def stop_blocking() -> None:
    """From sync code outside the engine's loop: stop the Sync, in its own loop."""
    loop = _sync_loop
    if _sync is None or not _sync.started or loop is None:
        return
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(stop(), loop).result()
    else:
        loop.run_until_complete(stop())


def asgi(application: ASGIApp) -> ASGIApp:
    """``application`` with an ASGI lifespan that starts the Sync at startup and stops it
    at shutdown: ``application = pysync.django.asgi(get_asgi_application())``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await application(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await started_sync()
                except Exception as exc:  # noqa: BLE001 - the server reports it and exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app
