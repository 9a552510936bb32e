"""The Sync object itself: settings from arguments and the environment, the private
Postgres for development, a slot held by another process, logs under uvicorn, http
mode's forwarding client."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import pysync
from asgi_server import serving
from pysync.postgres.cluster import free_port
from pysync.postgres.slot import SlotInUseError


def test_settings_from_arguments_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSYNC_SLOT", "from_env")
    monkeypatch.setenv("PYSYNC_LONG_POLL_TIMEOUT", "7")
    monkeypatch.setenv("ELECTRIC_SECRET", "s3")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/db")
    monkeypatch.setenv("PYSYNC_STORAGE_DIR", "/var/lib/app/shapes")
    sync = pysync.Sync()
    assert sync.settings.storage_dir == Path("/var/lib/app/shapes")
    assert pysync.Sync(storage_dir=Path("/srv/x"), env=False).settings.storage_dir == Path("/srv/x")
    with pytest.raises(ValueError, match="storage_dir"):
        pysync.Sync(storage_dir=5, env=False)
    assert (sync.settings.slot, sync.settings.long_poll_timeout, sync.settings.secret) == (
        "from_env",
        7.0,
        "s3",
    )
    assert sync.database_url == "postgresql://u@127.0.0.1:1/db"
    sync = pysync.Sync("postgresql://other@127.0.0.1:1/db", slot="app_slot", publication="app_pub")
    assert (sync.settings.slot, sync.settings.publication) == ("app_slot", "app_pub")
    assert sync.database_url == "postgresql://other@127.0.0.1:1/db"
    assert pysync.Sync(env=False).settings.slot == "pysync"
    with pytest.raises(TypeError, match="unknown Sync setting"):
        pysync.Sync(slots="x")
    with pytest.raises(ValueError, match="url="):
        pysync.Sync(mode="http", env=False)
    with pytest.raises(RuntimeError, match="after start"):
        _ = pysync.Sync.dev(env=False).database_url


async def test_a_slot_held_by_another_process_fails_start(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    first = pysync.Sync(database_url, in_memory=True, env=False)
    async with first:
        second = pysync.Sync(database_url, in_memory=True, env=False)
        started = time.monotonic()
        with pytest.raises(SlotInUseError) as error:
            await second.start()
        assert time.monotonic() - started < 30
        assert "slot 'pysync' is in use by another process" in str(error.value)
        assert "Sync(slot=..., publication=...)" in str(error.value)
        assert not [r for r in caplog.records if r.exc_info], "no tracebacks logged"
        # Its own slot and publication: both run side by side.
        third = pysync.Sync(
            database_url, in_memory=True, env=False, slot="app_two", publication="app_two"
        )
        app = Starlette(routes=[third.route("/t", "t")])
        async with (
            third,
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://a") as http,
        ):
            response = await http.get("/t", params={"offset": "-1"})
            assert response.status_code == 200
            with psycopg.connect(database_url, autocommit=True) as conn:
                slots = {
                    r[0]
                    for r in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE active")
                }
            assert slots == {"pysync", "app_two"}


@pytest.mark.postgres  # a Postgres of its own
async def test_dev_mode_runs_a_private_postgres(tmp_path: Path) -> None:
    sync = pysync.Sync.dev(data_dir=tmp_path / "dev", env=False)
    app = Starlette(routes=[sync.route("/notes", lambda: pysync.shape("notes"))])
    async with sync.lifespan(app):
        assert str(tmp_path / "dev") in sync.database_url or "127.0.0.1" in sync.database_url
        with psycopg.connect(sync.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes VALUES (1, 'hello')")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://a"
        ) as http:
            response = await http.get("/notes", params={"offset": "-1"})
        assert [m["value"] for m in response.json() if "key" in m] == [{"id": "1", "body": "hello"}]
        assert (tmp_path / "dev" / "storage").is_dir()  # shape logs beside it, as pysync serve
    assert not (tmp_path / "dev" / "postgres" / "pgdata" / "postmaster.pid").exists()


def test_logs_show_under_uvicorn(tmp_path: Path, database_url: str) -> None:
    (tmp_path / "logapp.py").write_text(
        textwrap.dedent("""
        import pysync
        from starlette.applications import Starlette

        sync = pysync.Sync(in_memory=True)
        app = Starlette(routes=sync.routes(), lifespan=sync.lifespan)
    """)
    )
    port = free_port()
    source = Path(pysync.__file__).resolve().parent.parent  # this checkout's pysync, not another
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": f"{tmp_path}:{source}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "logapp:app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "INFO:     pysync: syncing shapes (slot pysync, publication pysync)" in output, output
    assert "Application startup complete" in output, output


def test_logs_go_to_the_apps_handlers_when_it_has_some() -> None:
    from pysync.app import logs

    logger = logging.getLogger("pysync")
    saved = (logger.level, list(logger.handlers))
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        logger.setLevel(logging.NOTSET)
        logger.handlers.clear()
        logs.configure("debug")
        assert logger.level == logging.DEBUG and not logger.handlers  # the root's handler gets them
    finally:
        root.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]


async def test_every_engine_setting_reaches_the_embedded_engine(database_url: str) -> None:
    """The embedded Sync builds its engine from the same Settings as ``pysync serve``:
    a setting given to it (here the subquery row budget) bounds what it serves."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int)")
        conn.execute("CREATE TABLE many (id int PRIMARY KEY, k int)")
        conn.execute("INSERT INTO many SELECT g, g FROM generate_series(1, 60) g")
    sync = pysync.Sync(database_url, in_memory=True, env=False, max_subquery_rows=10)
    await sync.start()
    try:
        app = Starlette(routes=[sync.mount("/electric")])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://t"
        ) as http:
            response = await http.get(
                "/electric/v1/shape",
                params={"table": "items", "offset": "-1", "where": "n IN (SELECT k FROM many)"},
            )
        assert response.status_code == 503, response.text
        assert "more than 10 rows" in response.json()["message"]
    finally:
        await sync.stop()


