"""``python manage.py pysync serve [flags]``: ``pysync serve`` with the project's settings.

The production recipe for several app worker processes: one ``pysync serve`` (this
command) beside them, and ``PYSYNC = {"mode": "http", "url": ...}`` in the settings so
the views forward to it. The database is ``DATABASES["default"]`` (or ``PYSYNC
["database_url"]``); ``settings.PYSYNC``'s server settings (``slot``, ``publication``,
``secret``, ``storage_dir`` ...) become its ``PYSYNC_*`` environment, and flags given
here win over them, as over any environment variable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from pysync import cli
from pysync.config import ENV
from pysync.django.engine import database_url

# Sync's own arguments, not settings of the server.
_CLIENT_ONLY = frozenset({"mode", "url", "in_memory", "env", "cors"})


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no types
    help = "pysync serve with this project's database and settings.PYSYNC"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("subcommand", choices=["serve"])
        parser.add_argument("flags", nargs=argparse.REMAINDER, help="pysync serve's flags")

    def handle(self, *args: Any, **options: Any) -> None:
        os.environ.update(server_environment())
        # Ctrl-C is how one stops it, and it stopped cleanly: no traceback.
        with contextlib.suppress(KeyboardInterrupt):
            cli.main(["serve", *options["flags"]])


def server_environment() -> dict[str, str]:
    """The ``PYSYNC_*`` / ``DATABASE_URL`` variables that say the project's settings."""
    configured: dict[str, Any] = dict(getattr(settings, "PYSYNC", None) or {})
    env = {"DATABASE_URL": str(configured.pop("database_url", None) or "")}
    if not env["DATABASE_URL"]:
        env["DATABASE_URL"] = database_url(settings.DATABASES["default"])
    for name, value in configured.items():
        if name in _CLIENT_ONLY or value is None:
            continue
        if name not in ENV:
            raise ValueError(f"settings.PYSYNC[{name!r}] is not a setting of pysync serve")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[ENV[name][0] if name != "database_url" else "DATABASE_URL"] = text
    return env
