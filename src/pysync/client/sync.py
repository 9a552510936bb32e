"""A blocking wrapper for scripts: the async client on an event loop in a daemon thread.

with pysync.BlockingClient("http://127.0.0.1:3000") as client:
    for message in client.stream("todos", live=False):
        print(message)
    shape = client.shape("todos")
    shape.wait_for_txid(txid, timeout=10)
    print(shape.rows)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from pysync.client.client import Client
from pysync.client.messages import Message
from pysync.client.shape import Shape, ShapeUpdate
from pysync.client.values import Row

T = TypeVar("T")


class _Loop:
    """An event loop running in its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="pysync-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        future: Future[T] = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    def iterate(self, aiter: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(aiter.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(aiter, "aclose", None)
            if aclose is not None and self.loop.is_running():
                self.run(aclose())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class BlockingShape:
    """``Shape`` for blocking code; ``rows`` is a copy taken on the client's loop."""

    def __init__(self, shape: Shape, loop: _Loop) -> None:
        self._shape = shape
        self._loop = loop

    @property
    def rows(self) -> dict[str, Row]:
        return self._loop.call(lambda: {key: dict(row) for key, row in self._shape.rows.items()})

    @property
    def up_to_date(self) -> bool:
        return self._shape.up_to_date

    def wait_up_to_date(self, timeout: float | None = None) -> None:
        self._loop.run(self._shape.wait_up_to_date(timeout))

    def wait_for_txid(self, txid: int | str, timeout: float | None = None) -> None:
        self._loop.run(self._shape.wait_for_txid(txid, timeout))

    def subscribe(self) -> Iterator[ShapeUpdate]:
        return self._loop.iterate(self._shape.subscribe())

    def close(self) -> None:
        self._loop.run(self._shape.close())


class BlockingClient:
    """``Client`` with blocking methods (same arguments); use it as a context manager."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = _Loop()

        async def make() -> Client:
            return Client(*args, **kwargs)

        self._client = self._loop.run(make())

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Message]:
        """As ``Client.stream``; a blocking iterator of the messages."""
        return self._loop.iterate(aiter(self._client.stream(*args, **kwargs)))

    def shape(self, *args: Any, **kwargs: Any) -> BlockingShape:
        return BlockingShape(self._loop.run(self._client.shape(*args, **kwargs)), self._loop)

    def close(self) -> None:
        self._loop.run(self._client.aclose())
        self._loop.stop()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
