"""Run by Django's own test runner (``python -m django test
djproject.sandbox_subquery_tests``) in tests/test_django_sandbox.py: shapes with
subqueries (``IN (SELECT ...)``, djproject.urls.SUBQUERY_SHAPES) served by the sandbox
from the test's transaction. A write that changes a subquery's rows moves rows into and
out of its shapes with the messages the engine sends (move-in / move-out events, tags,
active conditions), and the rows a client holds are the QuerySet's."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.db import connection, transaction

import pysync
from djapp.models import Item, Member, TodoList
from djproject.urls import SUBQUERY_SHAPES
from pysync.client.messages import ChangeMessage, EventMessage, decode_batch
from pysync.client.tags import TagTracker
from pysync.django.testing import SandboxTestCase


class DjangoTransport(httpx.AsyncBaseTransport):
    """httpx requests answered by Django's test ``AsyncClient``: a ``pysync.Client``
    follows the test's shapes through the test's own views."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        response = await self.client.generic(
            request.method, request.url.raw_path.decode(), headers=headers
        )
        return httpx.Response(
            response.status_code, headers=list(response.items()), content=response.content
        )


class Follower:
    """Follows a shape route with the test's client, as Electric's clients do (rows by
    key; a move-out drops the rows its patterns leave with no active condition)."""

    def __init__(self, client: Any, path: str) -> None:
        self.client = client
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self.tags = TagTracker()
        self.params = {"offset": "-1"}
        self.handle = ""
        self.refetched = False

    def step(self) -> list[dict[str, Any]]:
        """The messages up to the next up-to-date (applied), without it."""
        messages: list[dict[str, Any]] = []
        while True:
            response = self.client.get(self.path, self.params)
            if response.status_code == 409:  # the shape is gone: start again
                self.refetched = True
                self.rows, self.params = {}, {"offset": "-1"}
                self.tags.reset()
                continue
            assert response.status_code == 200, response.content
            self.handle = response.headers["electric-handle"]
            self.params = {"offset": response.headers["electric-offset"], "handle": self.handle}
            self.apply(response.content)
            messages += response.json()
            if messages and messages[-1]["headers"].get("control") == "up-to-date":
                return messages[:-1]

    def apply(self, body: bytes) -> None:
        for message in decode_batch(body, {}):
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

    def ids(self) -> dict[int, str]:
        return {int(row["id"]): row["name"] for row in self.rows.values()}


def selected(name: str) -> dict[int, str]:
    """The rows of the shape's QuerySet in the test's transaction."""
    return {item.id: item.name for item in SUBQUERY_SHAPES[name].all()}


def txid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::xid::text")
        return int(cursor.fetchone()[0])


def board() -> dict[str, Any]:
    """Three lists, ann a member of "apples"; items in each, one in none."""
    apples, bread, cheese = (TodoList.objects.create(title=t) for t in ("apples", "bread", "ab"))
    Member.objects.create(todo_list=apples, user="ann")
    Member.objects.create(todo_list=bread, user="bob")
    items = {
        "pip": Item.objects.create(name="pip", flag=False, todo_list=apples),
        "rye": Item.objects.create(name="rye", flag=False, todo_list=bread),
        "bun": Item.objects.create(name="bun", flag=True, todo_list=bread),
        "loose": Item.objects.create(name="loose", flag=None, todo_list=None),
        "brie": Item.objects.create(name="brie", flag=False, todo_list=cheese),
    }
    return {"apples": apples, "bread": bread, "cheese": cheese, **items}


def moves(board: dict[str, Any]) -> list[Any]:
    """Writes that change what the shapes hold, each one statement (one step)."""
    apples, bread, cheese = board["apples"], board["bread"], board["cheese"]
    return [
        # ann joins bread: its items move into "anns", out of "not-anns"
        lambda: Member.objects.create(todo_list=bread, user="ann"),
        # an item of bread moves to cheese (not ann's): out of "anns" by its own change
        lambda: Item.objects.filter(name="rye").update(todo_list=cheese),
        # a name changes: an update, same tags
        lambda: Item.objects.filter(name="pip").update(name="pippin"),
        # ann leaves bread: "bun" moves out of "anns"; still in "flagged-or-anns"
        lambda: Member.objects.filter(todo_list=bread, user="ann").delete(),
        # ann joins cheese ("ab": a nested subquery's row) ...
        lambda: Member.objects.create(todo_list=cheese, user="ann"),
        # ... which is renamed out of "a...": its items leave "anns-a" only
        lambda: TodoList.objects.filter(id=cheese.id).update(title="cheese"),
        # a flagged item changes list and flag at once
        lambda: Item.objects.filter(name="bun").update(flag=False, todo_list=apples),
        # bob's membership: no shape of ann's changes
        lambda: Member.objects.filter(user="bob").update(todo_list=apples),
    ]


def tag(handle: str, value: object) -> str:
    """A row's tag in a one-column subquery shape (Electric: md5 of handle, "v:", text)."""
    return hashlib.md5(f"{handle}v:{value}".encode()).hexdigest()


