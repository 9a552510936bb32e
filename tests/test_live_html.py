"""Live HTML (``Sync.live_html``): a shape's rows rendered by the app, streamed as
Server-Sent Events of htmx out-of-band swaps, in embedded and http mode, against the
real Postgres: the snapshot replaces the list, inserts append, updates swap the row's
element, deletes remove it; a reconnect with ``Last-Event-ID`` resumes after it; a
409 (TRUNCATE) replaces the list again. Each swap is in a ``<template>`` (a table row
parses there alone), wrapped in its row's parent element; examples/todos/tests drives
htmx itself over them in Chromium."""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import pysync
from asgi_server import serving
from test_inproc_views import running_sync

WAIT = 20.0


def render(row: dict[str, Any]) -> str:
    return f'<li id="item-{row["id"]}">{html.escape(row["label"] or "")}</li>'


def snapshot(rows: str, parent: str = "ul") -> str:
    return f'<template><{parent} hx-swap-oob="innerHTML:#items">{rows}</{parent}></template>'


def inserted(row: str, parent: str = "ul") -> str:
    return f'<template><{parent} hx-swap-oob="beforeend:#items">{row}</{parent}></template>'


def updated(row: str) -> str:
    tag, rest = row.split(" ", 1)
    return f'<template>{tag} hx-swap-oob="true" {rest}</template>'


def deleted(element_id: str) -> str:
    return f'<template><div id="{element_id}" hx-swap-oob="delete"></div></template>'


def app_of(sync: pysync.Sync, row: Any = render) -> Starlette:
    async def live(request: Request) -> Response:
        return await sync.live_html(request, "items", render=row, target="#items")

    return Starlette(routes=[Route("/live", live)])


