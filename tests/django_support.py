"""Django configured once per test session on a database of the suite's Postgres, the
test models' tables created in it, and a client following shapes as Electric's do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from django.db.models import Model

from pysync.client.messages import ChangeMessage, ControlMessage, EventMessage, decode_batch
from pysync.client.tags import TagTracker
from pysync.postgres.cluster import PostgresCluster

DATABASE = "django_tests"
TESTS = Path(__file__).resolve().parent
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
"""djapp's templates (a live_html row)."""


def django_database(cluster: PostgresCluster) -> str:
    """Configure Django (once) on the database ``django_tests``; its URL."""
    import django
    from django.conf import settings

    url = cluster.url(DATABASE)
    if settings.configured:
        return url
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    parts = urlsplit(url)
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": DATABASE,
                "USER": parts.username or "",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "",
                "PORT": str(parts.port or ""),
            }
        },
        INSTALLED_APPS=["pysync.django", "djapp"],
        ROOT_URLCONF="djproject.urls",
        ALLOWED_HOSTS=["*"],
        PYSYNC={"in_memory": True, "env": False, "slot": "django_views"},
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        TEMPLATES=TEMPLATES,
    )
    django.setup()
    return url


def create_tables(*models: type[Model]) -> None:
    """(Re)create the tables of ``models``, in order."""
    from django.db import connection

    with connection.schema_editor() as editor:
        for model in reversed(models):
            editor.execute(f'DROP TABLE IF EXISTS "{model._meta.db_table}" CASCADE')
        for model in models:
            editor.create_model(model)


def run_django_tests(url: str, slot: str, *labels: str) -> str:
    """``python -m django test labels`` on the project tests/djproject (its settings
    from the environment: a test database made from ``url``, dropped after); its output.
    Fails unless the run passes."""
    import pysync

    source = Path(pysync.__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{source}",
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
        "DJANGO_TEST_DATABASE_URL": url,
        "DJANGO_TEST_SLOT": slot,
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "test", *labels, "-v", "2", "--noinput"],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


class ShapeFollower:
    """Follows one shape route as a client does: initial sync, then changes (non-live
    requests), refetching on 409/must-refetch, dropping the rows a move-out names (by their
    tags, as Electric's clients do); ``rows`` by key."""

    def __init__(self, http: httpx.AsyncClient, path: str) -> None:
        self.http = http
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self.handle: str | None = None
        self.offset = "-1"
        self.tags = TagTracker()

    async def catch_up(self) -> dict[str, dict[str, Any]]:
        for _ in range(1000):
            params = {"offset": self.offset}
            if self.handle is not None:
                params["handle"] = self.handle
            response = await self.http.get(self.path, params=params)
            if response.status_code == 409:
                self.restart()
                continue
            assert response.status_code == 200, response.text
            self.handle = response.headers["electric-handle"]
            self.offset = response.headers["electric-offset"]
            refetch = False
            for message in decode_batch(response.content, {}):
                if isinstance(message, ControlMessage) and message.control == "must-refetch":
                    refetch = True
                    break
                if isinstance(message, EventMessage) and message.event == "move-out":
                    for key in self.tags.move_out(message.patterns):
                        self.rows.pop(key, None)
                elif isinstance(message, EventMessage):
                    self.tags.move_in(message.patterns)
                elif isinstance(message, ChangeMessage):
                    if message.headers.operation == "delete":
                        self.rows.pop(message.key, None)
                    else:
                        self.rows[message.key] = {**self.rows.get(message.key, {}), **message.value}
                    self.tags.change(message)
            if refetch:
                self.restart()
                continue
            if "electric-up-to-date" in response.headers:
                return self.rows
        raise AssertionError("never up to date")

    def restart(self) -> None:
        self.rows, self.handle, self.offset = {}, None, "-1"
        self.tags.reset()