class SubqueryShapes(SandboxTestCase):
    def test_a_write_moves_rows_in_and_out_with_the_engines_messages(self) -> None:
        rows = board()
        anns = Follower(self.client, "/shapes/sub/anns/")
        snapshot = anns.step()
        [pip] = [m for m in snapshot if "key" in m]
        apples, bread = rows["apples"].id, rows["bread"].id
        self.assertEqual(pip["headers"]["tags"], [tag(anns.handle, apples)])
        self.assertEqual(pip["headers"]["active_conditions"], [True])
        self.assertEqual(anns.ids(), selected("anns"))
        xid = txid()

        Member.objects.create(todo_list=rows["bread"], user="ann")
        moved_in = anns.step()
        kinds = [m["headers"].get("event") or m["headers"].get("control") for m in moved_in]
        self.assertEqual(kinds, ["move-in", None, None, "snapshot-end"], moved_in)
        event = moved_in[0]["headers"]
        self.assertEqual(event["patterns"], [{"pos": 0, "value": tag(anns.handle, bread)}])
        self.assertEqual(event["txids"], [xid])
        for insert in moved_in[1:3]:
            self.assertEqual(insert["headers"]["operation"], "insert")
            self.assertIs(insert["headers"]["is_move_in"], True)
            self.assertEqual(insert["headers"]["tags"], [tag(anns.handle, bread)])
        self.assertEqual(anns.ids(), selected("anns"))
        self.assertEqual(sorted(anns.ids().values()), ["bun", "pip", "rye"])

        # A row's own change takes it out: a delete carrying the tags it had.
        Item.objects.filter(name="rye").update(todo_list=rows["cheese"])
        [delete] = anns.step()
        self.assertEqual(delete["headers"]["operation"], "delete")
        self.assertEqual(delete["headers"]["tags"], [tag(anns.handle, bread)])
        self.assertEqual(delete["headers"]["txids"], [xid])
        Item.objects.filter(name="pip").update(name="pippin")
        [update] = anns.step()
        self.assertEqual(update["value"], {"id": str(rows["pip"].id), "name": "pippin"})
        self.assertEqual(update["headers"]["tags"], [tag(anns.handle, apples)])
        self.assertEqual(update["headers"]["removed_tags"], [])

        # ann leaves bread: one move-out event; the client drops the rows it names.
        Member.objects.filter(todo_list=rows["bread"], user="ann").delete()
        [move_out] = anns.step()
        self.assertEqual(move_out["headers"]["event"], "move-out")
        self.assertEqual(
            move_out["headers"]["patterns"], [{"pos": 0, "value": tag(anns.handle, bread)}]
        )
        self.assertEqual(anns.ids(), selected("anns"))
        self.assertEqual(sorted(anns.ids().values()), ["pippin"])

        # A savepoint rolled back: in, then out again.
        try:
            with transaction.atomic():
                Member.objects.create(todo_list=rows["bread"], user="ann")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        events = [m["headers"].get("event") for m in anns.step() if "event" in m["headers"]]
        self.assertEqual(events, ["move-in", "move-out"])
        self.assertEqual(anns.ids(), selected("anns"))
        # A new client's snapshot is the same rows.
        fresh = Follower(self.client, "/shapes/sub/anns/")
        fresh.step()
        self.assertEqual(fresh.ids(), selected("anns"))

    def test_a_null_joining_the_values_of_a_not_in_makes_clients_refetch(self) -> None:
        # As the engine: a NULL among a NOT IN's values makes the clause NULL for every
        # row with a value, which no move can say.
        Item.objects.create(name="a", n=1, flag=False)
        Item.objects.create(name="b", n=2, flag=True)
        Item.objects.create(name="c", n=None, flag=False)
        follower = Follower(self.client, "/shapes/sub/n-not-flagged/")
        follower.step()
        self.assertEqual(sorted(follower.ids().values()), ["a", "c"])
        handle = follower.handle
        Item.objects.create(name="d", n=None, flag=True)
        follower.step()
        self.assertTrue(follower.refetched)
        self.assertNotEqual(follower.handle, handle)
        self.assertEqual(follower.ids(), selected("n-not-flagged"))
        self.assertEqual(sorted(follower.ids().values()), ["c", "d"])

    def test_every_subquery_shape_holds_its_querysets_rows_after_each_write(self) -> None:
        rows = board()
        followers = {
            name: Follower(self.client, f"/shapes/sub/{name}/") for name in SUBQUERY_SHAPES
        }
        for follower in followers.values():
            follower.step()
        for number, write in enumerate(moves(rows)):
            write()
            for name, follower in followers.items():
                follower.step()
                self.assertEqual(follower.ids(), selected(name), f"{name} after write {number}")

    async def test_a_pysync_client_follows_the_moves_live(self) -> None:
        rows = await sync_to_async(board)()
        transport = DjangoTransport(self.async_client)
        http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        async with pysync.Client(http=http) as client:
            shapes = {
                name: await client.shape(url=f"/shapes/sub/{name}/", timeout=10)
                for name in SUBQUERY_SHAPES
            }
            try:
                for number, write in enumerate([lambda: None, *moves(rows)]):
                    await sync_to_async(write)()
                    for name, shape in shapes.items():
                        expected = await sync_to_async(selected)(name)
                        deadline = time.monotonic() + 10
                        while _ids(shape.rows) != expected:
                            self.assertLess(
                                time.monotonic(), deadline, f"{name} after write {number}"
                            )
                            await asyncio.sleep(0.01)
            finally:
                for shape in shapes.values():
                    await shape.close()
        await http.aclose()


def _ids(rows: dict[str, Any]) -> dict[int, str]:
    return {row["id"]: row["name"] for row in rows.values()}
