"""An app's shape routes through ``pysync.Sync``, run twice: embedded (the engine in this
process) and http mode (forwarding to a ``pysync serve`` subprocess). The same app code
and the same assertions: predefined routes, per-request shapes with the request's auth,
live changes, interrupts (same shape waits, changed shape 409s with the new handle, from
another thread), transforms, Electric's API under a prefix, CORS and the secret."""

from __future__ import annotations

import asyncio
import itertools
import threading
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import pysync
from asgi_server import serving
from http_support import until
from pysync.postgres.cluster import PostgresCluster, free_port
from pysync.testing import drop_database
from serve_process import ServeProcess

SECRET = "app-secret-" + uuid.uuid4().hex[:6]
LONG_POLL = 10.0
_tables = itertools.count()

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def routes_db(pg_cluster: PostgresCluster) -> Iterator[str]:
    name = f"routes_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    drop_database(pg_cluster, name)


@pytest.fixture(scope="module", params=["embedded", "http"])
async def sync(
    request: pytest.FixtureRequest, routes_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[pysync.Sync]:
    cors = pysync.CORS.of(["http://app.test"], credentials=True, headers=["authorization"])
    server = None
    if request.param == "embedded":
        instance = pysync.Sync(
            routes_db,
            secret=SECRET,
            long_poll_timeout=LONG_POLL,
            in_memory=True,
            env=False,
            cors=cors,
        )
    else:
        port = free_port()
        server = ServeProcess(
            [
                "--database-url",
                routes_db,
                "--port",
                str(port),
                "--secret",
                SECRET,
                "--storage-dir",
                str(tmp_path_factory.mktemp("upstream") / "storage"),
                "--long-poll-timeout",
                str(LONG_POLL),
                "--log-level",
                "info",
            ]
        )
        server.wait_ready()
        instance = pysync.Sync(
            mode="http", url=f"http://127.0.0.1:{port}", secret=SECRET, env=False, cors=cors
        )
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()
        if server is not None:
            assert server.stop(), server.output()


@pytest.fixture
def table(routes_db: str) -> Iterator[str]:
    """A fresh todos table: ann owns 1, 2 (done), 5; bob owns 3, 4."""
    name = f"todos_{next(_tables)}"
    with psycopg.connect(routes_db, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (id int PRIMARY KEY, owner text NOT NULL, title text, done bool NOT NULL DEFAULT false)"
        )
        conn.execute(
            f"INSERT INTO {name} VALUES (1, 'ann', 'one', false), (2, 'ann', 'two', true), "
            "(3, 'bob', 'three', false), (4, 'bob', 'four', false), (5, 'ann', 'five', false)"
        )
    yield name


@pytest.fixture
def conn(routes_db: str) -> Iterator[Conn]:
    with psycopg.connect(routes_db, autocommit=True) as conn:
        yield conn


def user_of(request: Request) -> str:
    """The app's auth: whatever it is, it runs before the shape is asked for."""
    user = request.headers.get("x-user")
    if not user:
        raise HTTPException(401, "who are you?")
    return user


def upper_titles(message: dict[str, Any]) -> list[dict[str, Any]]:
    if message["headers"]["operation"] == "delete":
        return []
    value = dict(message["value"])
    if value.get("title") is not None:
        value["title"] = value["title"].upper()
    return [{**message, "value": value}]


class App:
    """The example app of these tests, and an httpx client for it."""

    def __init__(self, sync: pysync.Sync, table: str) -> None:
        self.sync = sync
        self.table = table
        self.state = {"owner": "ann"}

        async def mine(request: Request) -> Response:
            user = user_of(request)
            return await sync.render(
                request, lambda: pysync.shape(table, where="owner = $1", params=[user])
            )

        async def mine_fixed(request: Request) -> Response:
            user = user_of(request)
            return await sync.render(request, table, where="owner = $1", params=[user])

        async def queryable(request: Request) -> Response:
            return await sync.render(request, table, queryable_columns=["id", "done"])

        async def upper(request: Request) -> Response:
            return await sync.render(
                request, table, columns=["id", "title"], transform=upper_titles, cache="public"
            )

        def flexible(request: Request) -> pysync.ShapeDefinition:
            return pysync.shape(table, where="owner = $1", params=[self.state["owner"]])

        self.app = Starlette(
            middleware=[Middleware(pysync.PreflightMiddleware, cors=sync.cors)],
            routes=[
                sync.route("/all", table, columns=["id", "title"]),
                sync.route("/queryable", table, queryable_columns=["done", "id"]),
                Route("/queryable-render", queryable),
                sync.route("/open", table, where="done = $1", params=[False]),
                sync.route("/open-without-secret", table, where="done = false", check_secret=False),
                Route("/mine", mine),
                Route("/mine-fixed", mine_fixed),
                Route("/upper", upper),
                sync.route("/flexible", flexible),
                # The auth inside the shape function: its HTTPException is the app's answer.
                sync.route(
                    "/inside",
                    lambda request: pysync.shape(
                        table, where="owner = $1", params=[user_of(request)]
                    ),
                ),
                sync.mount("/electric"),
                sync.mount("/served", tables=[table]),
            ],
        )
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(self.app),
            base_url="http://app.test",
            params={"secret": SECRET},
            timeout=60,
        )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        headers = params.pop("headers", None)
        return await self.http.get(path, params=params, headers=headers)

    async def sync_to_end(
        self, path: str, headers: dict[str, str] | None = None, **params: Any
    ) -> tuple[str, str, list[Any]]:
        response = await self.get(path, offset="-1", headers=headers, **params)
        assert response.status_code == 200, (response.status_code, response.text)
        handle = response.headers["electric-handle"]
        messages = response.json()
        while "electric-up-to-date" not in response.headers:
            response = await self.get(
                path,
                offset=response.headers["electric-offset"],
                handle=handle,
                headers=headers,
                **params,
            )
            assert response.status_code == 200, response.text
            messages += response.json()
        return handle, response.headers["electric-offset"], messages


