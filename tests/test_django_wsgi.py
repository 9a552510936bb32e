"""pysync.django under WSGI (Django's test client, ``runserver``): a shape function runs
outside Django's request cycle, so the connections its ORM queries open are closed
after it, as a request's end would close them. Left open, they kept ``manage.py test``
from dropping the test database ("being accessed by other users")."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from django_support import create_tables, django_database
from pysync.postgres.cluster import PostgresCluster


@pytest.fixture(scope="module")
def django_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    url = django_database(pg_cluster)
    from djapp.models import Item, Member, Special, TodoList
    from pysync.django import engine

    create_tables(TodoList, Member, Item, Special)
    # An engine of this module's own: a temporary slot, gone with its connection.
    engine.replace_sync(in_memory=True, temporary_slot=True)
    yield url
    engine.stop_blocking()


def backends(url: str, query: str = "%") -> set[int]:
    """The pids of the other connections to the database whose last statement is like
    ``query``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE %s",
            (query,),
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def test_a_shape_functions_connection_is_closed_after_it_ran(django_url: str) -> None:
    from django.db import connections
    from django.test import Client

    client = Client()
    started = client.get("/shapes/unflagged/", {"offset": "-1"})  # the engine starts
    assert started.status_code == 200, started.content
    connections.close_all()
    before = backends(django_url)
    # /shapes/mine/'s function reads the user's lists with the ORM.
    mine = client.get("/shapes/mine/", {"offset": "-1"}, headers={"x-user": "ann"})
    assert mine.status_code == 200, mine.content
    # No connection opened for the function's query is left open.
    assert backends(django_url, '%FROM "djapp_member"%') <= before
