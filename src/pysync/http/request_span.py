"""The server span of a shape request (``pysync.tracing``), with Electric's span names
and attributes (``Plug_shape_get``, ``shape.handle``, ``shape_req.is_live`` ...) so that
Electric's trace queries work unchanged; each body message is sent in a child span
(``shape_get.plug.stream_chunk``), and a new shape's snapshot is one too (the engine's).

The request's ``secret`` and ``params`` are never recorded (nor the query string, which
holds them); its WHERE clause is, as Electric records it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.types import Message, Scope, Send

from pysync.http.errors import NO_CHANGE
from pysync.tracing import AttributeValue, Tracer

SHAPE_SPAN = "Plug_shape_get"
DELETE_SPAN = "Plug_shape_delete"
CHUNK_SPAN = "shape_get.plug.stream_chunk"

_FROM_QUERY = (
    ("shape.root_table", "table"),
    ("shape.where", "where"),
    ("shape.columns", "columns"),
    ("shape.replica", "replica"),
    ("shape.handle", "handle"),
    ("shape_req.offset", "offset"),
)


def request_attributes(scope: Scope) -> dict[str, AttributeValue]:
    """What the request says, before it is served."""
    query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    attributes: dict[str, AttributeValue] = {
        "http.request.method": scope["method"],
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
    }
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    for name, value in scope["headers"]:
        if name == b"user-agent":
            attributes["user_agent.original"] = value.decode("latin-1")
    for attribute, param in _FROM_QUERY:
        values = query.get(param)
        if values:
            attributes[attribute] = values[-1]  # as Starlette reads it: the last one
    live = query.get("live") or []
    attributes["shape_req.is_live"] = bool(live) and live[-1] != "false"
    return attributes


def response_attributes(
    status: int, headers: list[tuple[bytes, bytes]]
) -> dict[str, AttributeValue]:
    """What the response's head says."""
    attributes: dict[str, AttributeValue] = {
        "http.response.status_code": status,
        "shape_req.is_cached": status == 304,
        "shape_req.is_error": status >= 400,
        "shape_req.is_up_to_date": False,
        "shape_req.is_empty_response": NO_CHANGE in headers,
    }
    for name, value in headers:
        if name == b"electric-handle":
            attributes["shape.handle"] = value.decode("latin-1")
        elif name == b"electric-offset":
            attributes["shape_req.response_offset"] = value.decode("latin-1")
        elif name == b"electric-up-to-date":
            attributes["shape_req.is_up_to_date"] = True
    return attributes


async def traced(
    tracer: Tracer,
    scope: Scope,
    send: Send,
    respond: Callable[[Send], Awaitable[None]],
) -> None:
    """``respond(send)`` in the request's server span (a child of the caller's when
    the request carries a W3C ``traceparent``)."""
    name = DELETE_SPAN if scope["method"] == "DELETE" else SHAPE_SPAN
    facts: dict[str, AttributeValue] = {}
    size = 0

    async def sending(message: Message) -> None:
        nonlocal size
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            size += len(body)
            with tracer.span(CHUNK_SPAN, {"chunk_size": len(body)}):
                await send(message)
            return
        if message["type"] == "http.response.start":
            facts.update(response_attributes(message["status"], list(message.get("headers", ()))))
        await send(message)

    with tracer.server_span(name, scope["headers"], request_attributes(scope)) as span:
        try:
            await respond(sending)
        finally:
            facts["http.response.body.size"] = size
            span.set_attributes(facts)