@pytest.fixture
async def app(sync: pysync.Sync, table: str) -> AsyncIterator[App]:
    app = App(sync, table)
    yield app
    await app.http.aclose()


def rows(messages: list[Any]) -> dict[str, dict[str, Any]]:
    return {m["value"]["id"]: m["value"] for m in messages if "key" in m}


async def test_predefined_route_ignores_client_shape_params(app: App) -> None:
    _, _, messages = await app.sync_to_end("/all", table="other", where="false", columns="owner")
    assert set(rows(messages)) == {"1", "2", "3", "4", "5"}
    assert all(set(row) == {"id", "title"} for row in rows(messages).values())
    _, _, messages = await app.sync_to_end(
        "/open", None, where="done = $1", **{"params[1]": "true"}
    )
    assert set(rows(messages)) == {"1", "3", "4", "5"}


async def test_queryable_columns_on_a_route_and_render(app: App) -> None:
    """Electric's allow-list, given by the app: what is synced (clients cannot widen it)."""
    for path in ("/queryable", "/queryable-render"):
        _, _, messages = await app.sync_to_end(path, columns="id,owner")
        assert set(rows(messages)) == {"1", "2", "3", "4", "5"}
        assert all(set(row) == {"id", "done"} for row in rows(messages).values())


async def test_per_request_shape_sees_the_request_auth(app: App) -> None:
    _, _, ann = await app.sync_to_end("/mine", headers={"x-user": "ann"})
    _, _, bob = await app.sync_to_end("/mine", headers={"x-user": "bob"})
    assert set(rows(ann)) == {"1", "2", "5"} and set(rows(bob)) == {"3", "4"}
    anonymous = await app.get("/mine", offset="-1")
    assert anonymous.status_code == 401 and anonymous.text == "who are you?"
    _, _, inside = await app.sync_to_end("/inside", headers={"x-user": "bob"})
    assert set(rows(inside)) == {"3", "4"}
    anonymous = await app.get("/inside", offset="-1")
    assert anonymous.status_code == 401 and anonymous.text == "who are you?"


