"""Errors of the shape API: raised anywhere while handling a request, rendered once
(``responses.error_response``) with Electric's status, body and headers."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import psycopg

from pysync.log.storage import StorageError
from pysync.postgres.publication import LockTimeout, NotPublished, PublicationError
from pysync.postgres.sqlstate import error_class
from pysync.shapes.subqueries.manager import TooManyRows

log = logging.getLogger(__name__)


class ShapeAPIError(Exception):
    """An error response: ``status``, a JSON ``body``, extra ``headers``.

    ``bare``: sent without CORS or content-type headers (Electric's 401).
    """

    def __init__(
        self,
        status: int,
        body: Mapping[str, Any] | bytes,
        headers: Mapping[str, str] | None = None,
        *,
        bare: bool = False,
    ) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.bare = bare


class MustRefetch(ShapeAPIError):
    """409: the client must drop its copy and start again from ``handle`` (if known).

    ``offset``, ``live`` and ``sse`` describe the request: the 409 is cached and tagged
    after them."""

    def __init__(
        self, handle: str | None, offset: object = None, live: bool = False, sse: bool = False
    ) -> None:
        super().__init__(409, b'[{"headers":{"control":"must-refetch"}}]')
        self.handle = handle
        self.offset = offset
        self.live = live
        self.sse = sse


def invalid(errors: Mapping[str, Any]) -> ShapeAPIError:
    """400 with Electric's ``{"message": "Invalid request", "errors": {...}}``."""
    return ShapeAPIError(400, {"message": "Invalid request", "errors": dict(errors)})


KNOWN_ERROR = (b"electric-internal-known-error", b"true")
"""The raw header of an error Electric counts as known (``known_error`` in its metrics)."""


NO_CHANGE = (b"electric-has-data", b"false")
"""The raw header of a response without changes (Electric's ``empty`` in its metrics)."""


def unavailable(
    message: str, retry_after: int | str, *, known: bool = False, **body: Any
) -> ShapeAPIError:
    """503: the client retries after ``retry_after`` seconds (the TS client backs off)."""
    headers = {"retry-after": str(retry_after)}
    if known:
        headers["electric-internal-known-error"] = "true"
    return ShapeAPIError(503, {**body, "message": message}, headers)


def too_many(kind: str, limit: int) -> ShapeAPIError:
    return unavailable(
        f"Concurrent {kind} request limit exceeded (limit: {limit}), please retry",
        random.randint(5, 10),
        known=True,
        code="concurrent_request_limit_exceeded",
    )


def clause_fails(exc: psycopg.Error) -> str:
    """A clause Postgres failed on for some row, said without the row's value."""
    return f"the clause fails on the table's rows: {error_class(exc)}"


LOG_CUT = unavailable(
    "the shape's log is being repaired after a storage failure; retry", 1, known=True
)
"""A read of log bytes a failed sync cut off (a worker whose index has not heard yet)."""

UNAUTHORIZED = ShapeAPIError(401, {"message": "Unauthorized - Invalid API secret"}, bare=True)


def snapshot_error(exc: BaseException) -> ShapeAPIError:
    """What a client sees of a snapshot that failed (the operator's details are logged)."""
    if isinstance(exc, ShapeAPIError):
        return exc
    if isinstance(exc, StorageError):
        return unavailable(f"pysync cannot store shapes right now ({exc.reason}); retry", 5)
    if isinstance(exc, TooManyRows):
        return unavailable(str(exc), 10, known=True)
    if isinstance(exc, LockTimeout):
        return unavailable(str(exc), 5, known=True)
    if isinstance(exc, NotPublished):
        return unavailable(exc.message, 10, known=True)  # Electric's, with no SQL
    if isinstance(exc, PublicationError):
        return unavailable(
            "pysync is not allowed to replicate this table; the server log says what to run",
            10,
            known=True,
        )
    if isinstance(exc, psycopg.errors.DataError):
        # Postgres refused a value the clause computes (division by zero, overflow, a
        # text that is not a number...): the clause is the client's. Its class only:
        # the message quotes the value, maybe of a column the client may not read.
        return invalid({"where": [clause_fails(exc)]})
    if isinstance(exc, psycopg.OperationalError):
        return unavailable(
            "Cannot connect to the database to take the snapshot. Please retry.", 10, known=True
        )
    if isinstance(exc, psycopg.Error):
        return unavailable(
            f"Unable to create the shape's snapshot: {error_class(exc)}", 10, known=True
        )
    log.error("snapshot failed unexpectedly", exc_info=exc)
    return ShapeAPIError(500, {"message": "Unexpected error while creating snapshot"})
