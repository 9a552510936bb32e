"""What the client raises: ``ClientError`` and, for a server that breaks the protocol or
the client's limits, a subclass naming the problem."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """The server refused the request (a 4xx other than 409), or answered something that is
    not Electric's protocol (then one of the subclasses below, naming the problem).
    ``status`` is the HTTP status (0 for a protocol violation or a limit of the client's),
    ``body`` the decoded JSON error body (or its text)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.body = body


class MalformedResponse(ClientError):
    """A response that is not Electric's protocol: headers missing or not of their format,
    a body that is not a shape log, an HTTP protocol violation."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class ResponseTooLarge(MalformedResponse):
    """A body (or SSE event) over ``Limits.max_response_bytes``, or headers over httpx's
    100 KiB."""


class OffsetWentBack(MalformedResponse):
    """A response whose ``electric-offset`` (or SSE change offset) is before the offset the
    client asked from: following it would replay the log in a loop."""


class ResponseTimeout(ClientError):
    """A response (or SSE event) still incomplete ``Limits.request_timeout`` seconds after
    it started: the server sends, but too slowly to ever finish."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class ServerLoop(ClientError):
    """``Limits.max_loops`` answers in a row got the stream nowhere: 409s (or shape handles
    that change) without an up-to-date in between, or catch-up responses that leave the
    offset where it was."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)