async def test_live_change_reaches_an_app_route(app: App, conn: Conn) -> None:
    handle, offset, _ = await app.sync_to_end("/mine", headers={"x-user": "bob"})
    live = asyncio.create_task(
        app.get("/mine", offset=offset, handle=handle, live="true", headers={"x-user": "bob"})
    )
    await until(lambda: app.sync.waiting == 1, timeout=30, what="a waiting request")
    conn.execute(
        f"INSERT INTO {app.table} VALUES (6, 'bob', 'six', false), (7, 'ann', 'seven', false)"
    )
    response = await live
    assert response.status_code == 200
    assert set(rows(response.json())) == {"6"}
    assert response.headers["electric-handle"] == handle


async def test_interrupt_same_shape_waits_changed_shape_gets_409(app: App) -> None:
    handle, offset, messages = await app.sync_to_end("/flexible")
    assert set(rows(messages)) == {"1", "2", "5"}
    live = asyncio.create_task(app.get("/flexible", offset=offset, handle=handle, live="true"))
    await until(lambda: app.sync.waiting == 1, timeout=30, what="a waiting request")
    assert app.sync.interrupt(app.table) == 1
    assert app.sync.interrupt("nope") == 0
    await asyncio.sleep(0.3)
    assert not live.done()  # the function gave the same shape: it goes on waiting
    assert app.sync.waiting == 1
    app.state["owner"] = "bob"
    assert pysync.interrupt(table=app.table, where="owner = $1", params=["ann"]) == 1
    response = await live
    assert response.status_code == 409
    assert response.json() == [{"headers": {"control": "must-refetch"}}]
    new_handle = response.headers["electric-handle"]
    assert new_handle != handle
    fresh, _, messages = await app.sync_to_end("/flexible")
    assert fresh == new_handle and set(rows(messages)) == {"3", "4"}


async def test_interrupt_from_another_thread(app: App) -> None:
    handle, offset, _ = await app.sync_to_end("/flexible")
    live = asyncio.create_task(app.get("/flexible", offset=offset, handle=handle, live="true"))
    await until(lambda: app.sync.waiting == 1, timeout=30, what="a waiting request")
    app.state["owner"] = "bob"
    counts: list[int] = []
    thread = threading.Thread(
        target=lambda: counts.append(app.sync.interrupt(lambda s: s["table"] == app.table))
    )
    thread.start()
    response = await live
    await asyncio.to_thread(thread.join, 10)
    assert counts == [1]
    assert response.status_code == 409 and response.headers["electric-handle"] != handle
    # From a worker thread of the loop too (a sync endpoint or a threadpool).
    assert await asyncio.to_thread(app.sync.interrupt, app.table) == 0  # nobody waits now


async def test_transform_keeps_offsets_etags_and_caching(app: App, conn: Conn) -> None:
    plain = await app.get("/all", offset="-1")
    transformed = await app.get("/upper", offset="-1")
    assert transformed.status_code == 200
    for header in (
        "electric-handle",
        "electric-offset",
        "etag",
        "cache-control",
        "electric-schema",
    ):
        assert transformed.headers[header] == plain.headers[header], header
    assert {m["value"]["title"] for m in transformed.json() if "key" in m} == {
        "ONE",
        "TWO",
        "THREE",
        "FOUR",
        "FIVE",
    }
    again = await app.get(
        "/upper", offset="-1", headers={"if-none-match": transformed.headers["etag"]}
    )
    assert again.status_code == 304
    handle, offset, _ = await app.sync_to_end("/upper")
    live = asyncio.create_task(app.get("/upper", offset=offset, handle=handle, live="true"))
    await until(lambda: app.sync.waiting == 1, timeout=30, what="a waiting request")
    conn.execute(
        f"DELETE FROM {app.table} WHERE id = 4; UPDATE {app.table} SET title = 'uno' WHERE id = 1"
    )
    response = await live
    messages = response.json()
    changes = [m for m in messages if "key" in m]
    assert [(m["headers"]["operation"], m["value"]) for m in changes] == [
        ("update", {"id": "1", "title": "UNO"})
    ]
    assert messages[-1]["headers"]["control"] == "up-to-date"


