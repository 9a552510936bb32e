"""A small HTTP/1.1 client over asyncio streams: one keep-alive connection, GET only.

The simulated subscribers share two cores with the server, Postgres and pgbench; a
general client (httpx) costs several times more CPU per response (benchmarks/latency.py),
which would be taken from the server under test. Bodies: Content-Length, chunked, or
until close; ``stream`` yields a body as it arrives (SSE).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

_LIMIT = 1 << 24
"""Longest head line or chunk-size line read at once (response headers can be long)."""


class HttpError(Exception):
    """The connection failed or the server broke the protocol."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Endpoint:
    """Where a server is: host, port, TLS, and the path prefix of its URL."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default = (self.port == 443) if self.tls else (self.port == 80)
        self.host_header = self.host if default else f"{self.host}:{self.port}"


class Connection:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            context = ssl.create_default_context() if self.endpoint.tls else None
            try:
                self.reader, self.writer = await asyncio.open_connection(
                    self.endpoint.host, self.endpoint.port, ssl=context, limit=_LIMIT
                )
            except OSError as exc:
                raise HttpError(f"cannot connect to {self.endpoint.host_header}: {exc}") from exc
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def _send(
        self, writer: asyncio.StreamWriter, path: str, headers: dict[str, str] | None
    ) -> None:
        lines = [f"GET {self.endpoint.prefix}{path} HTTP/1.1", f"Host: {self.endpoint.host_header}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _head(self, path: str, headers: dict[str, str] | None) -> tuple[int, dict[str, str]]:
        # A kept-alive connection the server closed meanwhile fails at once: retry once on
        # a new one (GET is idempotent).
        for attempt in (1, 2):
            reader, writer = await self._open()
            try:
                self._send(writer, path, headers)
                head = await reader.readuntil(b"\r\n\r\n")
                break
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                self.close()
                if attempt == 2:
                    raise HttpError(f"connection lost: {exc!r}") from exc
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise HttpError(f"not an HTTP response: {lines[0][:80]!r}") from exc
        parsed: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                parsed[name.strip().lower()] = value.strip()
        return status, parsed

    async def _chunks(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        assert self.reader is not None
        reader = self.reader
        try:
            length = headers.get("content-length")
            if length is not None:
                if int(length):
                    yield await reader.readexactly(int(length))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            else:
                while data := await reader.read(1 << 16):
                    yield data
                self.close()
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as exc:
            self.close()
            raise HttpError(f"body cut short: {exc!r}") from exc
        if headers.get("connection", "").lower() == "close":
            self.close()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        status, parsed = await self._head(path, headers)
        body = b"".join([chunk async for chunk in self._chunks(parsed)])
        return Response(status, parsed, body)

    async def stream(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
        """The status and headers, and the body as an iterator of pieces as they arrive.
        The body must be read to its end before the next request."""
        status, parsed = await self._head(path, headers)
        return status, parsed, self._chunks(parsed)
