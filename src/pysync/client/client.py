"""``pysync.Client``: Electric's HTTP Shape API from Python (against pysync or Electric)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from pysync.client.backoff import Backoff
from pysync.client.limits import Limits
from pysync.client.request import DEFAULT_PATH, shape_of, shape_params
from pysync.client.shape import Shape
from pysync.client.stream import ShapeStream
from pysync.client.values import Parser
from pysync.shapes.definition import ShapeDefinition

Params = Sequence[object] | Mapping[int | str, object]

LIVE_READ_TIMEOUT = 60.0
"""Longer than the server's long-poll (20 s) and SSE keep-alive (21 s) intervals."""


class Client:
    """A client of one sync server::

        async with pysync.Client("http://127.0.0.1:3000") as client:
            async for message in client.stream("todos", where="done = $1", params=[False]):
                ...
            shape = await client.shape("todos")      # rows by key, kept live
            await shape.wait_for_txid(txid)

    ``secret`` is sent as the ``secret`` query parameter (Electric's API secret),
    ``headers`` and ``params`` with every request (auth for an app's own routes). Pass
    ``http`` to use your own ``httpx.AsyncClient`` (an ASGI app in tests, say); its
    ``base_url`` then applies. ``sse`` uses server-sent events for live updates instead
    of long-polls. ``parsers`` add or replace value parsers by Postgres type name.

    Against a broken or hostile server: ``timeout`` is the longest silence while reading
    (a long-poll is held about 20 s), ``backoff`` paces retries of 429, 5xx and network
    errors and of repeated 409s (``Backoff``: Electric's TypeScript client's defaults, 1 s
    doubling to 32 s with full jitter, ``retry-after`` honoured up to 60 s), ``limits``
    bound the size and duration of each response and how many answers in a row may get
    the stream nowhere (``Limits``). Whatever breaks the protocol raises a ``ClientError``
    subclass naming it: ``MalformedResponse``, ``ResponseTooLarge``, ``OffsetWentBack``,
    ``ResponseTimeout``, ``ServerLoop``.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:3000",
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        sse: bool = False,
        backoff: Backoff | None = None,
        parsers: Mapping[str, Parser] | None = None,
        timeout: float = LIVE_READ_TIMEOUT,
        limits: Limits | None = None,
    ) -> None:
        self._owns_http = http is None
        self.http = (
            http
            if http is not None
            else httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10.0, read=timeout))
        )
        self._headers = dict(headers or {})
        self._params = dict(params or {})
        if secret is not None:
            self._params["secret"] = secret
        self._sse = sse
        self._backoff = backoff or Backoff()
        self._parsers = parsers
        self._limits = limits or Limits()

    def stream(
        self,
        shape: ShapeDefinition | str | None = None,
        *,
        namespace: str | None = None,
        where: str | None = None,
        params: Params | None = None,
        columns: Sequence[str] | None = None,
        replica: str = "default",
        log_mode: str = "full",
        url: str = DEFAULT_PATH,
        live: bool = True,
        offset: str = "-1",
        handle: str | None = None,
        sse: bool | None = None,
    ) -> ShapeStream:
        """The shape's messages: ``async for message in client.stream("todos")``.

        ``shape`` is a table name (``todos``, ``app."Todos"``) with ``namespace``/``where``/
        ``params``/``columns``/``replica``/``log_mode`` as for ``pysync.shape(...)``, or a
        ShapeDefinition, sent to ``url`` (default ``/v1/shape``). With no shape, ``url`` is
        an app route that defines the shape itself, and only offset, handle, live and
        cursor are sent. ``live=False`` ends at the first up-to-date. Resume from a saved
        ``offset`` and ``handle`` (``stream.offset``, ``stream.handle``)."""
        definition = shape_of(
            shape,
            namespace=namespace,
            where=where,
            params=params,
            columns=columns,
            replica=replica,
            log_mode=log_mode,
        )
        return ShapeStream(
            self.http,
            url,
            shape_params(definition) if definition is not None else [],
            live=live,
            sse=self._sse if sse is None else sse,
            offset=offset,
            handle=handle,
            extra_query=self._params,
            headers=self._headers,
            backoff=self._backoff,
            parsers=self._parsers,
            limits=self._limits,
        )

    async def shape(
        self,
        shape: ShapeDefinition | str | None = None,
        *,
        namespace: str | None = None,
        where: str | None = None,
        params: Params | None = None,
        columns: Sequence[str] | None = None,
        replica: str = "default",
        log_mode: str = "full",
        url: str = DEFAULT_PATH,
        sse: bool | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Shape:
        """The shape materialised (``shape.rows`` by key), following it live. Waits for
        its first up-to-date unless ``wait=False`` (``timeout`` bounds the wait)."""
        definition = shape_of(
            shape,
            namespace=namespace,
            where=where,
            params=params,
            columns=columns,
            replica=replica,
            log_mode=log_mode,
        )
        stream = self.stream(definition, url=url, sse=sse)
        changes_only = (
            definition.log_mode if definition is not None else log_mode
        ) == "changes_only"
        materialised = Shape(stream, changes_only=changes_only)
        if wait:
            try:
                await materialised.wait_up_to_date(timeout)
            except BaseException:
                await materialised.close()
                raise
        return materialised

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