class Events:
    """The SSE events of one connection: (id, data)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> tuple[str, str]:
        event_id, data = "", list[str]()
        while True:
            line = await asyncio.wait_for(self.lines.__anext__(), WAIT)
            if not line:
                if data:
                    return event_id, "\n".join(data)
                continue
            field, _, value = line.partition(": ")
            if field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


async def connect(
    http: httpx.AsyncClient, stack: Any, last_event_id: str | None = None
) -> tuple[httpx.Response, Events]:
    headers = {"last-event-id": last_event_id} if last_event_id else {}
    response = await stack.enter_async_context(http.stream("GET", "/live", headers=headers))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "private, no-store"  # a user's own rows
    return response, Events(response)


@pytest.fixture
async def http_and_conn(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, psycopg.Connection[Any]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two & more')")
        async with (
            running_sync(request.param, database_url, tmp_path) as sync,
            serving(app_of(sync)) as base,
            httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
        ):
            yield http, conn


@pytest.mark.parametrize("http_and_conn", ["embedded", "http"], indirect=True)
async def test_rows_stream_as_htmx_swaps_and_resume_after_the_last_event(
    http_and_conn: tuple[httpx.AsyncClient, psycopg.Connection[Any]],
) -> None:
    http, conn = http_and_conn
    async with AsyncExitStack() as stack:
        _, events = await connect(http, stack)
        first_id, rows = await events.next()
        assert rows == snapshot('<li id="item-1">one</li><li id="item-2">two &amp; more</li>')
        conn.execute("INSERT INTO items VALUES (3, 'three')")
        assert (await events.next())[1] == inserted('<li id="item-3">three</li>')
        conn.execute("UPDATE items SET label = 'uno' WHERE id = 1")
        assert (await events.next())[1] == updated('<li id="item-1">uno</li>')
        conn.execute("DELETE FROM items WHERE id = 2")
        last_id, removal = await events.next()
        assert removal == deleted("item-2")
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (4, 'four')")
            conn.execute("UPDATE items SET label = 'tres' WHERE id = 3")
        _, both = await events.next()
        assert both == inserted('<li id="item-4">four</li>') + updated('<li id="item-3">tres</li>')
        assert first_id.split("|")[0] == last_id.split("|")[0]
    async with AsyncExitStack() as stack:
        # A reconnect resumes after its last event: only what came since.
        _, events = await connect(http, stack, last_event_id=last_id)
        _, missed = await events.next()
        assert missed == both
        # A TRUNCATE replaces the shape (a 409): the whole list again.
        conn.execute("TRUNCATE items")
        conn.execute("INSERT INTO items VALUES (9, 'nine')")
        new_id, replaced = await events.next()
        while replaced == snapshot("", "div"):
            new_id, replaced = await events.next()  # the empty table, then the insert
        nine = '<li id="item-9">nine</li>'
        assert replaced in (snapshot(nine), inserted(nine))
        assert new_id.split("|")[0] != last_id.split("|")[0]
    async with AsyncExitStack() as stack:
        # An id that is not one of ours (or of a shape gone) starts with the rows.
        for stale in ("garbage", last_id):
            _, events = await connect(http, stack, last_event_id=stale)
            assert (await events.next())[1] == snapshot('<li id="item-9">nine</li>')


def create_projects(conn: psycopg.Connection[Any]) -> None:
    """Items of projects, and the projects the user is a member of (project 1)."""
    conn.execute(
        "CREATE TABLE members (project int PRIMARY KEY);"
        "CREATE TABLE items (id int PRIMARY KEY, label text, project int);"
        "INSERT INTO members VALUES (1);"
        "INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2)"
    )


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_subquery_moves_insert_and_delete_elements(
    mode: str, database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_projects(conn)
        async with running_sync(mode, database_url, tmp_path) as sync:

            async def live(request: Request) -> Response:
                return await sync.live_html(
                    request,
                    "items",
                    where="project IN (SELECT project FROM members)",
                    render=render,
                    target="#items",
                )

            app = Starlette(routes=[Route("/live", live)])
            async with (
                serving(app) as base,
                httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
                AsyncExitStack() as stack,
            ):
                _, events = await connect(http, stack)
                assert (await events.next())[1] == snapshot('<li id="item-1">a</li>')
                conn.execute("INSERT INTO members VALUES (2)")  # item 2 moves in
                assert (await events.next())[1] == inserted('<li id="item-2">b</li>')
                conn.execute("DELETE FROM members WHERE project = 1")  # item 1 moves out
                last_id, moved_out = await events.next()
                assert moved_out == deleted("item-1")
                # Resumed without the rows' tags, a move starts over from the rows.
                _, events = await connect(http, stack, last_event_id=last_id)
                conn.execute("DELETE FROM members WHERE project = 2")  # item 2 moves out
                assert (await events.next())[1] == snapshot("", "div")


def test_render_must_give_one_element_with_an_id() -> None:
    from pysync.app.live_html import Fragments, resume_point
    from pysync.client.messages import ChangeMessage, Headers
    from pysync.log.offset import BEFORE_ALL

    insert = ChangeMessage('"public"."items"/"1"', {"id": 1}, Headers("insert"))
    for bad, problem in (("<li>x</li>", "with an id attribute"), ("text", "one element")):
        fragments = Fragments(lambda row, bad=bad: bad, "#items")  # type: ignore[misc]
        fragments.start(replacing=False)
        with pytest.raises((ValueError, TypeError), match=problem):
            fragments.take(insert)
    quoted = Fragments(lambda row: "<li data-x='1' id='a&amp;b'>x</li>", '#a"b')
    quoted.start(replacing=False)
    delete = ChangeMessage('"public"."items"/"1"', {"id": 1}, Headers("delete"))
    quoted.take(delete)
    assert quoted.parts == [deleted("a&amp;b")]
    assert resume_point("h|12_3")[1] == "h"
    assert resume_point("h|nope") == resume_point(None) == (BEFORE_ALL, None)


async def test_table_rows_parse_in_their_table_and_a_carriage_return_stays_in_its_event(
    database_url: str, tmp_path: Path
) -> None:
    """A ``<tr>`` row outside a table is dropped by the HTML parser (htmx parsed the old
    ``<div>`` wrapper's row as text): each swap is a template holding a ``<tbody>``. A CR
    in a row's text ends an SSE line as LF does: it must start a new ``data:`` line."""

    def table_row(row: dict[str, Any]) -> str:
        return f'<tr id="row-{row["id"]}"><td>{html.escape(row["label"] or "")}</td></tr>'

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO items VALUES (1, 'one')")
        async with (
            running_sync("embedded", database_url, tmp_path) as sync,
            serving(app_of(sync, table_row)) as base,
            httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
            AsyncExitStack() as stack,
        ):
            _, events = await connect(http, stack)
            assert (await events.next())[1] == snapshot(
                table_row({"id": 1, "label": "one"}), "tbody"
            )
            conn.execute("INSERT INTO items VALUES (2, E'a\\rb')")
            assert (await events.next())[1] == inserted(
                '<tr id="row-2"><td>a\nb</td></tr>', "tbody"
            )
            with conn.transaction():
                conn.execute("DELETE FROM items WHERE id = 2")
                conn.execute("UPDATE items SET label = 'uno' WHERE id = 1")
            assert (await events.next())[1] == deleted("row-2") + updated(
                '<tr id="row-1"><td>uno</td></tr>'
            )


@pytest.mark.parametrize("mode", ["embedded", "http"])
async def test_an_interrupt_reruns_the_shape_function_and_a_changed_shape_sends_its_rows(
    mode: str, database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_projects(conn)

        def my_items() -> pysync.ShapeDefinition:
            # Read per request (and again after an interrupt), as an app reads who sees what.
            projects = [row[0] for row in conn.execute("SELECT project FROM members ORDER BY 1")]
            return pysync.shape("items", where=f"project IN ({','.join(map(str, projects))})")

        async with running_sync(mode, database_url, tmp_path) as sync:

            async def live(request: Request) -> Response:
                return await sync.live_html(request, my_items, render=render, target="#items")

            async with (
                serving(Starlette(routes=[Route("/live", live)])) as base,
                httpx.AsyncClient(base_url=base, timeout=WAIT) as http,
                AsyncExitStack() as stack,
            ):
                _, events = await connect(http, stack)
                first_id, rows = await events.next()
                assert rows == snapshot('<li id="item-1">a</li>')
                # The same shape after the interrupt: the stream goes on, no rows resent.
                assert sync.interrupt("items") == 1
                conn.execute("INSERT INTO items VALUES (3, 'c', 1)")
                assert (await events.next())[1] == inserted('<li id="item-3">c</li>')
                # Another shape: its rows replace the list, and it streams on.
                conn.execute("INSERT INTO members VALUES (2)")
                assert sync.interrupt("items") == 1
                new_id, rows = await events.next()
                assert rows == snapshot(
                    '<li id="item-1">a</li><li id="item-2">b</li><li id="item-3">c</li>'
                )
                assert new_id.split("|")[0] != first_id.split("|")[0]
                conn.execute("UPDATE items SET label = 'bb' WHERE id = 2")
                assert (await events.next())[1] == updated('<li id="item-2">bb</li>')
                assert sync.interrupt("other_table") == 0
