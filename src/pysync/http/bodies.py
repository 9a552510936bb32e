"""Reading a request's body within a limit: the shape API's POST, the ``tables=`` mount,
http mode's pass-through and the writer's endpoint all read bodies this way."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from pysync.http.errors import ShapeAPIError

MAX_BODY = 8 * 1024 * 1024
"""As Plug's default read limit in Electric: larger bodies are a 413."""


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request's body; a 413 as soon as it is known to be over ``limit``.

    Not ``request.body()`` and a check of its length: that read the whole body into
    memory first, so a client could make the server hold any number of bytes (a few
    requests of some hundred MB each, and it runs out of memory). Here a declared
    content-length over the limit is refused before anything is read, and a body
    without one (chunked) once more than ``limit`` bytes came."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ShapeAPIError(413, {"error": "Request body too large"})
    pieces: list[bytes] = []
    size = 0
    try:
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise ShapeAPIError(413, {"error": "Request body too large"})
            pieces.append(piece)
    except ClientDisconnect:
        # The client went before its whole body came: no error of the server's (it
        # reached ShapeAPI.handle as one: an ERROR and a traceback in the log, as often
        # as any client liked). The 400 is for the record; no one reads it.
        raise ShapeAPIError(
            400, {"error": "Client disconnected before the request body was complete"}
        ) from None
    body = request._body = b"".join(pieces)  # as request.body() keeps it: read again later
    return body
