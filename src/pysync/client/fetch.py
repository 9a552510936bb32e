"""One HTTP exchange within the client's limits: headers and body by a deadline, the body
up to a size, httpx's protocol errors told apart from network errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h11
import httpx

from pysync.client.errors import MalformedResponse, ResponseTimeout, ResponseTooLarge
from pysync.client.limits import Limits


@contextlib.asynccontextmanager
async def deadline(at: float, what: str) -> AsyncIterator[None]:
    """Raise ``ResponseTimeout`` naming ``what`` if the block is still running at ``at``
    (the event loop's clock)."""
    try:
        async with asyncio.timeout_at(at):
            yield
    except TimeoutError:
        raise ResponseTimeout(f"{what} was not complete by Limits.request_timeout") from None


def deadline_from_now(limits: Limits) -> float:
    return asyncio.get_running_loop().time() + limits.request_timeout


async def open_response(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """The response with its headers (the body not read yet)."""
    try:
        return await http.send(request, stream=True)
    except httpx.RemoteProtocolError as exc:
        if _status_hint(exc) == 431:  # h11's refusal of a header block over httpcore's 100 KiB
            raise ResponseTooLarge("response headers larger than 100 KiB") from None
        raise


async def read_body(response: httpx.Response, limits: Limits) -> bytes:
    """The whole (decoded) body, refused once it is over ``max_response_bytes``."""
    limit = limits.max_response_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"a response of {declared} bytes (content-length)", limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise _too_large("a response body", limit)
            chunks.append(chunk)
    except httpx.DecodingError as exc:
        raise MalformedResponse(f"a body that cannot be decoded: {exc}") from None
    return b"".join(chunks)


async def fetch(
    http: httpx.AsyncClient, request: httpx.Request, limits: Limits
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` and read its body, all within ``request_timeout``."""
    async with deadline(deadline_from_now(limits), "the response"):
        response = await open_response(http, request)
        try:
            return response, await read_body(response, limits)
        finally:
            await response.aclose()


def _too_large(what: str, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(f"{what} over Limits.max_response_bytes={limit}")


def _status_hint(exc: BaseException) -> int | None:
    """The status h11 suggests for the protocol error behind ``exc`` (httpx wraps
    httpcore's error, which wraps h11's)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, h11.ProtocolError):
            return seen.error_status_hint
        seen = seen.__cause__ or seen.__context__
    return None
