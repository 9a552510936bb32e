"""Live HTML: a shape's rows rendered by the app, streamed as Server-Sent Events in the
form htmx's SSE extension swaps (``Sync.live_html``), so a server-rendered list stays
live with no JS build.

    <div hx-ext="sse" sse-connect="/todos/live" sse-swap="message" hx-swap="none"></div>
    <ul id="todos"></ul>

Each event is one transaction's fragments, as out-of-band swaps (htmx applies them
whatever the connecting element's own swap), each in a ``<template>``:

* the rows of a snapshot (the first connection, or after the shape was replaced: a 409):
  ``<template><ul hx-swap-oob="innerHTML:#todos">`` every row ``</ul></template>``
* an insert: ``<template><ul hx-swap-oob="beforeend:#todos">`` the row ``</ul></template>``
* an update: ``<template>`` the row's element with ``hx-swap-oob="true"`` ``</template>``
  (swapped by its id)
* a delete: ``<template><div id="..." hx-swap-oob="delete"></div></template>``

Why templates: the HTML parser drops a ``<tr>`` (``<td>``, ``<tbody>`` ...) outside a
table, so a table row in a ``<div>``, or after one in the same event, came in as bare
text (htmx 2.0.11 in Chromium). A template's content parses any element alone;
htmx swaps the oob elements of every top-level template, in document order (a
transaction's delete and re-insert of one row stay in order). The wrapper is the row's
parent element (``tbody`` for a ``tr``, ``ul`` for an ``li``, ``div`` otherwise): htmx
swaps the wrapper's children in.

``render(row)`` returns the HTML of one row: one element with an ``id`` unique in the
page (the id an update and a delete find it by). The shape is read with
``replica="full"``, so each change has the whole row to render. Every event's id is the
shape's handle and offset: a reconnect (``Last-Event-ID``) resumes after it; an id of
another shape, or none, starts with the snapshot.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from pysync.client.messages import (
    MUST_REFETCH,
    UP_TO_DATE,
    ChangeMessage,
    EventMessage,
    Message,
)
from pysync.client.shape import MessageSource
from pysync.client.tags import TagTracker
from pysync.client.values import Row
from pysync.http.waiters import Waiter
from pysync.log.offset import BEFORE_ALL, LogOffset, OffsetError
from pysync.shapes.definition import ShapeDefinition

log = logging.getLogger("pysync")

Render = Callable[[Row], str]
Source = Callable[[LogOffset, str | None], MessageSource]
"""A message stream of the shape from an offset of a handle (BEFORE_ALL, None: all)."""
Reshaped = Callable[[], Awaitable[Source]]

_FIRST_TAG = re.compile(r"\s*<([A-Za-z][A-Za-z0-9-]*)")
_LINE_END = re.compile(r"\r\n|\r|\n")
_PARENT = {
    "tr": "tbody",
    "td": "tr",
    "th": "tr",
    "thead": "table",
    "tbody": "table",
    "tfoot": "table",
    "caption": "table",
    "colgroup": "table",
    "col": "colgroup",
    "li": "ul",
}
"""The element a row's tag parses in (a wrapper whose children htmx swaps in)."""
_ID = re.compile(r"""\sid\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""")


async def shape_changed(waiter: Waiter) -> ShapeDefinition:
    """Waits for an interrupt after which the shape's function (``waiter.recheck``)
    gives another shape; that shape (``waiter`` then waits on it)."""
    assert waiter.recheck is not None
    while True:
        await waiter.released
        try:
            definition = await waiter.recheck()
        except Exception:  # noqa: BLE001 - the stream goes on with the shape it has
            log.warning("a live HTML shape function failed after an interrupt", exc_info=True)
            definition = waiter.definition
        waiter.rearm()
        if definition != waiter.definition:
            waiter.definition = definition
            return definition


def resume_point(last_event_id: str | None) -> tuple[LogOffset, str | None]:
    """Where a reconnect resumes: (offset, handle) of ``Last-Event-ID``, or the start
    (client text: anything that is not one of our ids starts over)."""
    if not last_event_id or "|" not in last_event_id:
        return BEFORE_ALL, None
    handle, _, offset = last_event_id.partition("|")
    try:
        return LogOffset.parse(offset), handle
    except OffsetError:
        return BEFORE_ALL, None


