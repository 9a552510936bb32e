"""pysync.django's views: ``sync_path`` and ``render`` answering Electric's protocol from
Django (in-process through Django's ASGI handler), per-request shapes interrupted by
``pysync.django.interrupt``, and the engine's lifecycle under a real uvicorn: started
by the first request, or by ``pysync.django.asgi``'s lifespan, with a live long-poll
receiving a change."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async

import pysync
import pysync.django
from django_support import create_tables, django_database, run_django_tests
from pysync.postgres.cluster import PostgresCluster, free_port

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def django_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    url = django_database(pg_cluster)
    from djapp.models import Item, Member, Special, TodoList

    create_tables(TodoList, Member, Item, Special)
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name LIKE 'django_%' AND NOT active"
        )


def seed() -> None:
    from djapp.models import Item, Member, TodoList

    Item.objects.all().delete()
    Member.objects.all().delete()
    TodoList.objects.all().delete()
    first, second = TodoList.objects.create(title="a"), TodoList.objects.create(title="b")
    Member.objects.create(todo_list=first, user="ann")
    Item.objects.create(name="one", flag=False, todo_list=first)
    Item.objects.create(name="two", flag=True, todo_list=second)


@pytest_asyncio.fixture(loop_scope="session")
async def http(django_url: str) -> AsyncIterator[httpx.AsyncClient]:
    from django.core.asgi import get_asgi_application

    import pysync.django
    from pysync.django import engine

    await sync_to_async(seed)()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(get_asgi_application()), base_url="http://django.test"
    ) as client:
        yield client
    await engine.stop()
    assert not pysync.django.get_sync().started


def rows(response: httpx.Response) -> dict[str, dict[str, Any]]:
    return {m["key"]: m["value"] for m in response.json() if "key" in m}


async def test_sync_path_serves_the_querysets_shape(http: httpx.AsyncClient) -> None:
    response = await http.get("/shapes/unflagged/", params={"offset": "-1"})
    assert response.status_code == 200, response.text
    assert [v["name"] for v in rows(response).values()] == ["one"]
    assert response.headers["electric-handle"]
    # A fixed shape is the same for everyone: Electric's public caching.
    assert response.headers["cache-control"].startswith("public")
    bad = await http.get("/shapes/unflagged/", params={"offset": "nope"})
    assert bad.status_code == 400
    assert "offset" in bad.json()["errors"]


async def test_render_runs_the_views_auth_and_a_per_request_shape(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/shapes/mine/", params={"offset": "-1"})).status_code == 401
    response = await http.get("/shapes/mine/", params={"offset": "-1"}, headers={"x-user": "ann"})
    assert response.status_code == 200, response.text
    assert [(v["name"], set(v)) for v in rows(response).values()] == [
        ("one", {"id", "name", "todo_list_id"})
    ]
    assert response.headers["cache-control"].startswith("private")


async def test_interrupt_reruns_the_shape_function_of_a_waiting_request(
    http: httpx.AsyncClient, django_url: str
) -> None:
    import pysync.django
    from djapp.models import Item, Member, TodoList

    headers = {"x-user": "bob"}
    first = await http.get("/shapes/mine/", params={"offset": "-1"}, headers=headers)
    assert first.status_code == 200 and rows(first) == {}
    params = {
        "offset": first.headers["electric-offset"],
        "handle": first.headers["electric-handle"],
        "live": "true",
    }
    waiting = asyncio.create_task(http.get("/shapes/mine/", params=params, headers=headers))
    sync = pysync.django.get_sync()
    deadline = time.monotonic() + 10
    while sync.waiting < 1:
        assert time.monotonic() < deadline, "the live request never waited"
        await asyncio.sleep(0.01)
    # Unrelated interrupts leave it waiting; one for its model re-runs its function.
    assert pysync.django.interrupt(TodoList) == 0
    assert not waiting.done()
    second = await sync_to_async(TodoList.objects.get)(title="b")
    await sync_to_async(Member.objects.create)(todo_list=second, user="bob")
    assert pysync.django.interrupt(Item) == 1
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 409, response.text
    assert response.headers["electric-handle"] != params["handle"]
    again = await http.get("/shapes/mine/", params={"offset": "-1"}, headers=headers)
    assert [v["name"] for v in rows(again).values()] == ["two"]


async def test_a_writers_txid_arrives_in_the_shapes_change(http: httpx.AsyncClient) -> None:
    first = await http.get("/shapes/unflagged/", params={"offset": "-1"})
    params = {
        "offset": first.headers["electric-offset"],
        "handle": first.headers["electric-handle"],
        "live": "true",
    }
    live = asyncio.create_task(http.get("/shapes/unflagged/", params=params))
    mutation = {
        "type": "insert",
        "modified": {"name": "written", "flag": False},
        "syncMetadata": {"relation": ["public", "djapp_item"]},
    }
    written = await http.post("/write/", json=[mutation])
    assert written.status_code == 200, written.text
    response = await asyncio.wait_for(live, 10)
    changes = [m for m in response.json() if "key" in m]
    assert [m["value"]["name"] for m in changes] == ["written"]
    assert changes[0]["headers"]["txids"] == [written.json()["txid"]]


async def test_a_post_save_handler_in_a_sync_view_interrupts(http: httpx.AsyncClient) -> None:
    from djapp.models import TodoList

    headers = {"x-user": "cy"}
    first = await http.get("/shapes/mine/", params={"offset": "-1"}, headers=headers)
    assert first.status_code == 200 and rows(first) == {}
    params = {
        "offset": first.headers["electric-offset"],
        "handle": first.headers["electric-handle"],
        "live": "true",
    }
    waiting = asyncio.create_task(http.get("/shapes/mine/", params=params, headers=headers))
    sync = pysync.django.get_sync()
    deadline = time.monotonic() + 10
    while sync.waiting < 1:
        assert time.monotonic() < deadline, "the live request never waited"
        await asyncio.sleep(0.01)
    first_list = await sync_to_async(TodoList.objects.get)(title="a")
    joined = await http.get("/join/", params={"list": str(first_list.id)}, headers=headers)
    assert joined.status_code == 204
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 409, response.text


# -- under uvicorn ------------------------------------------------------------------------


class Uvicorn:
    def __init__(
        self, app: str, database_url: str, slot: str, command: list[str] | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        source = Path(pysync.__file__).resolve().parent.parent
        cwd = TESTS
        if command is not None:  # "{port}" in it is the port
            command = [part.replace("{port}", str(self.port)) for part in command]
            cwd = Path(app)  # a directory for the server's storage
        env = {
            **os.environ,
            "PYTHONPATH": f"{TESTS}{os.pathsep}{source}",
            "DJANGO_SETTINGS_MODULE": "djproject.settings",
            "DJANGO_TEST_DATABASE_URL": database_url,
            "DJANGO_TEST_SLOT": slot,
        }
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "uvicorn", app, "--port", str(self.port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                httpx.get(f"{self.base}/nothing/", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("uvicorn never listened")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.output()

    def output(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        stdout = self.process.stdout
        assert stdout is not None
        if stdout.closed:
            return self._output
        with stdout:
            self._output: str = stdout.read()
        return self._output


def slot_active(url: str, slot: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    return bool(row and row[0])


def follow_live_change(base: str, url: str) -> None:
    """The initial rows, then a live long-poll that receives an insert made meanwhile."""
    with httpx.Client(base_url=base, timeout=30) as client:
        first = client.get("/shapes/unflagged/", params={"offset": "-1"})
        assert first.status_code == 200, first.text
        assert [v["name"] for v in rows(first).values()] == ["one"]
        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        params = {"offset": offset, "handle": handle, "live": "true"}
        with psycopg.connect(url, autocommit=True) as conn:
            # The insert commits while the long-poll waits (the server's timeout is 20 s).
            start = time.monotonic()

            def insert() -> None:
                time.sleep(0.5)
                conn.execute(
                    "INSERT INTO djapp_item (name, flag, big, status) "
                    "VALUES ('live', false, 0, 'open')"
                )

            writer = threading.Thread(target=insert)
            writer.start()
            live = client.get("/shapes/unflagged/", params=params)
            writer.join()
        assert live.status_code == 200, live.text
        assert [v["name"] for v in rows(live).values()] == ["live"]
        assert time.monotonic() - start < 15


@pytest.mark.parametrize("app", ["application", "with_lifespan"])
def test_the_engine_runs_under_uvicorn(django_url: str, app: str) -> None:
    seed()
    slot = f"django_{app}"
    server = Uvicorn(f"djproject.asgi:{app}", django_url, slot)
    try:
        server.wait_listening()
        # Lazily: no engine until the first shape request; with the lifespan: at startup.
        assert slot_active(django_url, slot) == (app == "with_lifespan")
        follow_live_change(server.base, django_url)
        assert slot_active(django_url, slot)
    finally:
        output = server.stop()
    assert server.process.returncode == 0, output
    if app == "with_lifespan":  # stopped at shutdown: the slot is released
        assert not slot_active(django_url, slot), output


def test_the_engine_runs_under_runserver_in_its_own_thread(django_url: str, tmp_path: Path) -> None:
    """``manage.py runserver`` (WSGI, with its autoreloader): the engine starts on the
    first shape request in a thread of its own; long-polls and per-request shapes work."""
    seed()
    slot = "django_runserver"
    command = [sys.executable, "-m", "django", "runserver", "127.0.0.1:{port}"]
    server = Uvicorn(str(tmp_path), django_url, slot, command)
    try:
        server.wait_listening()
        assert not slot_active(django_url, slot)
        follow_live_change(server.base, django_url)
        mine = httpx.get(
            f"{server.base}/shapes/mine/",
            params={"offset": "-1"},
            headers={"x-user": "ann"},
            timeout=30,
        )
        assert mine.status_code == 200, mine.text
        assert [v["name"] for v in rows(mine).values()] == ["one"]
        assert slot_active(django_url, slot)
        # Server-Sent Events: the server's thread sends what the engine's loop streams.
        # (From the log's end: a stream that has data at once ends with it, as Electric's.)
        unflagged = f"{server.base}/shapes/unflagged/"
        first = httpx.get(unflagged, params={"offset": "-1"}, timeout=30)
        handle = first.headers["electric-handle"]
        end = httpx.get(
            unflagged, params={"offset": first.headers["electric-offset"], "handle": handle}
        )
        assert "electric-up-to-date" in end.headers, end.text
        sse = {
            "offset": end.headers["electric-offset"],
            "handle": handle,
            "live": "true",
            "live_sse": "true",
        }
        assert "sse one" in streamed_after_insert(unflagged, sse, {}, django_url, "sse one")
        # Live HTML, as htmx's SSE extension reads it.
        assert "sse two" in streamed_after_insert(
            f"{server.base}/live/items/", {}, {"x-user": "ann"}, django_url, "sse two"
        )
    finally:
        output = server.stop()
    assert "Traceback" not in output, output


def streamed_after_insert(
    url: str, params: dict[str, str], headers: dict[str, str], database_url: str, name: str
) -> str:
    """The event stream at ``url`` until it carries ``name``, an item inserted (in a list
    of ann's) once the stream is open."""
    received = ""
    asked = time.monotonic()
    with (
        httpx.stream("GET", url, params=params, headers=headers, timeout=30) as response,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        # The stream starts at once, not with its first event (nothing happens until the
        # insert below; the first keep-alive comes after 21 s).
        assert time.monotonic() - asked < 10
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        conn.execute(
            "INSERT INTO djapp_item (name, flag, big, status, todo_list_id) "
            "SELECT %s, false, 0, 'open', todo_list_id FROM djapp_member "
            "WHERE \"user\" = 'ann' LIMIT 1",
            (name,),
        )
        deadline = time.monotonic() + 20
        for chunk in response.iter_text():
            received += chunk
            if name in received or time.monotonic() > deadline:
                break
    return received


def test_manage_py_pysync_serve_runs_with_the_projects_settings(
    django_url: str, tmp_path: Path
) -> None:
    seed()
    slot = "django_manage"
    command = [sys.executable, "-m", "django", "pysync", "serve", "--port", "{port}"]
    server = Uvicorn(str(tmp_path), django_url, slot, command)
    try:
        server.wait_listening()
        assert httpx.get(f"{server.base}/v1/health", timeout=10).status_code == 200
        response = httpx.get(
            f"{server.base}/v1/shape",
            params={"table": "djapp_item", "where": "flag = false", "offset": "-1"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert [v["name"] for v in rows(response).values()] == ["one"]
        # settings.PYSYNC's slot, DATABASES' database, storage in the working directory.
        assert slot_active(django_url, slot)
        assert (tmp_path / ".pysync" / "storage").is_dir()
    finally:
        output = server.stop()
    assert "Traceback" not in output, output


def test_settings_pysync_becomes_the_servers_environment(django_url: str) -> None:
    from django.test import override_settings

    from pysync.django.management.commands.pysync import server_environment

    server = {"slot": "s1", "allow_delete": True, "mode": "http", "url": "http://x"}
    with override_settings(PYSYNC=server):
        env = server_environment()
    assert env["PYSYNC_SLOT"] == "s1" and env["PYSYNC_ALLOW_DELETE"] == "true"
    assert env["DATABASE_URL"].endswith("/django_tests")
    assert not any("MODE" in name or name == "PYSYNC_URL" for name in env)
    with override_settings(PYSYNC={"slots": "typo"}), pytest.raises(ValueError, match="slots"):
        server_environment()


async def test_electrics_api_behind_the_views_auth_serves_only_the_allowed_models(
    http: httpx.AsyncClient,
) -> None:
    path, user = "/electric/v1/shape", {"x-user": "ann"}
    params = {"table": "djapp_item", "where": "flag = false", "offset": "-1"}
    assert (await http.get(path, params=params)).status_code == 401
    response = await http.get(path, params=params, headers=user)
    assert response.status_code == 200, response.text
    assert [v["name"] for v in rows(response).values()] == ["one"]
    other = await http.get(path, params={**params, "table": "djapp_member"}, headers=user)
    assert other.status_code == 403
    assert "djapp_member" in other.text
    sneaky = {**params, "where": "todo_list_id IN (SELECT todo_list_id FROM djapp_member)"}
    assert (await http.get(path, params=sneaky, headers=user)).status_code == 403


def test_djangos_test_runner_runs_a_sync_test_case(django_url: str) -> None:
    output = run_django_tests(django_url, "django_test_runner", "djproject.sync_tests")
    assert "Ran 2 tests" in output and "\nOK" in output, output
    with psycopg.connect(django_url, autocommit=True) as conn:  # the test database is gone
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'test_django_tests'")
        assert left.fetchone() is None
