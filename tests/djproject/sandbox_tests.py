"""Run by Django's own test runner (``python -m django test djproject.sandbox_tests``) in
tests/test_django_sandbox.py: in Django's ``TestCase`` (one transaction per test, rolled
back) the pysync sandbox serves the views' shapes from the test's transaction; without
it, the engine never sees the test's writes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.test import TestCase

import pysync.django
from djapp.models import Item, Member, TodoList
from pysync.django import engine
from pysync.django.testing import SandboxTestCase


def apply(rows: dict[str, dict[str, Any]], response: Any) -> dict[str, dict[str, Any]]:
    """``rows`` (by key) with the response's changes applied, as a client does."""
    assert response.status_code == 200, response.content
    for message in response.json():
        if "key" not in message:
            continue
        if message["headers"]["operation"] == "delete":
            rows.pop(message["key"], None)
        else:
            rows[message["key"]] = {**rows.get(message["key"], {}), **message["value"]}
    return rows


def served(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {v["id"]: (v["name"], v.get("n"), v.get("flag")) for v in rows.values()}


def selected() -> dict[str, tuple[Any, ...]]:
    """What the shape's SELECT returns in the test's transaction, as the wire has it."""
    return {
        str(i.id): (i.name, None if i.n is None else str(i.n), "f")  # bool's text form
        for i in Item.objects.filter(flag=False)
    }


def txid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::xid::text")
        return int(cursor.fetchone()[0])


def after(response: Any, live: bool = False) -> dict[str, str]:
    params = {
        "offset": response.headers["electric-offset"],
        "handle": response.headers["electric-handle"],
    }
    if live:
        params["live"] = "true"
    return params


class SandboxedShapes(SandboxTestCase):
    def test_every_write_reaches_the_shape_as_the_transaction_sees_it(self) -> None:
        path = "/shapes/unflagged/"
        first = self.client.get(path, {"offset": "-1"})
        rows = apply({}, first)
        self.assertEqual(served(rows), {})
        one = Item.objects.create(name="one", flag=False)
        two = Item.objects.create(name="two", flag=False, n=2)
        Item.objects.create(name="flagged", flag=True)
        response = self.client.get(path, after(first))
        rows = apply(rows, response)
        self.assertEqual(served(rows), selected())
        self.assertEqual(len(rows), 2)
        txids = {m["headers"]["txids"][0] for m in response.json() if "key" in m}
        self.assertEqual(txids, {txid()})
        # save(), a QuerySet.update() (no signals), a delete, a move out and one in.
        one.name = "uno"
        one.save()
        Item.objects.filter(n=2).update(n=22)
        Item.objects.filter(name="flagged").update(flag=False)
        two.delete()
        response = self.client.get(path, after(response))
        rows = apply(rows, response)
        self.assertEqual(served(rows), selected())
        self.assertEqual(sorted(v[0] for v in served(rows).values()), ["flagged", "uno"])
        # A savepoint rolled back takes its writes back out of the shape.
        try:
            with transaction.atomic():
                Item.objects.create(name="undone", flag=False)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        response = self.client.get(path, after(response))
        rows = apply(rows, response)
        self.assertEqual(served(rows), selected())
        self.assertEqual(len(rows), 2)
        self.assertIn("electric-up-to-date", response.headers)
        # A new client's snapshot is the same rows.
        self.assertEqual(served(apply({}, self.client.get(path, {"offset": "-1"}))), selected())

    def test_each_test_starts_from_an_empty_database(self) -> None:
        response = self.client.get("/shapes/unflagged/", {"offset": "-1"})
        self.assertEqual(apply({}, response), {})

    def test_a_stale_handle_gets_a_409(self) -> None:
        first = self.client.get("/shapes/unflagged/", {"offset": "-1"})
        stale = {**after(first), "handle": "nope"}
        self.assertEqual(self.client.get("/shapes/unflagged/", stale).status_code, 409)

    def test_electrics_api_serves_the_allowed_tables_from_the_transaction(self) -> None:
        Item.objects.create(name="seen", flag=False)
        path, user = "/electric/v1/shape", {"x-user": "ann"}
        params = {"table": "djapp_item", "where": "flag = false", "offset": "-1"}
        response = self.client.get(path, params, headers=user)
        self.assertEqual([v[0] for v in served(apply({}, response)).values()], ["seen"])
        other = self.client.get(path, {**params, "table": "djapp_member"}, headers=user)
        self.assertEqual(other.status_code, 403)
        bad = self.client.get(path, {**params, "where": "nope ="}, headers=user)
        self.assertEqual(bad.status_code, 400)
        self.assertIn("where", bad.json()["errors"])
        # What the sandbox does not serve is a 400 naming it, not a wrong answer.
        subset = self.client.get(path, {**params, "subset__limit": "1"}, headers=user)
        self.assertEqual(subset.status_code, 400)
        self.assertIn("sandbox", subset.json()["errors"]["subset"][0])
        sse = self.client.get(
            path, {**params, **after(response), "live": "true", "live_sse": "true"}, headers=user
        )
        self.assertEqual(sse.status_code, 400)
        self.assertIn("sandbox", sse.json()["errors"]["live_sse"][0])

    async def test_a_live_request_gets_a_write_made_while_it_waits(self) -> None:
        path = "/shapes/unflagged/"
        first = await self.async_client.get(path, {"offset": "-1"})
        up = await self.async_client.get(path, after(first))
        live = asyncio.create_task(self.async_client.get(path, after(up, live=True)))
        sync = pysync.django.get_sync()
        deadline = time.monotonic() + 10
        while sync.waiting < 1:
            self.assertLess(time.monotonic(), deadline, "the live request never waited")
            await asyncio.sleep(0.01)
        await sync_to_async(Item.objects.create)(name="live", flag=False)
        response = await asyncio.wait_for(live, 10)
        self.assertEqual([v[0] for v in served(apply({}, response)).values()], ["live"])

    async def test_a_writers_txid_is_waited_for(self) -> None:
        mutation = {
            "type": "insert",
            "modified": {"name": "written", "flag": False},
            "syncMetadata": {"relation": ["public", "djapp_item"]},
        }
        written = await self.async_client.post("/write/", [mutation], "application/json")
        self.assertEqual(written.status_code, 200, written.content)
        written_txid = written.json()["txid"]
        self.assertEqual(written_txid, await sync_to_async(txid)())
        rows = await self.wait_for_txid(written_txid, "/shapes/unflagged/")
        self.assertEqual([v["name"] for v in rows.values()], ["written"])

    async def test_a_per_request_shape_reads_the_tests_rows_and_is_interrupted(self) -> None:
        headers = {"x-user": "ann"}
        mine, theirs = await sync_to_async(self.lists)()
        first = await self.async_client.get("/shapes/mine/", {"offset": "-1"}, headers=headers)
        self.assertEqual([v[0] for v in served(apply({}, first)).values()], ["one"])
        live = asyncio.create_task(
            self.async_client.get("/shapes/mine/", after(first, live=True), headers=headers)
        )
        sync = pysync.django.get_sync()
        deadline = time.monotonic() + 10
        while sync.waiting < 1:
            self.assertLess(time.monotonic(), deadline, "the live request never waited")
            await asyncio.sleep(0.01)
        # A sync view's post_save handler interrupts: the function reads the new list.
        joined = await self.async_client.get("/join/", {"list": str(theirs)}, headers=headers)
        self.assertEqual(joined.status_code, 204)
        response = await asyncio.wait_for(live, 10)
        self.assertEqual(response.status_code, 409, response.content)
        again = await self.async_client.get("/shapes/mine/", {"offset": "-1"}, headers=headers)
        self.assertEqual(sorted(v[0] for v in served(apply({}, again)).values()), ["one", "two"])

    def test_only_the_shapes_on_the_tables_written_are_read_again(self) -> None:
        sandbox = pysync.django.get_sync().sandbox  # type: ignore[attr-defined]
        read: list[str] = []
        reading = sandbox._read_rows

        def spy(sandboxed: Any) -> Any:
            read.append(sandboxed.shape.table.name)
            return reading(sandboxed)

        sandbox._read_rows = spy
        items = self.client.get("/shapes/unflagged/", {"offset": "-1"})
        lists = self.client.get("/shapes/lists/", {"offset": "-1"})
        read.clear()
        Item.objects.create(name="one", flag=False)
        self.assertEqual(read, ["djapp_item"])
        read.clear()
        TodoList.objects.create(title="groceries")
        self.assertEqual(read, ["djapp_todolist"])
        # Rows written by a trigger are counted as written too.
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION new_list() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "INSERT INTO djapp_todolist (title) VALUES ('by trigger'); RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER new_list AFTER INSERT ON djapp_member "
                "FOR EACH ROW EXECUTE FUNCTION new_list()"
            )
        read.clear()
        Member.objects.create(todo_list=TodoList.objects.get(title="groceries"), user="ann")
        self.assertEqual(read, ["djapp_todolist"])
        # Anything but INSERT, UPDATE, DELETE (here a TRUNCATE): every shape is read.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # Django's FKs are deferred
            read.clear()
            cursor.execute("TRUNCATE djapp_item CASCADE")
        self.assertEqual(sorted(read), ["djapp_item", "djapp_todolist"])
        lists = self.client.get("/shapes/lists/", after(lists))
        self.assertEqual(
            sorted(m["value"]["title"] for m in lists.json() if "key" in m),
            ["by trigger", "groceries"],
        )
        items = self.client.get("/shapes/unflagged/", after(items))
        changes = [m for m in items.json() if "key" in m]
        self.assertEqual([m["headers"]["operation"] for m in changes], ["insert", "delete"])
        self.assertEqual({m["key"] for m in changes}, {changes[0]["key"]})  # the row "one"

    @staticmethod
    def lists() -> tuple[int, int]:
        mine, theirs = TodoList.objects.create(title="a"), TodoList.objects.create(title="b")
        Member.objects.create(todo_list=mine, user="ann")
        Item.objects.create(name="one", n=None, flag=False, todo_list=mine)
        Item.objects.create(name="two", n=None, flag=True, todo_list=theirs)
        return mine.id, theirs.id


