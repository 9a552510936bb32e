"""The example's tests use pysync's pytest plugin: a private Postgres, a started Sync, and
the app built on it (see pysync.testing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fastapi import FastAPI
from todos_app.app import create_app, create_tables
from todos_app.auth import COOKIE, Signer

import pysync

pytest_plugins = ["pysync.testing"]

KEY = b"test-key"


@pytest.fixture
def pysync_settings(tmp_path: Path) -> dict[str, Any]:
    # Shape logs on disk, as the app runs them.
    return {"long_poll_timeout": 5.0, "storage_dir": tmp_path / "storage", "env": False}


@pytest_asyncio.fixture
async def pysync_app(pysync_sync: pysync.Sync) -> AsyncIterator[FastAPI]:
    app = create_app(pysync_sync, key=KEY, seed=True)
    async with app.router.lifespan_context(app):
        yield app


def cookie(user: str) -> dict[str, str]:
    """The request headers of a signed-in user."""
    return {"cookie": f"{COOKIE}={Signer(KEY).sign(user)}"}


__all__ = ["cookie", "create_tables"]
