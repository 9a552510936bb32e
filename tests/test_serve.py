"""``pysync serve`` on its private Postgres: the README's main command, end to end.

Starts it with no database URL, creates a table through the printed DATABASE_URL,
syncs a shape over HTTP, stops it with SIGTERM (slot kept, logs flushed, Postgres
stopped), starts it again and resumes with the same handle and offset.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pysync.postgres.cluster import PostgresCluster, free_port
from serve_process import ServeProcess, stop_leftover_postgres


def start(data_dir: Path, port: int) -> ServeProcess:
    server = ServeProcess(
        ["--data-dir", str(data_dir), "--port", str(port), "--long-poll-timeout", "2"]
    )
    server.wait_ready()
    return server


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "pysync"
    stop_leftover_postgres(tmp_path / "pysync")


def follow(base: str, params: dict[str, str]) -> tuple[str, str, list[dict[str, object]]]:
    """Catch up from offset -1 as a client does; (handle, offset, messages)."""
    messages: list[dict[str, object]] = []
    response = httpx.get(base, params={**params, "offset": "-1"})
    handle = response.headers["electric-handle"]
    while True:
        assert response.status_code == 200, response.text
        messages += response.json()
        offset = response.headers["electric-offset"]
        if "electric-up-to-date" in response.headers:
            return handle, offset, messages
        response = httpx.get(base, params={**params, "offset": offset, "handle": handle})


@pytest.mark.postgres  # a Postgres of its own
def test_serve_on_private_postgres_survives_restart(data_dir: Path) -> None:
    port = free_port()
    server = start(data_dir, port)
    base = f"http://127.0.0.1:{port}/v1/shape"
    try:
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE todos (id int PRIMARY KEY, title text)")
            conn.execute("INSERT INTO todos VALUES (1, 'first')")
        handle, offset, messages = follow(base, {"table": "todos"})
        assert [m["value"] for m in messages if "key" in m] == [{"id": "1", "title": "first"}]
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO todos VALUES (2, 'second')")
        live = httpx.get(
            base, params={"table": "todos", "offset": offset, "handle": handle, "live": "true"}
        )
        assert [m["value"]["id"] for m in live.json() if "key" in m] == ["2"]
        offset = live.headers["electric-offset"]
    finally:
        assert server.stop(), server.output()
    assert not PostgresCluster(data_dir / "postgres").running, "Postgres left running"

    # Written while pysync is down: the kept slot delivers it after the restart.
    again = start(data_dir, port)
    try:
        with psycopg.connect(again.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO todos VALUES (3, 'while down')")
        deadline = time.monotonic() + 30
        ids: list[str] = []
        while "3" not in ids:
            assert time.monotonic() < deadline, "change written while down never arrived"
            response = httpx.get(
                base, params={"table": "todos", "offset": offset, "handle": handle, "live": "true"}
            )
            assert response.status_code == 200, response.text  # same handle: not a 409
            ids += [m["value"]["id"] for m in response.json() if "key" in m]
            offset = response.headers["electric-offset"]
        assert ids == ["3"]
    finally:
        assert again.stop(), again.output()