async def html_events(
    source: Source,
    render: Render,
    target: str,
    last_event_id: str | None,
    reshaped: Reshaped | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body: an event per transaction (see the module's docstring).
    ``reshaped``: for a shape a function defines, waits until an interrupt changed it
    and returns its source; the stream then starts over with the new shape's rows."""
    offset, handle = resume_point(last_event_id)
    fragments = Fragments(render, target)
    change = asyncio.ensure_future(reshaped()) if reshaped is not None else None
    try:
        while True:
            stream = source(offset, handle)
            fragments.start(replacing=offset == BEFORE_ALL)
            async for message in stream if change is None else _until(stream, change):
                if isinstance(message, EventMessage) and fragments.partial:
                    # Resumed without the rows and their tags, a subquery's move names
                    # rows this stream does not know: start over from the snapshot.
                    break
                event = fragments.take(message)
                if event is not None:
                    yield _sse(f"{stream.handle}|{stream.offset}", event)
            offset, handle = BEFORE_ALL, None
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            if change is not None and change.done() and reshaped is not None:
                source, change = change.result(), asyncio.ensure_future(reshaped())
    finally:
        if change is not None:
            change.cancel()


async def _until(stream: MessageSource, change: asyncio.Future[Source]) -> AsyncIterator[Message]:
    """``stream``'s messages until ``change`` is done (the shape changed)."""
    messages = aiter(stream)
    while not change.done():
        step = asyncio.ensure_future(anext(messages))
        await asyncio.wait((step, change), return_when=asyncio.FIRST_COMPLETED)
        if not step.done():
            step.cancel()
            await asyncio.wait((step,))  # the stream is closed next: let it stop first
            return
        try:
            yield step.result()
        except StopAsyncIteration:
            return


class Fragments:
    """The HTML of one transaction's changes, gathered until its up-to-date."""

    def __init__(self, render: Render, target: str) -> None:
        self.render = render
        self.target = html.escape(target, quote=True)
        self.replacing = False
        self.partial = False
        """Resumed from an offset: the rows before it are not in ``rows``."""
        self.rows: dict[str, Row] = {}
        """The rows streamed, by key, in order (a move-out deletes its rows' elements)."""
        self.tags = TagTracker()
        self.parts: list[str] = []

    def start(self, *, replacing: bool) -> None:
        self.replacing = replacing
        self.partial = not replacing
        self.rows = {}
        self.tags.reset()
        self.parts = []

    def take(self, message: Message) -> str | None:
        """The event for ``message``, when it ends a transaction (up-to-date)."""
        if isinstance(message, ChangeMessage):
            self._apply(message)
            if not self.replacing:
                self.parts.append(self._fragment(message))
            return None
        if isinstance(message, EventMessage):
            self._move(message)
            return None
        if message.control == MUST_REFETCH:
            self.start(replacing=True)
            return None
        return self._up_to_date() if message.control == UP_TO_DATE else None

    def _move(self, event: EventMessage) -> None:
        if event.event == "move-in":
            self.tags.move_in(event.patterns)  # its rows come as inserts
        elif event.event == "move-out":
            for key in self.tags.move_out(event.patterns):
                row = self.rows.pop(key, None)
                if row is not None and not self.replacing:
                    self.parts.append(self._removal(row))

    def _up_to_date(self) -> str | None:
        if self.replacing:
            rows = [self._html(row) for row in self.rows.values()]
            event = _wrapped("innerHTML", self.target, rows[0] if rows else "", "".join(rows))
            self.replacing = False
            return event
        if not self.parts:
            return None
        event, self.parts = "".join(self.parts), []
        return event

    def _apply(self, message: ChangeMessage) -> None:
        operation = message.headers.operation
        self.tags.change(message)
        if operation == "delete":
            self.rows.pop(message.key, None)
        elif operation == "update" and message.key in self.rows:
            self.rows[message.key] = {**self.rows[message.key], **message.value}
        else:
            self.rows[message.key] = message.value

    def _fragment(self, message: ChangeMessage) -> str:
        operation = message.headers.operation
        element = self._html(message.value)
        if operation == "insert":
            return _wrapped("beforeend", self.target, element, element)
        if operation == "update":
            first = _FIRST_TAG.match(element)
            assert first is not None  # _html checked it
            marked = f'{element[: first.end()]} hx-swap-oob="true"{element[first.end() :]}'
            return f"<template>{marked}</template>"
        return self._removal(message.value)

    def _removal(self, row: Row) -> str:
        element_id = html.escape(_element_id(self._html(row)), quote=True)
        return f'<template><div id="{element_id}" hx-swap-oob="delete"></div></template>'

    def _html(self, row: Row) -> str:
        element = self.render(row)
        if not isinstance(element, str) or _FIRST_TAG.match(element) is None:
            raise TypeError(
                f"render must return the HTML of one element (with an id), not {element!r:.80}"
            )
        _element_id(element)
        return element


def _tag(element: str) -> str:
    first = _FIRST_TAG.match(element)
    assert first is not None  # _html checked it
    return first.group(1).lower()


def _wrapped(swap: str, target: str, first_row: str, rows: str) -> str:
    """``rows`` swapped into ``target`` (``swap``: innerHTML, beforeend), in the element
    they parse in (the parent of ``first_row``'s tag)."""
    parent = _PARENT.get(_tag(first_row), "div") if first_row else "div"
    return f'<template><{parent} hx-swap-oob="{swap}:{target}">{rows}</{parent}></template>'


def _element_id(element: str) -> str:
    """The id of the first element of ``element``; ValueError naming what to fix."""
    first = _FIRST_TAG.match(element)
    end = element.find(">")
    match = _ID.search(element, 0, end) if first is not None and end > 0 else None
    if match is None:
        raise ValueError(
            "render must return one element with an id attribute (updates and deletes "
            f"find it by its id), not {element:.80}"
        )
    return html.unescape(next(group for group in match.groups() if group is not None))


def _sse(event_id: str, data: str) -> bytes:
    # Any of CR, LF, CRLF ends an SSE line: a row's text with a lone CR split as LF did
    # would cut the rest of its line off (the browser reads it as a field name).
    lines = "".join(f"data: {line}\n" for line in _LINE_END.split(data))
    return f"id: {event_id}\nevent: message\n{lines}\n".encode()
