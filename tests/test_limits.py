"""Bounded under abuse: idle and half-sent connections, stalled readers of big chunks,
system schemas, the secret on app routes, 409 headers, Electric's settings, start-up."""

from __future__ import annotations

import asyncio
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

import pysync
from engine_runner import Conn, drop_slot, poll
from http_support import Client, make_api
from pysync.engine import Engine
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess, stop_leftover_postgres

pytestmark = pytest.mark.slow


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def serve(
    database_url: str, tmp_path: Path, *extra: str, limit_files: int | None = None
) -> tuple[ServeProcess, str]:
    port = free_port()
    args = [
        "--database-url",
        database_url,
        "--port",
        str(port),
        "--storage-dir",
        str(tmp_path / "s"),
        "--long-poll-timeout",
        "2",
        *extra,
    ]
    server = ServeProcess(args, open_files=limit_files)
    server.wait_ready()
    return server, f"http://127.0.0.1:{port}"


def health_ok(base: str, timeout: float = 5) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def test_idle_and_half_sent_connections_do_not_take_the_server_down(
    database_url: str, tmp_path: Path
) -> None:
    server, base = serve(database_url, tmp_path, "--header-timeout", "2", limit_files=1024)
    sockets: list[socket.socket] = []
    try:
        # More idle connections than the process may hold descriptors.
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
            sockets.append(sock)
        assert health_ok(base), server.output()
        # A request head that never ends is closed after the header timeout.
        slow = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(10)
        started = time.monotonic()
        assert slow.recv(100) == b"", "a half-sent request head was kept open"
        assert time.monotonic() - started < 8
        slow.close()
        # An endless request line is cut off too.
        huge = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        huge.settimeout(10)
        huge.sendall(
            b"GET /v1/shape?table=t&offset=-1&where=" + b"x" * 100_000 + b" HTTP/1.1\r\n\r\n"
        )
        assert huge.recv(100).startswith(b"HTTP/1.1 431 "), "an endless request line was read"
        huge.close()
        assert health_ok(base)
        accept_errors = [line for line in server.lines if "accept" in line]
        assert len(accept_errors) < 5, accept_errors[:5]
    finally:
        for sock in sockets:
            sock.close()
        assert server.stop(), server.output()


def test_stalled_readers_of_big_chunks_hold_little_memory(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
    conn.execute(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 36000) g"
    )
    server, base = serve(database_url, tmp_path)
    pid = server.process.pid
    port = int(base.rsplit(":", 1)[1])
    sockets: list[socket.socket] = []
    try:
        first = httpx.get(f"{base}/v1/shape", params={"table": "big", "offset": "-1"}, timeout=60)
        assert first.status_code == 200 and len(first.content) > 9_000_000
        before = rss_kib(pid)
        request = b"GET /v1/shape?table=big&offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)  # and never read the response
            sockets.append(sock)
        time.sleep(3)
        grown = rss_kib(pid) - before
        # Building each 10 MB body in memory took about 1 GB here.
        print(f"150 stalled readers added {grown} KiB")
        assert grown < 100_000, f"150 stalled readers added {grown} KiB"
        assert health_ok(base)
    finally:
        for sock in sockets:
            sock.close()
        assert server.stop(), server.output()


async def test_system_schemas_are_not_found_and_never_altered(
    database_url: str, conn: Conn
) -> None:
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    client = Client(make_api(engine))

    def state() -> Any:
        published = conn.execute("SELECT count(*) FROM pg_publication_tables").fetchone()
        full = conn.execute("SELECT count(*) FROM pg_class WHERE relreplident = 'f'").fetchone()
        return published, full

    before = state()
    try:
        for table in (
            "pg_catalog.pg_class",
            "pg_class",
            "information_schema.sql_features",
            "pg_catalog.pg_authid",
            "pg_toast.pg_toast_2619",
        ):
            r = await client.shape(table=table, offset="-1")
            assert r.status_code == 400, (table, r.text)
            assert "does not exist" in r.json()["errors"]["table"][0]
        assert state() == before
    finally:
        await client.aclose()
        await engine.stop()


