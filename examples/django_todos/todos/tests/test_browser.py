"""The page in a real browser: Ann and Bob in two contexts of headless Chromium (driven
by playwright-core, see browser.mjs), against the project served by uvicorn in a thread
of this process, on the test database, with the engine in uvicorn's event loop.

Needs Debian's chromium at /usr/bin/chromium (or ``CHROMIUM``) and ``npm ci`` in
examples/django_todos. Tagged ``browser``: ``manage.py test --exclude-tag browser``
skips it. Screenshots are left in examples/django_todos/test-artifacts/."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from django.core.asgi import get_asgi_application
from django.db import connection
from django.test import SimpleTestCase, override_settings, tag

import pysync.django
from pysync.django.engine import database_url
from pysync.django.testing import SyncTestCase
from pysync.postgres.cluster import free_port
from todos.tests.support import todo_list, user

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
ARTIFACTS = Path(os.environ.get("PYSYNC_ARTIFACTS", PROJECT / "test-artifacts"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class Server:
    """uvicorn serving the project in a thread; the lifespan starts and stops the engine."""

    def __init__(self) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            pysync.django.asgi(get_asgi_application()),
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            lifespan="on",
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn")

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in 60 s"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@tag("browser")
@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
class BrowserTests(SyncTestCase):
    server: ClassVar[Server]
    pysync_settings: ClassVar[dict[str, Any]] = {"log_level": "warning"}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # the engine is made for the test database ...
        cls.server = Server()
        cls.server.start()  # ... and started by uvicorn's lifespan

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()  # the lifespan stops the engine, in uvicorn's loop
        super().tearDownClass()

    def test_two_users_share_a_list_and_write_to_it(self) -> None:
        node = shutil.which("node")
        self.assertIsNotNone(node, "node (>= 20) runs the browser test")
        self.assertTrue(Path(CHROMIUM).exists(), f"no {CHROMIUM}: apt-get install -y chromium")
        self.assertTrue(
            (PROJECT / "node_modules" / "playwright-core").is_dir(),
            "run: npm ci --prefix examples/django_todos",
        )
        ann, bob = user("ann"), user("bob")
        user("cat")
        todo_list(ann, "Ann's groceries", ["milk", "bread"])
        todo_list(bob, "Bob's chores", ["dishes", "laundry"])
        done = subprocess.run(
            [str(node), str(HERE / "browser.mjs")],
            cwd=PROJECT,
            env={
                **os.environ,
                "BASE_URL": f"http://127.0.0.1:{self.server.port}",
                "DATABASE_URL": database_url(connection.settings_dict),
                "ARTIFACTS": str(ARTIFACTS),
                "CHROMIUM": CHROMIUM,
                "PASSWORD": "pw",
            },
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        report = done.stdout + done.stderr
        print(report)
        self.assertEqual(done.returncode, 0, report)
        for name in ("todos-ann.png", "todos-bob.png"):
            self.assertGreater((ARTIFACTS / name).stat().st_size, 1000)


@tag("browser")
class BundleTests(SimpleTestCase):  # type: ignore[misc]  # Django ships no types
    def test_the_checked_in_bundle_is_built_from_its_source(self) -> None:
        node = shutil.which("node")
        self.assertIsNotNone(node)
        with tempfile.TemporaryDirectory() as tmp:
            rebuilt = Path(tmp) / "app.js"
            subprocess.run(
                [str(node), "web/build.mjs", str(rebuilt)], cwd=PROJECT, check=True, timeout=120
            )
            self.assertEqual(
                rebuilt.read_bytes(),
                (PROJECT / "static" / "app.js").read_bytes(),
                "static/app.js is stale: run `npm run build` in examples/django_todos, commit it",
            )
