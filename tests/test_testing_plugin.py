"""``pysync.testing`` in a project with no pytest configuration at all (pytest-asyncio in
its default strict mode), and ``Sync.configure``, which lets an app's module-level Sync
run on a test's database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pysync

TESTS = """
import psycopg

pytest_plugins = ["pysync.testing"]


async def test_a_shape(pysync_client, pysync_database_url):
    with psycopg.connect(pysync_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (7)")
    shape = await pysync_client.shape("items")
    assert [row["id"] for row in shape.rows.values()] == [7]
    await shape.close()
"""


def test_async_tests_with_pysync_fixtures_need_no_asyncio_settings(tmp_path: Path) -> None:
    (tmp_path / "test_items.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSYNC_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_items.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "1 passed" in output, output


async def test_configure_replaces_the_settings_of_a_sync_not_started(database_url: str) -> None:
    sync = pysync.Sync("postgresql://nowhere.invalid/db", env=False)
    sync.configure(database_url, in_memory=True, env=False, long_poll_timeout=3)
    assert sync.settings.long_poll_timeout == 3 and sync.in_memory
    with pytest.raises(TypeError, match="unknown Sync setting"):
        sync.configure(database_url, long_pole_timeout=3)
    async with sync:
        assert sync.database_url == database_url
        with pytest.raises(RuntimeError, match="before it starts"):
            sync.configure(database_url)
