"""End to end: the published Electric TypeScript clients against ``pysync serve``.

Starts ``pysync serve`` on a fresh database of the session's Postgres and runs the
Node test suite in ``tests/e2e`` (``node --test``) against it. See tests/e2e/*.test.mjs
for what is covered (live sync, where/params, columns, replica full, resume, 409
recovery after TRUNCATE and DELETE, 100 concurrent streams, value parsing of every type,
--secret; and pglite-*.test.mjs: @electric-sql/pglite-sync syncing shapes into PGlite).

Run against one process (every file) and against ``pysync serve --workers 2`` (the
files about deletion, invalidation, DDL and subqueries, ``WORKER_FILES``: HTTP workers
must be one engine to the clients; the whole suite twice would double its minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pysync.postgres.cluster import PostgresCluster, free_port
from pysync.testing import drop_database
from serve_process import ServeProcess

E2E_DIR = Path(__file__).parent / "e2e"
SECRET = "e2e-secret-" + uuid.uuid4().hex[:8]
START_TIMEOUT = 60.0
NODE_TIMEOUT = 300.0
WORKER_FILES = ["refetch.test.mjs", "more.test.mjs", "subquery.test.mjs", "partitions.test.mjs"]
"""409 after TRUNCATE and DELETE (by handle, by definition, between two requests of a
stream, long-poll and SSE), ALTER TABLE, SSE, subquery shapes with moves, and shapes on
a partitioned table (moves between partitions, a detach's 409)."""


def _ensure_node_modules() -> None:
    """``npm ci`` unless every dependency of package.json is installed (a node_modules
    from before a dependency was added does not count)."""
    wanted = json.loads((E2E_DIR / "package.json").read_text())["dependencies"]
    if all((E2E_DIR / "node_modules" / name / "package.json").is_file() for name in wanted):
        return
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed for the end-to-end tests (Node.js >= 20)"
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=E2E_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture
def e2e_database(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database whose display defaults differ from pysync's session settings, so
    the type tests notice any value pysync formats in the database's defaults."""
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        for setting, value in (
            ("TimeZone", "Asia/Kolkata"),
            ("IntervalStyle", "postgres_verbose"),
            ("extra_float_digits", "0"),
            ("bytea_output", "escape"),
        ):
            admin.execute(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'")
    try:
        yield pg_cluster.url(name)
    finally:
        drop_database(pg_cluster, name)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("workers", "files"), [("0", ["."]), ("2", WORKER_FILES)], ids=["one-process", "workers"]
)
def test_typescript_client_end_to_end(
    e2e_database: str, tmp_path: Path, workers: str, files: list[str]
) -> None:
    node = shutil.which("node")
    assert node is not None, "node (>= 20) is needed for the end-to-end tests"
    _ensure_node_modules()
    port = free_port()
    server = ServeProcess(
        [
            "--database-url",
            e2e_database,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-dir",
            str(tmp_path / "storage"),
            "--allow-delete",
            "--long-poll-timeout",
            "5",
            "--secret",
            SECRET,
            "--log-level",
            "warning",
            "--workers",
            workers,
        ]
    )
    try:
        server.wait_ready(START_TIMEOUT)
        env = {
            **os.environ,
            "PYSYNC_URL": f"http://127.0.0.1:{port}",
            "PYSYNC_SECRET": SECRET,
            "DATABASE_URL": e2e_database,
        }
        started = time.monotonic()
        try:
            result = subprocess.run(
                # --test-force-exit: the client keeps a 60 s timer (a throttled
                # localStorage write of its up-to-date tracker) that would hold each file's
                # process open after its tests are done.
                [
                    node,
                    "--test",
                    "--test-concurrency=1",
                    "--test-force-exit",
                    "--test-reporter=spec",
                    *files,
                ],
                cwd=E2E_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=NODE_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"node --test did not finish in {NODE_TIMEOUT} s\n--- node output ---\n"
                f"{exc.stdout!s}\n{exc.stderr!s}\n--- pysync output ---\n{server.output()}"
            )
        elapsed = time.monotonic() - started
        report = f"--- node output ---\n{result.stdout}\n{result.stderr}\n--- pysync output ---\n{server.output()}"
        assert result.returncode == 0, f"node --test failed (exit {result.returncode}):\n{report}"
        assert "# fail 0" in result.stdout or "ℹ fail 0" in result.stdout, report
        assert server.process.poll() is None, f"pysync serve died during the tests:\n{report}"
        print(f"\nnode --test passed in {elapsed:.1f} s\n{result.stdout[-600:]}")
    finally:
        server.stop()
