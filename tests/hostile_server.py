"""A broken HTTP server for the client's tests: raw asyncio on 127.0.0.1, so it can send
what no framework would (300 kB headers, a body a byte at a time, garbage). Each request
is answered by ``answer(n, query, writer)`` (``n`` counts from 1); the connection closes
after each answer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

Query = dict[str, str]
Answer = Callable[[int, Query, asyncio.StreamWriter], Awaitable[None]]

UP_TO_DATE = b'[{"headers":{"control":"up-to-date"}}]'
SCHEMA = '{"id":{"type":"int4"}}'


def head(status: int = 200, headers: dict[str, str] | None = None, length: int | None = 0) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", "connection: close"]
    if length is not None:
        lines.append(f"content-length: {length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def shape_headers(handle: str = "h1", offset: str = "0_0", **more: str) -> dict[str, str]:
    return {
        "electric-handle": handle,
        "electric-offset": offset,
        "electric-schema": SCHEMA,
        "electric-cursor": "1",
        "content-type": "application/json",
        **more,
    }


def response(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    return head(status, headers, len(body)) + body


class Hostile:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[float, Query]] = []
        self.url = ""
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        return len(self.requests)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        times = [t for t, _ in self.requests]
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Hostile]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            for task in self._tasks:  # answers still trickling or holding
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            target = request.split(b" ", 2)[1].decode()
            query = dict(parse_qsl(urlsplit(target).query))
            self.requests.append((time.monotonic(), query))
            await self.answer(len(self.requests), query, writer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test ended: nothing more to answer
        finally:
            writer.close()
            self._tasks.discard(task)