async def test_schema_without_usage_reveals_nothing(database_url: str, conn: Conn) -> None:
    conn.execute(
        "CREATE SCHEMA hidden; CREATE TABLE hidden.secrets (id int PRIMARY KEY, token text)"
    )
    conn.execute("CREATE ROLE outsider LOGIN REPLICATION PASSWORD 'pw'")
    try:
        url = psycopg.conninfo.make_conninfo(database_url, user="outsider", password="pw")
        engine = Engine(url, flush_interval=0.02, slot="outsider", publication="outsider")
        conn.execute("GRANT CREATE ON DATABASE " + conn.info.dbname + " TO outsider")
        await engine.start()
        client = Client(make_api(engine))
        try:
            r = await client.shape(table="hidden.secrets", offset="-1", columns="id,nope")
            assert r.status_code == 400
            assert r.json()["errors"] == {
                "table": [
                    'Table "hidden"."secrets" does not exist. If the table name contains capitals or '
                    "special characters you must quote it."
                ]
            }
        finally:
            await client.aclose()
            await engine.stop()
    finally:
        conn.execute("DROP PUBLICATION IF EXISTS outsider")
        drop_slot(conn, "outsider")
        conn.execute("REVOKE ALL ON DATABASE " + conn.info.dbname + " FROM outsider")
        conn.execute("DROP OWNED BY outsider; DROP ROLE outsider")


async def test_table_the_role_cannot_publish_is_a_503_without_details(
    database_url: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute("CREATE TABLE owned (id int PRIMARY KEY, v text)")
    conn.execute("CREATE ROLE reader LOGIN REPLICATION PASSWORD 'pw'")
    conn.execute("GRANT SELECT ON owned TO reader")
    conn.execute("GRANT CREATE ON DATABASE " + conn.info.dbname + " TO reader")
    try:
        url = psycopg.conninfo.make_conninfo(database_url, user="reader", password="pw")
        engine = Engine(url, flush_interval=0.02, slot="reader", publication="reader")
        await engine.start()
        client = Client(make_api(engine))
        try:
            r = await client.shape(table="owned", offset="-1")
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] and r.headers["electric-internal-known-error"] == "true"
            body = r.text.lower()
            assert "reader" not in body and "alter" not in body, r.text  # no role, no SQL
            # The operator's log says who and what to run.
            logged = " ".join(rec.getMessage() for rec in caplog.records)
            assert 'role "reader" cannot publish table "public"."owned"' in logged
            assert 'ALTER PUBLICATION "reader" ADD TABLE "public"."owned"' in logged
            assert (await client.raw("/v1/health")).status_code == 200
        finally:
            await client.aclose()
            await engine.stop()
    finally:
        conn.execute("DROP PUBLICATION IF EXISTS reader")
        drop_slot(conn, "reader")
        conn.execute("REVOKE ALL ON DATABASE " + conn.info.dbname + " FROM reader")
        conn.execute("DROP OWNED BY reader; DROP ROLE reader")


async def test_secret_applies_to_app_routes(database_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    sync = pysync.Sync(database_url, secret="s3cret", long_poll_timeout=1, in_memory=True)
    app = Starlette(
        routes=[
            sync.route("/t", pysync.shape("t")),
            sync.route("/open", pysync.shape("t"), check_secret=False),
        ]
    )
    await sync.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://t"
        ) as http:
            assert (await http.get("/t", params={"offset": "-1"})).status_code == 401
            assert (
                await http.get("/t", params={"offset": "-1", "secret": "nope"})
            ).status_code == 401
            assert (
                await http.get("/t", params={"offset": "-1", "secret": "s3cret"})
            ).status_code == 200
            assert (await http.get("/open", params={"offset": "-1"})).status_code == 200
    finally:
        await sync.stop()


