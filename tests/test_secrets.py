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
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
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


async def test_health_details_need_the_secret(database_url: str) -> None:
    """With a secret, ``/v1/health`` tells anyone the status (a probe needs no more, and
    Electric's says no more); its warnings and reasons, which name tables and paths,
    only to who gives the secret."""
    engine = Engine(database_url)
    await engine.start()
    try:
        # what pysync says when a table's replica identity is set back from FULL
        engine.replica_identity.warnings[("public", "payroll")] = (
            'replica identity of "public"."payroll" was set back; restoring FULL'
        )
        app = ShapeAPI(engine, secret="s3cret").app()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://t"
        ) as http:
            anyone = await http.get("/v1/health")
            assert anyone.status_code == 200 and anyone.json() == {"status": "active"}
            told = await http.get("/v1/health", params={"secret": "s3cret"})
            assert told.json()["warnings"] == engine.warnings
            wrong = await http.get("/v1/health", params={"secret": "guess"})
            assert wrong.json() == {"status": "active"}
        open_app = ShapeAPI(engine).app()  # no secret: everyone sees the details
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(open_app), base_url="http://t"
        ) as http:
            assert (await http.get("/v1/health")).json()["warnings"] == engine.warnings
    finally:
        await engine.stop()
