"""Shared pieces of the HTTP protocol tests: a real Engine on a fresh database, the
ShapeAPI app behind ``httpx.ASGITransport`` (in-process, no mocks), and small helpers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest

from pysync.engine import Engine
from pysync.http.api import ShapeAPI

Conn = psycopg.Connection[tuple[Any, ...]]

EXPOSED = (
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,"
    "electric-up-to-date,electric-internal-known-error,retry-after"
)
CC_INITIAL = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
CC_NON_LIVE = "public, max-age=60, stale-while-revalidate=300"
CC_LIVE = "public, max-age=5, stale-while-revalidate=5"
CC_409 = "public, max-age=60, must-revalidate"
MUST_REFETCH = [{"headers": {"control": "must-refetch"}}]
LONG_POLL = 1.0

SETUP_SQL = """
CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL, n int);
INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 3) g;
CREATE TABLE other (id int PRIMARY KEY, v text);
INSERT INTO other VALUES (1, 'a');
"""


EngineFactory = Callable[..., Awaitable[Engine]]


IN_PROCESS, WORKERS = "one-process", "workers"
BOTH_SERVERS = pytest.mark.parametrize("client", [IN_PROCESS, WORKERS], indirect=True)
"""The test's ``client`` on the in-process app, then on ``pysync serve --workers 2``."""


class Client:
    """An httpx client on a ShapeAPI app; ``shape(**params)`` GETs ``/v1/shape``."""

    def __init__(self, api: ShapeAPI, app: Any = None) -> None:
        self.api = api
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app if app is not None else api.app()),
            base_url="http://pysync.test",
        )

    @classmethod
    def at(cls, base_url: str) -> Client:
        """The same requests to a server over TCP (no ``api`` at hand)."""
        client = cls.__new__(cls)
        client.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        return client

    async def shape(self, path: str = "/v1/shape", **params: Any) -> httpx.Response:
        """GET with ``params`` as the query; ``headers=`` (a dict) is sent as headers."""
        headers = params.pop("headers", None)
        return await self.http.get(path, params=params, headers=headers)

    async def raw(self, url: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        return await self.http.request(method, url, **kwargs)

    async def sync(self, path: str = "/v1/shape", **params: Any) -> tuple[str, str, list[Any]]:
        """Walk a shape from ``-1`` to up-to-date as a client does: (handle, offset, messages)."""
        response = await self.shape(path, offset="-1", **params)
        assert response.status_code == 200, response.text
        handle = response.headers["electric-handle"]
        messages = response.json()
        for _ in range(1000):
            offset = response.headers["electric-offset"]
            if "electric-up-to-date" in response.headers:
                return handle, offset, messages
            response = await self.shape(path, offset=offset, handle=handle, **params)
            assert response.status_code == 200, response.text
            messages += response.json()
        raise AssertionError("never up to date")

    async def aclose(self) -> None:
        await self.http.aclose()


def make_api(engine: Engine, **kwargs: Any) -> ShapeAPI:
    kwargs.setdefault("long_poll_timeout", LONG_POLL)
    return ShapeAPI(engine, **kwargs)


async def until(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` (every loop turn / ms) until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def waiting(api: ShapeAPI, count: int) -> None:
    """Until ``count`` live requests wait in ``api``, then let them wait >= 100 ms."""
    await until(lambda: len(api.interrupts) == count, what=f"{count} waiting requests")
    await asyncio.sleep(0.1)


def data(messages: list[Any]) -> list[Any]:
    return [m for m in messages if "key" in m]


def controls(messages: list[Any]) -> list[str]:
    return [m["headers"]["control"] for m in messages if "control" in m.get("headers", {})]


def error_body(response: httpx.Response) -> Any:
    return json.loads(response.content)


def assert_error(response: httpx.Response, status: int, body: Any) -> None:
    """An error response as Electric sends it: status, exact JSON, no-store for caches."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.json() == body
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["surrogate-control"] == "no-store"
    assert response.headers["access-control-expose-headers"] == EXPOSED
    assert "electric-handle" not in response.headers
    assert "electric-schema" not in response.headers and "electric-cursor" not in response.headers


def assert_invalid(response: httpx.Response, errors: dict[str, Any]) -> None:
    assert_error(response, 400, {"message": "Invalid request", "errors": errors})
