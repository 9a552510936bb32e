"""Interrupting waiting live requests (``api.interrupts.interrupt``), and the re-check hook
of server-defined shapes (``api.serve(..., recheck=hook)``), through real HTTP requests.

As in Phoenix.Sync, only requests whose shape a function defines (they have a re-check)
are interrupted; a request for a fixed shape (``/v1/shape``) never is."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from http_support import LONG_POLL, MUST_REFETCH, Client, Conn, data, until, waiting
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.http.params import RequestError, parse_request
from pysync.shapes.definition import ShapeDefinition

# name -> query params of a shape; each is served by a function-defined route ``/<name>``
# (interrupts only reach those, as in Phoenix.Sync), waited on at its up-to-date offset.
SHAPES: dict[str, dict[str, str]] = {
    "all": {"table": "items"},
    "full": {"table": "items", "replica": "full"},
    "gt1": {"table": "items", "where": "id > $1", "params[1]": "1"},
    "gt2": {"table": "items", "where": "id > $1", "params[1]": "2"},
    "cols": {"table": "items", "columns": "title,id"},
    "other": {"table": "other"},
}


def definition_of(params: dict[str, str]) -> ShapeDefinition:
    definition = parse_request({**params, "offset": "-1"}).definition
    assert definition is not None
    return definition


class Waiters:
    """Live requests, one per function-defined shape route; an interrupt re-runs the
    functions of the matching ones (``rechecks``), which return the same shape, so every
    request goes on waiting. Requests that reached their timeout are restarted."""

    def __init__(self, api: ShapeAPI) -> None:
        self.api = api
        self.shapes = {
            name: AppShape(api, definition_of(params)) for name, params in SHAPES.items()
        }
        routes = [Route(f"/{name}", shape.endpoint) for name, shape in self.shapes.items()]
        self.client = Client(api, Starlette(routes=routes))
        self.at: dict[str, dict[str, str]] = {}
        self.tasks: dict[str, asyncio.Task[httpx.Response]] = {}

    async def setup(self) -> None:
        for name in SHAPES:
            handle, offset, _ = await self.client.sync(f"/{name}")
            self.at[name] = {"handle": handle, "offset": offset, "live": "true"}

    async def start_missing(self) -> None:
        for name in SHAPES:
            if name not in self.tasks or self.tasks[name].done():
                self.tasks[name] = asyncio.create_task(
                    self.client.shape(f"/{name}", **self.at[name])
                )
        await waiting(self.api, len(SHAPES))

    def rechecks(self) -> dict[str, int]:
        return {name: shape.rechecks for name, shape in self.shapes.items()}

    async def interrupt(self, *args: Any, expect: set[str], **kwargs: Any) -> None:
        await self.start_missing()
        before = self.rechecks()
        count = self.api.interrupts.interrupt(*args, **kwargs)
        assert count == len(expect), (args, kwargs, count, expect)
        await until(
            lambda: all(self.rechecks()[n] == before[n] + 1 for n in expect),
            what=f"re-checks of {expect}",
        )
        await asyncio.sleep(0.01)
        after = self.rechecks()
        assert {n for n in SHAPES if after[n] != before[n]} == expect
        # Same shape: the interrupted ones go on waiting, as do the others.
        assert all(not t.done() for t in self.tasks.values()), [
            n for n, t in self.tasks.items() if t.done()
        ]

    async def aclose(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.client.aclose()


async def test_interrupt_matching_forms(engine: Engine) -> None:
    # Patient requests: none may reach its timeout while the forms are tried.
    waiters = Waiters(ShapeAPI(engine, long_poll_timeout=30.0))
    try:
        await check_forms(waiters)
    finally:
        await waiters.aclose()


async def check_forms(waiters: Waiters) -> None:
    await waiters.setup()
    items = {"all", "full", "gt1", "gt2", "cols"}
    await waiters.interrupt("items", expect=items)
    await waiters.interrupt("public.items", expect=items)
    await waiters.interrupt(table="items", expect=items)
    await waiters.interrupt(table="items", namespace="public", expect=items)
    await waiters.interrupt(table="items", namespace="other", expect=set())
    await waiters.interrupt("nope", expect=set())
    await waiters.interrupt(table="other", expect={"other"})
    # A where matches every params unless params are given.
    await waiters.interrupt(table="items", where="id > $1", expect={"gt1", "gt2"})
    await waiters.interrupt(table="items", where="id > $1", params=["1"], expect={"gt1"})
    await waiters.interrupt(table="items", where="id > $1", params={1: "2"}, expect={"gt2"})
    await waiters.interrupt(table="items", where="id > $1", params={"1": 1}, expect={"gt1"})
    await waiters.interrupt(table="items", where="id > 1", expect=set())
    await waiters.interrupt(table="items", columns=["id", "title"], expect={"cols"})
    # A full definition: replica is ignored, columns compared as a set.
    await waiters.interrupt(ShapeDefinition.create("items"), expect={"all", "full"})
    await waiters.interrupt(ShapeDefinition.create("items", replica="full"), expect={"all", "full"})
    await waiters.interrupt(
        ShapeDefinition.create("items", columns=["id", "title"]), expect={"cols"}
    )
    await waiters.interrupt(
        ShapeDefinition.create("items", where="id > $1", params=["2"]), expect={"gt2"}
    )
    # A callable gets the normalised shape.
    seen: list[dict[str, Any]] = []

    def record(shape: dict[str, Any]) -> bool:
        seen.append(shape)
        return bool(shape["params"] == {"1": "2"})

    await waiters.interrupt(record, expect={"gt2"})
    assert {
        "table": "items",
        "namespace": "public",
        "where": "id > $1",
        "params": {"1": "2"},
        "columns": None,
    } in seen
    assert {
        "table": "items",
        "namespace": "public",
        "where": None,
        "params": {},
        "columns": ["title", "id"],
    } in seen
    assert len(seen) == len(SHAPES)
    await waiters.interrupt(lambda s: s["namespace"] == "public", expect=set(SHAPES))
    # Now every function returns another shape: one interrupt, and each request answers
    # 409 with its new shape's handle.
    for shape in waiters.shapes.values():
        d = shape.definition
        shape.definition = ShapeDefinition.create(
            d.table, namespace=d.schema, columns=d.columns, where="id <> 0"
        )
    assert waiters.api.interrupts.interrupt(lambda s: True) == len(SHAPES)
    for name, task in waiters.tasks.items():
        response = await task
        assert response.status_code == 409, (name, response.status_code)
        assert response.headers["electric-handle"] not in (waiters.at[name]["handle"], None)
    assert len(waiters.api.interrupts) == 0


async def test_interrupt_leaves_other_requests_waiting_until_timeout(
    api: ShapeAPI, client: Client
) -> None:
    waiters = Waiters(api)
    try:
        await waiters.setup()
        handle, offset, _ = await client.sync(table="other")
        await waiters.start_missing()
        # A plain /v1/shape request on the same table: interrupts never reach it.
        plain = asyncio.create_task(
            client.shape(table="other", handle=handle, offset=offset, live="true")
        )
        await waiting(api, len(SHAPES) + 1)
        started = time.monotonic()
        assert api.interrupts.interrupt("other") == 1
        await until(lambda: waiters.shapes["other"].rechecks == 1, what="the re-check")
        await asyncio.sleep(0.05)
        assert not plain.done() and not any(t.done() for t in waiters.tasks.values())
        for response in await asyncio.gather(plain, *waiters.tasks.values()):
            assert response.status_code == 200 and response.headers["electric-has-data"] == "false"
        assert time.monotonic() - started > LONG_POLL * 0.5
        assert len(api.interrupts) == 0
    finally:
        await waiters.aclose()


# -- re-check hook of server-defined shapes -----------------------------------------------


class AppShape:
    """A Phoenix.Sync-style route: the server defines the shape; clients send offsets."""

    def __init__(self, api: ShapeAPI, definition: ShapeDefinition) -> None:
        self.api = api
        self.definition = definition
        self.rechecks = 0

    async def recheck(self) -> ShapeDefinition:
        self.rechecks += 1
        return self.definition

    async def endpoint(self, request: Request) -> Response:
        try:
            parsed = parse_request(request.query_params, shape_from_params=False)
        except RequestError as exc:
            return JSONResponse(
                {"message": "Invalid request", "errors": exc.errors}, status_code=400
            )
        return await self.api.serve(request, parsed, self.definition, recheck=self.recheck)

    def client(self) -> Client:
        return Client(self.api, Starlette(routes=[Route("/todos", self.endpoint)]))


async def test_recheck_same_definition_keeps_waiting(api: ShapeAPI, conn: Conn) -> None:
    shape = AppShape(api, ShapeDefinition.create("items", where="id > $1", params=["1"]))
    client = shape.client()
    try:
        handle, offset, messages = await client.sync("/todos", table="ignored", where="ignored")
        assert sorted(m["key"] for m in data(messages)) == [
            '"public"."items"/"2"',
            '"public"."items"/"3"',
        ]
        task = asyncio.create_task(
            client.shape("/todos", offset=offset, handle=handle, live="true")
        )
        await waiting(api, 1)
        assert api.interrupts.interrupt("items") == 1
        await until(lambda: shape.rechecks == 1, what="the re-check")
        await asyncio.sleep(0.02)
        assert not task.done()  # same definition: still waiting
        assert len(api.interrupts) == 1
        conn.execute("INSERT INTO items VALUES (7, 'seven', 7)")
        response = await task
        assert response.status_code == 200
        assert [m["key"] for m in data(response.json())] == ['"public"."items"/"7"']
        assert response.headers["electric-has-data"] == "true"

        # Re-checked again and unchanged, with no data: it answers at the timeout.
        offset = response.headers["electric-offset"]
        started = time.monotonic()
        task = asyncio.create_task(
            client.shape("/todos", offset=offset, handle=handle, live="true")
        )
        await waiting(api, 1)
        assert api.interrupts.interrupt(where="id > $1", table="items") == 1
        await until(lambda: shape.rechecks == 2, what="the second re-check")
        response = await task
        assert time.monotonic() - started >= LONG_POLL * 0.9
        assert response.status_code == 200 and response.headers["electric-has-data"] == "false"
    finally:
        await client.aclose()


async def test_recheck_changed_definition_gives_409_with_new_handle(
    api: ShapeAPI, engine: Engine
) -> None:
    shape = AppShape(api, ShapeDefinition.create("items", where="id > $1", params=["1"]))
    client = shape.client()
    try:
        handle, offset, _ = await client.sync("/todos")
        task = asyncio.create_task(
            client.shape("/todos", offset=offset, handle=handle, live="true")
        )
        await waiting(api, 1)
        changed = ShapeDefinition.create("items", where="id > $1", params=["2"])
        shape.definition = changed
        started = time.perf_counter()
        assert api.interrupts.interrupt(table="items", params=["1"]) == 1
        response = await task
        assert time.perf_counter() - started < 0.05
        assert response.status_code == 409
        assert response.json() == MUST_REFETCH
        new = response.headers["electric-handle"]
        assert new != handle
        assert (await engine.find(changed)).handle == new  # type: ignore[union-attr]
        # The client follows the 409 and gets the new shape under that handle.
        fresh = await client.shape("/todos", offset="-1", handle=new)
        assert fresh.headers["electric-handle"] == new
        assert [m["key"] for m in data(fresh.json())] == ['"public"."items"/"3"']
        # Its old handle is now a 409 too.
        stale = await client.shape("/todos", offset=offset, handle=handle)
        assert stale.status_code == 409 and stale.headers["electric-handle"] == new
    finally:
        await client.aclose()


async def test_server_defined_shape_errors(api: ShapeAPI) -> None:
    shape = AppShape(api, ShapeDefinition.create("items", columns=[]))
    client = shape.client()
    try:
        r = await client.shape("/todos", offset="-1")
        assert r.status_code == 400
        assert r.json() == {
            "message": "Invalid request",
            "errors": {
                "columns": ["The list of columns must include all primary key columns, missing: id"]
            },
        }
        assert (
            r.headers["cache-control"] == "no-store"
            and r.headers["surrogate-control"] == "no-store"
        )
        # Request params are still validated (offset, handle, live) when the shape is the server's.
        r = await client.shape("/todos", offset="0_0")
        assert r.json() == {
            "message": "Invalid request",
            "errors": {"handle": ["can't be blank when offset != -1"]},
        }
    finally:
        await client.aclose()
