"""``pysync.django.live_html`` from an async Django view under a real uvicorn, against the
real Postgres: the view's auth and per-request QuerySet, rows rendered by a template,
the htmx swaps of Sync.live_html (snapshot, insert, update, delete), a reconnect resumed
from ``Last-Event-ID``; and the refusals named (no renderer, or two)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async

from asgi_server import serving
from test_django_views import django_url, seed
from test_live_html import WAIT, Events, deleted, inserted, snapshot, updated

__all__ = ["django_url"]  # the module's Django database, as test_django_views sets it up


@pytest_asyncio.fixture(loop_scope="session")
async def live(django_url: str) -> AsyncIterator[httpx.AsyncClient]:
    from django.core.asgi import get_asgi_application

    from pysync.django import engine

    await sync_to_async(seed)()
    try:
        async with (
            serving(get_asgi_application()) as base,
            httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
        ):
            yield http
    finally:
        await engine.stop()


async def stream(http: httpx.AsyncClient, stack: AsyncExitStack, **headers: str) -> Events:
    response = await stack.enter_async_context(
        http.stream("GET", "/live/items/", headers={"x-user": "ann", **headers})
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return Events(response)


async def test_a_django_view_streams_a_querysets_rows_as_htmx_swaps(
    live: httpx.AsyncClient,
) -> None:
    from djapp.models import Item, TodoList

    assert (await live.get("/live/items/")).status_code == 401  # the view's own auth
    first = await sync_to_async(TodoList.objects.get)(title="a")
    second = await sync_to_async(TodoList.objects.get)(title="b")
    one = await sync_to_async(Item.objects.get)(name="one")
    async with AsyncExitStack() as stack:
        events = await stream(live, stack)
        assert (await events.next())[1] == snapshot(f'<li id="item-{one.id}">one</li>')
        new = await sync_to_async(Item.objects.create)(name="a & b", todo_list=first)
        assert (await events.next())[1] == inserted(f'<li id="item-{new.id}">a &amp; b</li>')
        # Not in ann's lists (the view's QuerySet): no event; then an update of hers.
        await sync_to_async(Item.objects.create)(name="not hers", todo_list=second)
        await sync_to_async(Item.objects.filter(id=one.id).update)(name="uno")
        last_id, event = await events.next()
        assert event == updated(f'<li id="item-{one.id}">uno</li>')
    await sync_to_async(Item.objects.filter(id=new.id).delete)()
    async with AsyncExitStack() as stack:
        # The browser's reconnect: only what it missed.
        events = await stream(live, stack, **{"last-event-id": last_id})
        assert (await events.next())[1] == deleted(f"item-{new.id}")


async def test_live_html_names_what_to_fix(django_url: str) -> None:
    from django.http import HttpRequest

    import pysync.django

    request = HttpRequest()  # as under WSGI: no ASGI scope
    with pytest.raises(TypeError, match="render= .* or template="):
        await pysync.django.live_html(request, "items", target="#items")
    with pytest.raises(TypeError, match="give one of them"):
        await pysync.django.live_html(
            request, "items", target="#items", render=str, template="row.html"
        )