async def test_http_mode_forwards_no_cookie_from_one_user_to_another() -> None:
    # The upstream, or a load balancer before it, sets a cookie in its answer to Ann.
    seen: list[str | None] = []

    async def upstream_shape(request: Request) -> Response:
        seen.append(request.headers.get("cookie"))
        response = Response(b"[]", media_type="application/json")
        response.set_cookie("lb", f"session-of-{request.headers.get('traceparent')}")
        return response

    upstream = Starlette(routes=[Route("/v1/shape", upstream_shape)])
    async with serving(upstream) as base, pysync.Sync(mode="http", url=base, env=False) as sync:
        app = Starlette(
            routes=[
                sync.mount("/electric"),
                sync.route("/todos", lambda: pysync.shape("todos")),
            ]
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://app"
        ) as http:
            for user, path in (
                ("ann", "/electric/v1/shape"),
                ("bob", "/electric/v1/shape"),
                ("cy", "/todos"),
            ):
                response = await http.get(
                    path,
                    params={"table": "todos", "offset": "-1"},
                    headers={"traceparent": user, "cookie": f"app-session={user}"},
                )
                assert response.status_code == 200
                assert "set-cookie" not in response.headers
    # Neither the upstream's cookie nor the app's own session cookie went upstream.
    assert seen == [None, None, None]


async def test_http_mode_refuses_a_post_body_over_the_limit_before_holding_it() -> None:
    """http mode passes POST bodies to the sync service: one over the engine's limit is
    its 413 here, before it is held (read as it comes), and never reaches upstream."""
    bodies: list[int] = []

    async def upstream_shape(request: Request) -> Response:
        bodies.append(len(await request.body()))
        return Response(b"[]", media_type="application/json")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * (1 << 20)

    upstream = Starlette(routes=[Route("/v1/shape", upstream_shape, methods=["GET", "POST"])])
    async with serving(upstream) as base, pysync.Sync(mode="http", url=base, env=False) as sync:
        app = Starlette(routes=[sync.mount("/electric")])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://app"
        ) as http:
            params = {"table": "todos", "offset": "-1"}
            small = await http.post("/electric/v1/shape", params=params, json={"where": "true"})
            assert small.status_code == 200, small.text
            tracemalloc.start()
            try:
                big = await http.post("/electric/v1/shape", params=params, content=chunks())
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert big.status_code == 413, big.text
    assert peak < 32 << 20, f"{peak >> 20} MiB held for a 64 MiB body"
    assert bodies == [len(b'{"where":"true"}')]