async def test_every_409_names_a_handle(database_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    client = Client(make_api(engine, allow_delete=True))
    try:
        handle, offset, _ = await client.sync(table="t")
        waiting = asyncio.create_task(
            client.shape(table="t", offset=offset, handle=handle, live="true")
        )
        await poll(lambda: len(client.api.interrupts) == 1, 10, "the live request to wait")
        deleted = await client.raw("/v1/shape", "DELETE", params={"handle": handle})
        assert deleted.status_code == 202
        r = await waiting
        assert r.status_code == 409
        assert r.headers.get("electric-handle") not in (None, "", handle)
        stale = await client.shape(table="t", offset=offset, handle=handle)
        assert (
            stale.status_code == 409
            and stale.headers["electric-handle"] == r.headers["electric-handle"]
        )
    finally:
        await client.aclose()
        await engine.stop()


def test_electric_settings(database_url: str, conn: Conn, tmp_path: Path) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    conn.execute("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 300) g")
    port = free_port()
    server = ServeProcess(
        [
            "--database-url",
            database_url,
            "--port",
            str(port),
            "--storage-dir",
            str(tmp_path / "s"),
            "--chunk-bytes",
            "4000",
        ],
        env={
            "ELECTRIC_CACHE_MAX_AGE": "7",
            "ELECTRIC_CACHE_STALE_AGE": "11",
            # Meaningless to pysync: accepted, each named once at start.
            "ELECTRIC_SHAPE_DB_SYNCHRONOUS": "NORMAL",
            "ELECTRIC_HNY_API_KEY": "k",
            "ELECTRIC_SHAPE_HIBERNATE_AFTER": "30s",
        },
    )
    server.wait_ready()
    try:
        noticed = [line for line in server.output().splitlines() if "has no effect" in line]
        assert [line.split("pysync: ", 1)[1].split()[0] for line in noticed] == [
            "ELECTRIC_SHAPE_HIBERNATE_AFTER",
            "ELECTRIC_SHAPE_DB_SYNCHRONOUS",
            "ELECTRIC_HNY_API_KEY",
        ], server.output()
        base = f"http://127.0.0.1:{port}/v1/shape"
        r = httpx.get(base, params={"table": "t", "offset": "-1"})
        assert r.headers["electric-offset"] == "0_0" and len(r.content) < 8000
        chunks = 1
        offset, handle = r.headers["electric-offset"], r.headers["electric-handle"]
        while "electric-up-to-date" not in r.headers:
            r = httpx.get(base, params={"table": "t", "offset": offset, "handle": handle})
            offset = r.headers["electric-offset"]
            chunks += 1
        assert chunks > 5  # 300 rows of ~150 bytes in 4,000-byte chunks
        assert r.headers["cache-control"] == "public, max-age=7, stale-while-revalidate=11"
    finally:
        assert server.stop(), server.output()


@pytest.mark.postgres  # a Postgres of its own
def test_exported_private_database_url_starts_the_private_postgres(tmp_path: Path) -> None:
    data_dir = tmp_path / "pysync"
    port = free_port()
    first = ServeProcess(["--data-dir", str(data_dir), "--port", str(port)])
    try:
        first.wait_ready()
        url = first.database_url
    finally:
        assert first.stop(), first.output()
    # As the hint invites: export DATABASE_URL=<the URL pysync printed>, start again.
    again = ServeProcess(
        ["--data-dir", str(data_dir), "--port", str(port)], env={"DATABASE_URL": url}
    )
    try:
        again.wait_ready()
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health").json() == {"status": "active"}
    finally:
        assert again.stop(), again.output()
        stop_leftover_postgres(data_dir)


@pytest.mark.parametrize("case", ["unreachable", "bad setting", "bad password", "port taken"])
def test_start_up_failures_are_one_line(tmp_path: Path, case: str, database_url: str) -> None:
    env: dict[str, str] = {}
    code = 1
    taken = socket.socket()
    if case == "unreachable":
        args = [
            "--database-url",
            f"postgresql://nobody@127.0.0.1:{free_port()}/x",
            "--port",
            str(free_port()),
            "--storage-dir",
            str(tmp_path / "s"),
        ]
    elif case == "bad setting":
        args = ["--database-url", "postgresql://x@127.0.0.1/x", "--port", str(free_port())]
        env = {"ELECTRIC_MAX_CONCURRENT_REQUESTS": "lots"}
        code = 2
    elif case == "bad password":
        url = psycopg.conninfo.make_conninfo(database_url, password="not the password")
        args = [
            "--database-url",
            url,
            "--port",
            str(free_port()),
            "--storage-dir",
            str(tmp_path / "s"),
        ]
    else:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [
            "--database-url",
            database_url,
            "--port",
            str(taken.getsockname()[1]),
            "--storage-dir",
            str(tmp_path / "s"),
        ]
    try:
        server = ServeProcess(args, env=env)
        assert server.wait_exit(60) == code
    finally:
        taken.close()
    output = server.output()
    assert "Traceback" not in output, output
    errors = [line for line in server.lines if line.startswith("pysync: ")]
    assert len(errors) == 1, output
    expected = {
        "unreachable": "cannot connect to the database at 127.0.0.1",
        "bad setting": "ELECTRIC_MAX_CONCURRENT_REQUESTS",
        "bad password": "password authentication failed",
        "port taken": "cannot listen on 127.0.0.1",
    }[case]
    assert expected in errors[0], errors[0]


@pytest.fixture(autouse=True)
def _files() -> Iterator[None]:
    """The test process itself opens 1,100 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield


BAD_WHERE: dict[str, dict[str, str]] = {
    "huge numeric literal": {"where": "n > 1e1000000000"},
    "huge numeric param": {"where": "n::numeric > $1::numeric", "params[1]": "1e1000000000"},
    "huge numeric cast": {"where": "n::numeric > '1e1000000000'::numeric"},
    "60 nested parentheses": {"where": "(" * 60 + "n = 1" + ")" * 60},
    "NOT x5000": {"where": "NOT " * 5000 + "true"},
    "NUL in a literal": {"where": "title = 'a\x00b'"},
    "NUL in a param": {"where": "title = $1", "params[1]": "a\x00b"},
    "division by zero on rows": {"where": "n / 0 = 1"},
}


@pytest.mark.parametrize("case", sorted(BAD_WHERE))
async def test_hostile_where_is_a_quick_400_and_the_server_keeps_answering(
    database_url: str, conn: Conn, case: str
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int, title text)")
    conn.execute("INSERT INTO t SELECT g, g, 'x' FROM generate_series(1, 10) g")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    client = Client(make_api(engine))
    try:
        started = time.monotonic()
        request = asyncio.create_task(client.shape(table="t", offset="-1", **BAD_WHERE[case]))
        health_times = []
        while not request.done():
            asked = time.monotonic()
            assert (await client.raw("/v1/health")).status_code == 200
            health_times.append(time.monotonic() - asked)
            await asyncio.sleep(0.05)
        response = await request
        assert response.status_code == 400, response.text[:300]
        assert set(response.json()) == {"message", "errors"} and response.json()["errors"].get(
            "where"
        )
        assert time.monotonic() - started < 5
        assert max(health_times, default=0) < 1.0, "the server stopped answering meanwhile"
    finally:
        await client.aclose()
        await engine.stop()


async def test_long_offsets_cursors_and_params_are_answered(database_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    client = Client(make_api(engine))
    try:
        handle, offset, _ = await client.sync(table="t")
        r = await client.shape(table="t", offset="1" * 5000 + "_0", handle=handle)
        assert r.status_code == 400 and r.json()["errors"] == {"offset": ["has invalid format"]}
        r = await client.shape(
            table="t", offset=offset, handle=handle, live="true", cursor="9" * 5000
        )
        assert r.status_code == 200 and int(r.headers["electric-cursor"]) > 0
        chain = " AND ".join(["n <> 0"] * 2000)  # long enough to compile off the event loop
        r = await client.shape(table="t", offset="-1", where=chain)
        assert r.status_code == 200, r.text[:300]
        params = {f"params[{i}]": str(i) for i in range(1, 1001)}
        where = "n IN (" + ", ".join(f"${i}" for i in range(1, 1001)) + ")"
        r = await client.shape(table="t", offset="-1", where=where, **params)
        assert r.status_code == 200, r.text[:300]
    finally:
        await client.aclose()
        await engine.stop()


async def test_huge_subset_body_does_not_block_other_requests(
    database_url: str, conn: Conn
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    client = Client(make_api(engine))
    try:
        handle, offset, _ = await client.sync(table="t", log="changes_only")
        body = {"where": "n IN (" + ", ".join(str(i) for i in range(300_000)) + ")"}
        request = asyncio.create_task(
            client.raw(
                "/v1/shape",
                "POST",
                params={"table": "t", "offset": offset, "handle": handle, "log": "changes_only"},
                json=body,
            )
        )
        while not request.done():
            asked = time.monotonic()
            assert (await client.raw("/v1/health")).status_code == 200
            assert time.monotonic() - asked < 1.0
            await asyncio.sleep(0.05)
        response = await request
        assert response.status_code == 400, response.text[:300]
        assert "subset" in response.json()["errors"]
    finally:
        await client.aclose()
        await engine.stop()


def test_a_large_body_sent_with_its_head_is_not_a_large_head(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    """The 64 KiB bound is the request head's: a POST subset body of 200 KB that arrives
    in the same read as its head is served (it was a 431 about the headers)."""
    conn.execute("CREATE TABLE posted (id int PRIMARY KEY, title text)")
    conn.execute("INSERT INTO posted VALUES (1, 'a')")
    server, base = serve(database_url, tmp_path)
    try:
        first = httpx.get(
            f"{base}/v1/shape", params={"table": "posted", "offset": "-1", "log": "changes_only"}
        )
        assert first.status_code == 200, first.text
        query = (
            f"table=posted&log=changes_only&offset={first.headers['electric-offset']}"
            f"&handle={first.headers['electric-handle']}"
        )
        body = b'{"where": "title <> \'' + b"x" * 200_000 + b"'\"}"
        head = (
            f"POST /v1/shape?{query} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
            sock.settimeout(30)
            sock.sendall(head + body)  # one write: the head and the body in one read
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert b'{"id" : "1", "title" : "a"}' in answer
    finally:
        assert server.stop(), server.output()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_huge_post_body_is_refused_without_being_held(
    database_url: str, conn: Conn, tmp_path: Path, framing: str
) -> None:
    """A POST subset body over the 8 MiB limit is a 413 as soon as that is known (its
    content-length, or 8 MiB read): it was read whole into memory first, so a few
    requests of a few hundred MB each could exhaust the server's memory."""
    conn.execute("CREATE TABLE posted (id int PRIMARY KEY)")
    server, base = serve(database_url, tmp_path)
    pid = server.process.pid
    size = 200 * 1024 * 1024
    piece = b" " * (1 << 20)
    try:
        framed = (
            f"content-length: {size}\r\n"
            if framing == "content-length"
            else "transfer-encoding: chunked\r\n"
        )
        head = (
            "POST /v1/shape?table=posted&offset=-1 HTTP/1.1\r\nHost: x\r\n"
            f"content-type: application/json\r\n{framed}\r\n"
        ).encode()
        if framing == "chunked":
            piece = b"%x\r\n%s\r\n" % (len(piece), piece)
        before = rss_kib(pid)
        grown = 0
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
            sock.settimeout(30)
            sock.sendall(head)
            for _ in range(size // (1 << 20)):
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # answered
                try:
                    sock.sendall(piece)
                except OSError:
                    break  # answered and closed
                grown = max(grown, rss_kib(pid) - before)
            else:
                sock.sendall(b"0\r\n\r\n" if framing == "chunked" else b"")
            answer = b""
            while not answer.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, answer[:300]
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert b"Request body too large" in answer
        # Reading the 200 MB whole grew it by about 150 MB.
        assert grown < 40_000, f"a 200 MB body grew the server by {grown} KiB"
        assert health_ok(base)
    finally:
        assert server.stop(), server.output()


def test_a_client_that_leaves_in_the_middle_of_its_body_is_no_error(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    """A POST whose client goes before the whole body came (a dropped connection, an
    ``Expect: 100-continue`` never followed) is nothing to log as an error: it was an
    'error serving POST /v1/shape' with a ClientDisconnect traceback, which any client
    could write into the log as often as it liked."""
    conn.execute("CREATE TABLE posted (id int PRIMARY KEY)")
    server, base = serve(database_url, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    try:
        for head in (
            b'content-length: 100\r\n\r\n{"where":',
            b"expect: 100-continue\r\ncontent-length: 2\r\n\r\n",
            b'transfer-encoding: chunked\r\n\r\n3\r\n{"w\r\n',
        ):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(
                    b"POST /v1/shape?table=posted&offset=-1 HTTP/1.1\r\nHost: x\r\n"
                    b"content-type: application/json\r\n" + head
                )
                time.sleep(0.3)  # the request is being read when the client goes
        time.sleep(0.5)
        assert health_ok(base)
        assert "Traceback" not in server.output(), server.output()
        assert "error serving" not in server.output(), server.output()
    finally:
        assert server.stop(), server.output()
