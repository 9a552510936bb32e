"""pysync.django.Writer: mutations validated by the Django model (full_clean) and applied
in one transaction.atomic through Django's connection; the view checks CSRF as Django
does; rules judge the stored row."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from django_support import create_tables, django_database
from pysync.postgres.cluster import PostgresCluster


@pytest.fixture(scope="module")
def django_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    url = django_database(pg_cluster)
    from djapp.models import Item, Member, Special, TodoList

    create_tables(TodoList, Member, Item, Special)
    yield url


def insert(table: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"type": "insert", "modified": row, "syncMetadata": {"relation": ["public", table]}}


def test_a_batch_is_cleaned_by_the_model_and_applied_in_one_transaction(django_url: str) -> None:
    from djapp.models import Item
    from djproject.urls import writer

    txid = writer.apply(
        [
            insert("djapp_item", {"name": "w1", "price": "1.5", "day": "2024-02-03", "big": "7"}),
            insert("djapp_item", {"name": "w2", "status": "done", "uid": str(_uid())}),
        ]
    )
    first, second = Item.objects.filter(name__in=["w1", "w2"]).order_by("name")
    assert (first.price, first.day, first.big, first.status) == (
        Decimal("1.50"),
        datetime.date(2024, 2, 3),
        7,
        "open",  # the model's default, from full_clean's instance
    )
    assert (second.status, second.uid) == ("done", _uid())
    with psycopg.connect(django_url) as conn:
        # One (sub)transaction wrote both rows (a savepoint in Django's transaction, so
        # xmin is the subtransaction's); the txid is Django's committed transaction.
        xmins = conn.execute("SELECT DISTINCT xmin::text FROM djapp_item WHERE name LIKE 'w_'")
        assert len(xmins.fetchall()) == 1
        row = conn.execute("SELECT pg_xact_status(%s::text::xid8)", (str(txid),)).fetchone()
    assert row == ("committed",)


def test_a_value_the_model_refuses_rolls_back_the_whole_batch(django_url: str) -> None:
    import pysync
    from djapp.models import Item
    from djproject.urls import writer

    with pytest.raises(pysync.MutationInvalid) as error:
        writer.apply(
            [
                insert("djapp_item", {"name": "r1"}),
                insert("djapp_item", {"name": "r2", "status": "nope"}),
            ]
        )
    assert error.value.index == 1
    assert "status" in str(error.value) and "not a valid choice" in str(error.value)
    with pytest.raises(pysync.MutationInvalid, match="no column 'colour'"):
        writer.apply([insert("djapp_item", {"name": "r3", "colour": "red"})])
    assert not Item.objects.filter(name__in=["r1", "r2", "r3"]).exists()


def test_inside_an_atomic_block_the_batch_is_django_s_transaction(django_url: str) -> None:
    from django.db import transaction

    from djapp.models import Item
    from djproject.urls import writer

    with pytest.raises(RuntimeError), transaction.atomic():
        writer.apply([insert("djapp_item", {"name": "a1"})])
        assert Item.objects.filter(name="a1").exists()  # same connection, same transaction
        raise RuntimeError("the app's own code fails later")
    assert not Item.objects.filter(name="a1").exists()


def test_rules_judge_the_stored_row_not_the_clients_original(django_url: str) -> None:
    import pysync
    from djapp.models import Member, TodoList
    from djproject.urls import writer

    todo_list = TodoList.objects.create(title="shared")
    bobs = Member.objects.create(todo_list=todo_list, user="bob")
    update = {
        "type": "update",
        "original": {"id": bobs.id, "user": "ann"},  # a lie: the row is bob's
        "changes": {"todo_list_id": todo_list.id},
        "syncMetadata": {"relation": ["public", "djapp_member"]},
    }
    with pytest.raises(pysync.MutationForbidden, match="not your membership"):
        writer.apply([update])
    anns = Member.objects.create(todo_list=todo_list, user="ann")
    update["original"] = {"id": anns.id}
    update["changes"] = {"user": "bob"}  # giving it away is refused too
    with pytest.raises(pysync.MutationForbidden):
        writer.apply([update])
    assert Member.objects.get(id=anns.id).user == "ann"


def test_the_view_checks_csrf_as_django_does_and_answers_the_txid(django_url: str) -> None:
    import json

    from django.test import Client, override_settings

    body = json.dumps([insert("djapp_item", {"name": "v1"})])
    token = "k" * 32
    with override_settings(MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"]):
        client = Client(enforce_csrf_checks=True)
        refused = client.post("/write/", body, content_type="application/json")
        assert refused.status_code == 403  # no CSRF token: Django's own refusal
        client.cookies["csrftoken"] = token
        headers = {"X-CSRFToken": token}
        response = client.post("/write/", body, content_type="application/json", headers=headers)
        assert response.status_code == 200, response.content
        assert isinstance(response.json()["txid"], int)
        form = client.post("/write/", {"x": "1"}, headers=headers)
        assert form.status_code == 415
        bad = client.post(
            "/write/",
            json.dumps([insert("djapp_item", {"name": "v2", "day": "soon"})]),
            content_type="application/json",
            headers=headers,
        )
        assert bad.status_code == 422
        assert "day" in bad.json()["message"]


def _uid() -> Any:
    import uuid

    return uuid.UUID(int=25)
