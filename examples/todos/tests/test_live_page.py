"""The live page (todos_app/live.py) in a real browser: headless Chromium driven by
playwright-core (live.mjs), against the app run as ``uvicorn todos_app.app:app`` in a
process of its own, which the test restarts halfway (same port, same storage) while the
pages stay open. And: the htmx files the page loads are the npm packages' own.

Needs Debian's chromium at /usr/bin/chromium and ``npm ci`` in examples/todos (.ci/run
installs both). Screenshots are kept in examples/todos/test-artifacts/."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pysync.postgres.cluster import free_port

HERE = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("PYSYNC_ARTIFACTS", HERE / "test-artifacts"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
VENDORED = {
    "htmx.min.js": ("htmx.org", "dist/htmx.min.js", "https://htmx.org"),
    "htmx-ext-sse.min.js": ("htmx-ext-sse", "dist/sse.min.js", "https://htmx.org/extensions/sse/"),
}


def vendored(package: str, dist: str, home: str) -> bytes:
    """The static file of an npm package's ``dist`` file: its LICENSE in a header."""
    base = HERE / "node_modules" / package
    version = json.loads((base / "package.json").read_text())["version"]
    license_text = (base / "LICENSE").read_text().strip().replace("*/", "* /")
    header = (
        f"/*! {package} {version}: {dist} of its npm package ({home}), with its LICENSE\n"
        f"    (made by examples/todos/tests/test_live_page.py: python3 tests/test_live_page.py)\n"
        f"\n{license_text}\n*/\n"
    )
    return header.encode() + (base / dist).read_bytes()


def test_the_htmx_files_are_the_npm_packages() -> None:
    assert (HERE / "node_modules" / "htmx.org").is_dir(), "run: npm ci --prefix examples/todos"
    for name, source in VENDORED.items():
        assert (HERE / "static" / name).read_bytes() == vendored(*source), (
            f"static/{name} is not package.json's version: run python3 tests/test_live_page.py"
        )


class Server:
    """``uvicorn todos_app.app:app`` on ``port``: the app's own Sync, on the test's
    database and a storage directory that outlives a restart."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "todos_app.app:app", "--port", str(self.port)]
        # An open event stream never ends by itself: uvicorn closes it after 1 s.
        command += ["--log-level", "warning", "--timeout-graceful-shutdown", "1"]
        self.process = subprocess.Popen(command, cwd=HERE, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the app exited"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/static/htmx.min.js").is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the app never listened")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the app did not stop on SIGTERM in 30 s") from None


@contextmanager
def serving(database_url: str, storage: Path) -> Iterator[Server]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYSYNC_STORAGE_DIR": str(storage),
        "TODOS_KEY": "live-page-test",
    }
    server = Server(free_port(), env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.browser
async def test_live_page_in_two_browsers_through_a_server_restart(
    pysync_database_url: str, tmp_path: Path
) -> None:
    node = shutil.which("node")
    assert node is not None, "node (>= 20) runs the browser test"
    assert Path(CHROMIUM).exists(), f"no {CHROMIUM}: apt-get install -y chromium"
    assert (HERE / "node_modules" / "playwright-core").is_dir(), (
        "run: npm ci --prefix examples/todos"
    )
    with serving(pysync_database_url, tmp_path / "storage") as server:
        process = await asyncio.create_subprocess_exec(
            node,
            "tests/live.mjs",
            cwd=HERE,
            env={
                **os.environ,
                "BASE_URL": f"http://127.0.0.1:{server.port}",
                "ARTIFACTS": str(ARTIFACTS),
                "CHROMIUM": CHROMIUM,
            },
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdin is not None and process.stdout is not None
        report: list[str] = []
        try:
            async with asyncio.timeout(180):
                async for raw in process.stdout:
                    line = raw.decode().rstrip("\n")
                    report.append(line)
                    if line == "restart-server":
                        started = time.monotonic()
                        await asyncio.to_thread(server.stop)
                        await asyncio.to_thread(server.start)
                        report.append(f"(the app restarted in {time.monotonic() - started:.1f} s)")
                        process.stdin.write(b"server-restarted\n")
                        await process.stdin.drain()
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail("the browser test did not finish in 180 s:\n" + "\n".join(report))
    print("\n".join(report))
    assert process.returncode == 0, "\n".join(report)
    assert "restart-server" in report
    assert (ARTIFACTS / "live-one.png").stat().st_size > 1000


if __name__ == "__main__":
    for name, source in VENDORED.items():
        (HERE / "static" / name).write_bytes(vendored(*source))
