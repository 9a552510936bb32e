"""Run by pytest with pytest-django and ``pysync.django.pytest`` in a project of its own
(tests/test_django_pytest.py copies it there as ``test_shapes.py``): the sandbox for
``django_db``, the real engine for ``django_db(transaction=True)``."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from djapp.models import Item
from pysync.app.sync import Sync
from pysync.django.sandbox_http import SandboxSync

PATH = "/shapes/unflagged/"
MUTATION = {
    "type": "insert",
    "modified": {"name": "written", "flag": False},
    "syncMetadata": {"relation": ["public", "djapp_item"]},
}


def follow(client: Any, rows: dict[str, Any], params: dict[str, str]) -> dict[str, str]:
    """One request: ``rows`` (id -> name) updated; the next request's params."""
    response = client.get(PATH, params)
    assert response.status_code == 200, response.content
    for message in response.json():
        if "key" in message:
            if message["headers"]["operation"] == "delete":
                rows.pop(message["value"]["id"], None)
            else:
                rows.setdefault(message["value"]["id"], {}).update(message["value"])
    return {
        "offset": response.headers["electric-offset"],
        "handle": response.headers["electric-handle"],
    }


def selected() -> dict[str, str]:
    return {str(i.id): i.name for i in Item.objects.filter(flag=False)}


@pytest.mark.django_db
def test_the_sandbox_serves_the_tests_transaction(pysync_sync: Sync, client: Any) -> None:
    assert isinstance(pysync_sync, SandboxSync)
    rows: dict[str, Any] = {}
    params = follow(client, rows, {"offset": "-1"})
    assert rows == {}
    kept = Item.objects.create(name="kept", flag=False)
    Item.objects.create(name="moved", flag=False)
    params = follow(client, rows, params)
    Item.objects.filter(name="moved").update(flag=True)  # no signals
    kept.name = "renamed"
    kept.save()
    follow(client, rows, params)
    assert {k: v["name"] for k, v in rows.items()} == selected() == {str(kept.id): "renamed"}


@pytest.mark.django_db
def test_a_writers_txid_is_waited_for_in_the_sandbox(
    pysync_sync: Sync, client: Any, pysync_wait_for_txid: Any
) -> None:
    written = client.post("/write/", [MUTATION], content_type="application/json")
    assert written.status_code == 200, written.content
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::xid::text")
        assert written.json()["txid"] == int(cursor.fetchone()[0])
    rows = pysync_wait_for_txid(written.json()["txid"], PATH)
    assert [v["name"] for v in rows.values()] == ["written"]


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_runs_the_real_engine(
    pysync_sync: Sync, client: Any, pysync_wait_for_txid: Any
) -> None:
    assert not isinstance(pysync_sync, SandboxSync)
    first = client.get(PATH, {"offset": "-1"})
    assert first.status_code == 200
    assert [m for m in first.json() if "key" in m] == []
    assert pysync_sync.engine.started.is_set()  # replication, not the sandbox
    written = client.post("/write/", [MUTATION], content_type="application/json")
    assert written.status_code == 200, written.content
    rows = pysync_wait_for_txid(written.json()["txid"], PATH)
    assert [v["name"] for v in rows.values()] == ["written"]


@pytest.mark.django_db
def test_the_sandbox_starts_again_from_an_empty_database(pysync_sync: Sync, client: Any) -> None:
    rows: dict[str, Any] = {}
    follow(client, rows, {"offset": "-1"})
    assert rows == {}
