"""``pysync.django.live_html``: a QuerySet's rows as live HTML from an async Django view,
the stream ``Sync.live_html`` serves (Server-Sent Events of htmx out-of-band swaps: see
pysync/app/live_html.py), each row rendered by a function or a template.

    async def todos_live(request):             # the view's auth, then the stream
        return await pysync.django.live_html(
            request,
            lambda: Todo.objects.filter(owner=request.user.username),
            template="todos/row.html",           # {{ row.id }}, {{ row.title }} ...
            target="#todos",
        )

Under ASGI (uvicorn, daphne) the stream is the serving loop's; under WSGI (``runserver``,
for development) the engine's thread produces it and the server's thread sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.template.loader import render_to_string
from starlette.requests import Request

from pysync.client.values import Row
from pysync.django.engine import started_sync
from pysync.django.views import (
    ShapeSource,
    _in_engine_loop,
    _is_function,
    _no_body,
    _per_request,
    definition_of,
    to_django,
)


async def live_html(
    request: HttpRequest,
    shape: ShapeSource,
    /,
    *,
    target: str,
    render: Callable[[Row], str] | None = None,
    template: str | None = None,
) -> HttpResponseBase:
    """The rows of ``shape`` (a QuerySet, or a function of the request returning one, as
    ``render`` takes it) as live HTML swapped into ``target`` (a CSS selector). Each
    row is one element with an id unique in the page: ``render(row)``'s HTML, or the
    template ``template`` rendered with ``{"row": row}``. ``row`` is the shape's row, a
    dict of column names (``todo_list_id``) to values. A reconnect resumes after the
    last event the browser saw (``Last-Event-ID``)."""
    if (render is None) == (template is None):
        raise TypeError(
            "live_html renders each row with render= (a function of the row) or "
            "template= (a template name, rendered with {'row': row}): give one of them"
        )
    source = _per_request(shape, request) if _is_function(shape) else definition_of(shape)
    row_html = render if render is not None else _template_renderer(str(template))

    async def respond(scope: dict[str, Any], whole: bool) -> HttpResponseBase:
        sync = await started_sync()
        response = await sync.live_html(
            Request(scope, _no_body), source, render=row_html, target=target
        )
        return await to_django(response, scope, whole=whole)

    return await _in_engine_loop(request, respond)


def _template_renderer(name: str) -> Callable[[Row], str]:
    def render(row: dict[str, Any]) -> str:
        return str(render_to_string(name, {"row": row}))

    return render