class WithoutSandbox(TestCase):  # type: ignore[misc]  # Django ships no types
    """Django's TestCase on the real engine: replication never sees the test's writes."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        engine.replace_sync(in_memory=True, temporary_slot=True)
        # Started before the test writes: a slot waits for running transactions.
        loop = engine.background_loop()
        asyncio.run_coroutine_threadsafe(engine.started_sync(), loop).result(60)

    @classmethod
    def tearDownClass(cls) -> None:
        engine.stop_blocking()
        super().tearDownClass()

    def test_a_write_in_the_tests_transaction_never_reaches_the_shape(self) -> None:
        path = "/shapes/unflagged/"
        response = self.client.get(path, {"offset": "-1"})
        rows = apply({}, response)
        Item.objects.create(name="uncommitted", flag=False)
        # A write committed after it, from another connection, does arrive.
        url = engine.database_url(connection.settings_dict)
        with psycopg.connect(url, autocommit=True) as other:
            other.execute(
                "INSERT INTO djapp_item (name, flag, big, status) "
                "VALUES ('committed', false, 0, 'open')"
            )
        deadline = time.monotonic() + 30
        while "committed" not in [v["name"] for v in rows.values()]:
            self.assertLess(time.monotonic(), deadline, "the committed row never arrived")
            response = self.client.get(path, after(response, live=True))
            rows = apply(rows, response)
        self.assertEqual([v["name"] for v in rows.values()], ["committed"])
