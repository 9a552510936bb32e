"""nginx with ``docker/nginx.conf`` in front of ``pysync serve``: what a CDN does.

Many clients long-polling one shape cost pysync about one request per commit (request
collapsing with ``proxy_cache_lock`` on the full URL), every client still gets every
change, and a 409 with a handle rotation reaches every client and is followed. Counted
from nginx's access log, which says for each request whether it went to pysync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from follower import Follower, converge
from nginx_process import Nginx
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess

pytestmark = pytest.mark.slow

CLIENTS = 30
COMMITS = 8


class Stack:
    def __init__(self, origin: str, nginx: Nginx, database_url: str) -> None:
        self.origin = origin
        self.nginx = nginx
        self.database_url = database_url


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 0), (2, 0)")
    port = free_port()
    # The default long-poll timeout (20 s): docker/nginx.conf's lock outlasts it.
    server = ServeProcess(
        [
            "--database-url",
            database_url,
            "--port",
            str(port),
            "--storage-dir",
            str(tmp_path / "storage"),
            "--allow-delete",
            "--log-level",
            "warning",
        ]
    )
    try:
        server.wait_ready()
        nginx = Nginx(port, tmp_path / "nginx")
        try:
            yield Stack(f"http://127.0.0.1:{port}", nginx, database_url)
        finally:
            nginx.stop()
    finally:
        server.stop()


def rows(*values: tuple[int, int]) -> dict[str, dict[str, str]]:
    return {f'"public"."items"/"{i}"': {"id": str(i), "n": str(n)} for i, n in values}


def live_requests(lines: list[str]) -> tuple[int, int]:
    """(live requests nginx answered, those it passed to pysync)."""
    live = [line for line in lines if "live=true" in line]
    return len(live), sum(1 for line in live if "upstream=-" not in line)


async def test_clients_behind_nginx_cost_about_one_origin_request_per_commit(stack: Stack) -> None:
    followers = [
        Follower(f"{stack.nginx.url}/v1/shape", {"table": "items"}, name=f"c{i}").start()
        for i in range(CLIENTS)
    ]
    try:
        await converge(followers, lambda f: rows((1, 0), (2, 0)), what="initial sync through nginx")
        await asyncio.sleep(0.5)  # every client's first live request is waiting
        mark = len(stack.nginx.access_log())
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            for k in range(1, COMMITS + 1):
                conn.execute("UPDATE items SET n = %s WHERE id = 1", (k,))
                # Each client has every commit before the next: it saw every change.
                await converge(followers, lambda f, k=k: rows((1, k), (2, 0)), what=f"commit {k}")
        served, origin = live_requests(stack.nginx.access_log()[mark:])
        assert served >= CLIENTS * COMMITS, (served, stack.nginx.errors())
        # One request per commit reaches pysync (the lock holder); the rest wait for its
        # response. A little slack for a client that asked just as a response arrived.
        assert origin <= COMMITS + 2, (
            f"{origin} origin requests for {COMMITS} commits of {CLIENTS} clients"
        )
        for f in followers:
            f.check()
            assert f.refetches == 0
    finally:
        for f in followers:
            await f.close()


async def test_409_and_handle_rotation_pass_through_nginx(stack: Stack) -> None:
    followers = [
        Follower(f"{stack.nginx.url}/v1/shape", {"table": "items"}, name=f"c{i}").start()
        for i in range(10)
    ]
    try:
        await converge(followers, lambda f: rows((1, 0), (2, 0)), what="initial sync through nginx")
        old = followers[0].handle
        assert old is not None and all(f.handle == old for f in followers)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as http:
            deleted = await http.delete(
                f"{stack.origin}/v1/shape", params={"table": "items", "handle": old}
            )
            assert deleted.status_code == 202, deleted.text
            # The new shape (the one the 409 names), straight from pysync.
            fresh = await http.get(
                f"{stack.origin}/v1/shape", params={"table": "items", "offset": "-1"}
            )
        new = fresh.headers["electric-handle"]
        assert new != old
        await converge(
            followers,
            lambda f: rows((1, 0), (2, 0)) if f.handle == new else {},
            what="clients on the new handle",
        )
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            conn.execute("UPDATE items SET n = 7 WHERE id = 2")
        await converge(
            followers, lambda f: rows((1, 0), (2, 7)), what="a change after the rotation"
        )
        for f in followers:
            f.check()
            assert f.refetches == 1, (f.name, dict(f.statuses))
            assert f.statuses[409] == 1
            assert f.handle == new
    finally:
        for f in followers:
            await f.close()
