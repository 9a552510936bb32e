"""``DELETE /v1/shape`` (when enabled): by definition, definition + handle, or handle.

As Electric's ``delete_shape_plug``: 202 with the handle; every client of that handle
then gets 409 must-refetch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from pysync.http import steps
from pysync.http.errors import ShapeAPIError, invalid, unavailable
from pysync.http.responses import READ_METHODS, common
from pysync.http.source import EngineUnavailable
from pysync.shapes.definition import ShapeError

if TYPE_CHECKING:
    from pysync.http.api import ShapeAPI


async def delete_shape(api: ShapeAPI, request: Request) -> Response:
    if not api.allow_delete:
        methods = {"allow": READ_METHODS, "access-control-allow-methods": READ_METHODS}
        raise ShapeAPIError(405, {"message": "DELETE not allowed"}, methods)
    query = dict(request.query_params)
    handle = query.get("handle")
    if not query.get("table"):
        if not handle:
            raise invalid({"handle": ["can't be blank when shape definition is missing"]})
        target = handle
    else:
        query.setdefault("offset", "-1")
        query.pop("handle", None)
        parsed = steps.parse(query)
        assert parsed.definition is not None
        try:
            consumer = await api.engine.find(parsed.definition)
        except ShapeError as exc:
            raise invalid({exc.field: [exc.message]}) from None
        if consumer is None or consumer.gone:
            raise _not_found()
        if handle and consumer.handle != handle:
            raise ShapeAPIError(
                400,
                {
                    "message": (
                        "The specified shape definition and handle do not match. Please ensure the shape "
                        "definition is correct or omit the shape handle from the request to obtain a new one."
                    )
                },
            )
        target = consumer.handle
    # By handle alone too: an HTTP worker need not have served the shape to delete it.
    try:
        found = await api.engine.delete(target)
    except EngineUnavailable as exc:
        raise unavailable(exc.reason, exc.retry_after) from None
    if not found:
        raise _not_found()
    return Response(
        b"",
        status_code=202,
        headers=common({"cache-control": "no-cache", "electric-handle": target}, request),
    )


def _not_found() -> ShapeAPIError:
    return ShapeAPIError(404, {"message": "No existing shape found"})
