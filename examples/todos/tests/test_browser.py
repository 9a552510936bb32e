"""The example page in a real browser (headless Chromium driven by playwright-core, see
browser.mjs), against the app served on a port with the test's Sync and database.

Needs Debian's chromium at /usr/bin/chromium and ``npm ci`` in examples/todos (.ci/run
installs both). Screenshots are kept in examples/todos/test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from pysync.postgres.cluster import free_port

HERE = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("PYSYNC_ARTIFACTS", HERE / "test-artifacts"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.mark.browser
async def test_two_users_in_a_real_browser(pysync_app: FastAPI, pysync_database_url: str) -> None:
    node = shutil.which("node")
    assert node is not None, "node (>= 20) runs the browser test"
    assert Path(CHROMIUM).exists(), f"no {CHROMIUM}: apt-get install -y chromium"
    assert (HERE / "node_modules" / "playwright-core").is_dir(), (
        "run: npm ci --prefix examples/todos"
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(pysync_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the app did not start"
            await asyncio.sleep(0.02)
        process = await asyncio.create_subprocess_exec(
            node,
            "tests/browser.mjs",
            cwd=HERE,
            env={
                **os.environ,
                "BASE_URL": f"http://127.0.0.1:{port}",
                "DATABASE_URL": pysync_database_url,
                "ARTIFACTS": str(ARTIFACTS),
                "CHROMIUM": CHROMIUM,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 240)
        except TimeoutError:
            process.kill()
            output, _ = await process.communicate()
            pytest.fail(f"the browser test did not finish in 240 s:\n{output.decode()}")
    finally:
        server.should_exit = True
        await serving
    report = output.decode()
    print(report)
    assert process.returncode == 0, report
    assert (ARTIFACTS / "todos-ann.png").stat().st_size > 1000 and (
        ARTIFACTS / "todos-bob.png"
    ).stat().st_size > 1000


def test_the_checked_in_bundle_is_built_from_its_source(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    rebuilt = tmp_path / "app.js"
    subprocess.run([node, "web/build.mjs", str(rebuilt)], cwd=HERE, check=True, timeout=120)
    assert rebuilt.read_bytes() == (HERE / "static" / "app.js").read_bytes(), (
        "static/app.js is stale: run `npm run build` in examples/todos and commit it"
    )
