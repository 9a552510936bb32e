"""What the client raises."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """The server refused the request (a 4xx other than 409), or answered something that is
    not Electric's protocol. ``status`` is the HTTP status (0 for a protocol violation),
    ``body`` the decoded JSON error body (or its text)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.body = body
