"""No password or secret where other users or log readers see it: URLs are logged
without their password, ``pysync serve`` prints its private Postgres' URL without it
(libpq reads it from a 0600 passfile the URL names), and the API secret can be given
in a file instead of on the command line (``/proc/PID/cmdline`` is world-readable)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import psycopg
import pytest

import pysync
from pysync.postgres.cluster import PostgresCluster, free_port
from pysync.redact import redacted
from serve_process import ServeProcess, stop_leftover_postgres


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:pw%40x@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("http://user:pw@sync:3000/v1", "http://user:***@sync:3000/v1"),
        (
            "postgresql://app@db/app?sslmode=require&password=pw",
            "postgresql://app@db/app?sslmode=require&password=***",
        ),
        ("host=db user=app password='p w' dbname=app", "host=db user=app password=*** dbname=app"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
    ],
)
def test_urls_are_logged_without_their_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


@pytest.mark.postgres  # a Postgres of its own
def test_serve_shows_no_password_and_reads_its_secret_from_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "pysync"
    secret_file = tmp_path / "secret"
    secret_file.write_text("the-api-secret\n")
    port = free_port()
    server = ServeProcess(
        ["--data-dir", str(data_dir), "--port", str(port), "--secret-file", str(secret_file)]
    )
    try:
        server.wait_ready()
        password = PostgresCluster(data_dir / "postgres").password
        assert password not in server.output()
        # The printed URL is what psql "$DATABASE_URL" takes: it connects.
        url = server.database_url
        assert "passfile=" in url and password not in url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        base = f"http://127.0.0.1:{port}/v1/shape"
        assert httpx.get(base, params={"table": "t", "offset": "-1"}).status_code == 401
        allowed = httpx.get(base, params={"table": "t", "offset": "-1", "secret": "the-api-secret"})
        assert allowed.status_code == 200, allowed.text
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert b"the-api-secret" not in cmdline
        assert "--secret on the command line" not in server.output()
    finally:
        assert server.stop(), server.output()
        stop_leftover_postgres(data_dir)


def test_secrets_on_the_command_line_are_warned_about(database_url: str, tmp_path: Path) -> None:
    assert ":" in database_url.split("@")[0].split("//")[1]  # a password in the URL
    server = ServeProcess.on(database_url, free_port(), tmp_path / "s", "--secret", "visible")
    try:
        assert server.output().count("--secret on the command line is readable") == 1
        assert server.output().count("the password in --database-url is readable") == 1
    finally:
        server.stop()  # quiet (--log-level warning): no "shutdown complete" to check


@pytest.mark.postgres  # a Postgres of its own
async def test_an_embedded_sync_logs_no_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sync = pysync.Sync.dev(data_dir=tmp_path / "dev", env=False)
    try:
        async with sync:
            password = PostgresCluster(tmp_path / "dev" / "postgres").password
            assert password in sync.database_url  # the app's own, to connect with
    finally:
        stop_leftover_postgres(tmp_path / "dev")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "DATABASE_URL=postgresql://postgres@127.0.0.1:" in logged
    assert password not in logged


async def test_http_mode_logs_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sync = pysync.Sync(mode="http", url="http://user:hunter2@127.0.0.1:9/", env=False)
    async with sync:
        pass
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "forwarding shape requests to http://user:***@127.0.0.1:9/" in logged
    assert "hunter2" not in logged