async def test_electric_api_under_a_prefix(app: App) -> None:
    response = await app.get(
        "/electric/v1/shape", table=app.table, offset="-1", where="owner = 'bob'"
    )
    assert response.status_code == 200
    assert {m["value"]["id"] for m in response.json() if "key" in m} == {"3", "4"}
    assert (await app.get("/electric/v1/health")).status_code == 200
    assert (await app.get("/v1/shape", table=app.table, offset="-1")).status_code == 404
    assert (await app.get("/")).status_code == 404


async def test_a_mount_serves_only_its_tables(app: App, conn: Conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS members (list_id int, member text)")
    served = await app.get("/served/v1/shape", table=app.table, offset="-1", where="id < 3")
    assert served.status_code == 200
    assert {m["value"]["id"] for m in served.json() if "key" in m} == {"1", "2"}
    assert (await app.get("/served/v1/health")).status_code == 200
    # Another table, also through a subquery of the WHERE (its rows decide the filter).
    other = await app.get("/served/v1/shape", table="members", offset="-1")
    assert other.status_code == 403
    assert other.json() == {
        "message": 'table "public"."members" is not served here',
        "errors": {"table": ['table "public"."members" is not served here']},
    }
    assert other.headers["cache-control"] == "no-store"
    for table in ("public.members", '"members"', "pg_catalog.pg_authid"):
        response = await app.get("/served/v1/shape", table=table, offset="-1")
        assert response.status_code == 403, table
    probe = "owner IN (SELECT member FROM members WHERE list_id = 1)"
    nested = f"id IN (SELECT id FROM {app.table} WHERE {probe})"
    for where in (probe, nested):
        response = await app.get("/served/v1/shape", table=app.table, offset="-1", where=where)
        assert response.status_code == 403 and "members" in response.json()["message"], where
    handle, offset, _ = await app.sync_to_end("/served/v1/shape", table=app.table)
    subset = await app.get(
        "/served/v1/shape",
        table=app.table,
        offset=offset,
        handle=handle,
        subset__where=probe,
    )
    assert subset.status_code == 403 and "subset__where" in subset.json()["errors"]
    for body in ({"where": probe}, {"subset": {"where": probe}}):
        posted = await app.http.post(
            "/served/v1/shape",
            params={"table": app.table, "offset": offset, "handle": handle},
            json=body,
        )
        assert posted.status_code == 403, body
    # An allowed subset body, read by the mount's check and then by the API, is served.
    posted = await app.http.post(
        "/served/v1/shape",
        params={"table": app.table, "offset": offset, "handle": handle},
        json={"where": "true"},
    )
    assert posted.status_code == 200, posted.text
    # A body over the limit is refused by the mount's check before it is held (declared
    # or as it comes: chunked), as the API refuses it.
    params = {"table": app.table, "offset": offset, "handle": handle}
    posted = await app.http.post(
        "/served/v1/shape", params=params, content=b"{" + b" " * (9 << 20) + b"}"
    )
    assert posted.status_code == 413, posted.text
    tracemalloc.start()
    try:
        posted = await app.http.post("/served/v1/shape", params=params, content=_chunks(64 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert posted.status_code == 413, posted.text
    assert peak < 32 << 20, f"{peak >> 20} MiB held for a 64 MiB body"
    # Without tables=, a mount serves any table to whoever reaches it.
    assert (await app.get("/electric/v1/shape", table="members", offset="-1")).status_code == 200
    with pytest.raises(TypeError, match="a list of tables"):
        app.sync.mount("/x", tables="todos")
    with pytest.raises(ValueError, match="names no table"):
        app.sync.mount("/x", tables=[])


async def test_secret_applies_to_app_routes_unless_opted_out(app: App) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app.app), base_url="http://app.test"
    ) as anonymous:
        for path in ("/all", "/open", "/flexible", "/electric/v1/shape?table=x"):
            response = await anonymous.get(path, params={"offset": "-1"})
            assert response.status_code == 401, path
        response = await anonymous.get("/open-without-secret", params={"offset": "-1"})
        assert response.status_code == 200
        assert set(rows(response.json())) == {"1", "3", "4", "5"}


async def test_cors_for_credentials_and_auth_headers(app: App) -> None:
    preflight = await app.http.options(
        "/mine",
        headers={
            "origin": "http://app.test",
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization,if-none-match,x-other",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://app.test"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert preflight.headers["access-control-allow-headers"] == "authorization,if-none-match"
    # Past the PreflightMiddleware (which answers for any path), each route names its
    # own methods: an app's shape route is read-only; Electric's API offers DELETE only
    # when it is on (embedded: allow_delete, off here; in http mode the service decides).
    route = await app.http.options("/all", headers={"origin": "http://app.test"})
    assert route.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    electric = await app.http.options("/electric/v1/shape", headers={"origin": "http://app.test"})
    assert electric.headers["access-control-allow-methods"] == (
        "GET, POST, HEAD, DELETE, OPTIONS"
        if app.sync.mode == "http"
        else "GET, POST, HEAD, OPTIONS"
    )
    response = await app.get(
        "/mine", offset="-1", headers={"x-user": "ann", "origin": "http://app.test"}
    )
    assert response.headers["access-control-allow-origin"] == "http://app.test"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "electric-handle" in response.headers["access-control-expose-headers"]
    assert response.headers["vary"] == "origin, authorization, cookie"
    foreign = await app.get("/all", offset="-1", headers={"origin": "http://evil.test"})
    assert foreign.status_code == 200 and "access-control-allow-origin" not in foreign.headers


async def test_per_request_shapes_are_private_to_the_clients_cache(app: App, conn: Conn) -> None:
    # One URL answers each user their own shape; a shared cache keys by URL and vary only,
    # and vary cannot name the app's x-user header: only the client's cache may keep it.
    ann = {"x-user": "ann"}
    for n, path in enumerate(("/mine", "/mine-fixed", "/inside")):
        response = await app.get(path, offset="-1", headers=ann)
        assert response.status_code == 200
        assert response.headers["cache-control"] == (
            "private, max-age=604800, stale-while-revalidate=2629746"
        ), path
        handle, offset, _ = await app.sync_to_end(path, headers=ann)
        again = await app.get(
            path, offset="-1", headers={**ann, "if-none-match": response.headers["etag"]}
        )
        assert again.status_code == 304 and again.headers["cache-control"].startswith("private")
        conn.execute(f"INSERT INTO {app.table} VALUES ({10 + n}, 'ann', 'new', false)")
        live = await app.get(
            path, offset=offset, handle=handle, live="true", headers=ann, cursor="1"
        )
        assert live.headers["cache-control"] == "private, max-age=5, stale-while-revalidate=5"
    # Shapes the same for everyone keep Electric's public caching: a predefined route, a
    # render the app marks public, Electric's own API.
    for path, params in (
        ("/all", {}),
        ("/upper", {}),
        ("/electric/v1/shape", {"table": app.table}),
    ):
        response = await app.get(path, offset="-1", **params)
        assert response.headers["cache-control"] == (
            "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
        ), path
    with pytest.raises(ValueError, match="cache must be 'public' or 'private'"):
        app.sync.route("/x", app.table, cache="shared")  # type: ignore[arg-type]


async def test_sse_through_an_app_route(app: App, conn: Conn) -> None:
    handle, offset, _ = await app.sync_to_end("/upper")
    async with (
        serving(app.app) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
        http.stream(
            "GET",
            "/upper",
            params={
                "offset": offset,
                "handle": handle,
                "live": "true",
                "live_sse": "true",
                "secret": SECRET,
            },
        ) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        await until(lambda: app.sync.waiting == 1, timeout=30, what="a waiting stream")
        conn.execute(f"UPDATE {app.table} SET title = 'cinq' WHERE id = 5")
        events = ""
        async for text in stream.aiter_text():
            events += text
            if '"CINQ"' in events and "up-to-date" in events:
                break
    assert '"title":"CINQ"' in events


async def _chunks(size: int) -> AsyncIterator[bytes]:
    """A body of ``size`` bytes sent chunked (no content-length)."""
    yield b"{"
    for _ in range(size >> 16):
        yield b" " * (1 << 16)
    yield b"}"
