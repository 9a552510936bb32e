"""The todos app through Django's test client, with the shapes served by an engine on
the test database (``SyncTestCase``: each test's writes commit, so replication sees
them): each user syncs only their lists' todos, sharing releases the other user's
waiting requests, the Writer's rules judge the stored row, writes are awaited by txid."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from django.db import connections
from django.test import override_settings

from pysync.django.testing import SyncTestCase
from todos.models import Todo
from todos.tests.support import Shape, changes, client_of, events, titles, todo_list, user

LONG_POLL = 8.0
RELATION = {"relation": ["public", "todos_todo"]}


def in_thread(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """``call()`` in a thread (a live long-poll waits there); its result and duration."""
    result: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            result["response"] = call()
        finally:
            result["seconds"] = time.monotonic() - started
            connections.close_all()  # this thread's, before the test database is flushed

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


# Users are made in every test: a fast hash instead of PBKDF2's 1,000,000 rounds.
@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
class TodosTests(SyncTestCase):
    # The engine's INFO lines (slots, shapes invalidated by each test's flush) are noise here.
    pysync_settings: ClassVar[dict[str, Any]] = {
        "long_poll_timeout": LONG_POLL,
        "log_level": "warning",
    }

    def setUp(self) -> None:
        self.ann, self.bob, self.cat = user("ann"), user("bob"), user("cat")
        self.ann_list = todo_list(self.ann, "Ann's groceries", ["milk", "bread"])
        self.bob_list = todo_list(self.bob, "Bob's chores", ["dishes", "laundry"])

    def write(self, who: Any, *mutations: dict[str, Any], **options: Any) -> Any:
        return client_of(who, **options).post(
            "/api/mutations/",
            [{**m, "syncMetadata": RELATION} for m in mutations],
            content_type="application/json",
        )

    def test_each_user_syncs_only_the_todos_of_their_lists(self) -> None:
        for who, expected in (
            (self.ann, {"milk", "bread"}),
            (self.bob, {"dishes", "laundry"}),
            (self.cat, set()),
        ):
            client = client_of(who)
            self.assertEqual(titles(Shape(client, "/shapes/todos/").sync()), expected)
            lists = Shape(client, "/shapes/lists/").sync()
            self.assertEqual(
                {row["name"] for row in lists.values()},
                {"Ann's groceries"}
                if who == self.ann
                else {"Bob's chores"}
                if who == self.bob
                else set(),
            )
        # A live change of Bob's list reaches Bob, not Ann.
        ann = Shape(client_of(self.ann), "/shapes/todos/")
        bob = Shape(client_of(self.bob), "/shapes/todos/")
        ann.sync()
        bob.sync()
        Todo.objects.create(list=self.bob_list, title="for bob")
        self.assertEqual([c["value"]["title"] for c in changes(bob.live())], ["for bob"])
        # Ann's shape has no change: her catch-up request is up to date, empty.
        caught_up = ann.request({})
        self.assertEqual(changes(caught_up), [])
        self.assertIn("electric-up-to-date", caught_up.headers)
        for path in ("/shapes/todos/", "/shapes/lists/", "/shapes/memberships/"):
            anonymous = self.client.get(path, {"offset": "-1"})
            self.assertEqual(
                (anonymous.status_code, anonymous.json()), (401, {"message": "sign in first"})
            )

    def test_sharing_releases_the_other_users_waiting_requests(self) -> None:
        bob = client_of(self.bob)
        lists, todos = Shape(bob, "/shapes/lists/"), Shape(bob, "/shapes/todos/")
        lists.sync()
        todos.sync()
        lists_live, lists_result = in_thread(lists.live)
        todos_live, todos_result = in_thread(todos.live)
        time.sleep(0.5)  # both long-polls are waiting
        shared = client_of(self.ann).post(
            f"/api/lists/{self.ann_list.pk}/members/",
            {"user": "bob"},
            content_type="application/json",
        )
        self.assertEqual(shared.status_code, 200, shared.content)
        lists_live.join(LONG_POLL + 5)
        todos_live.join(LONG_POLL + 5)
        # The lists shape is a function of Bob's list ids: interrupted, it has a new shape,
        # so its waiting request is told to refetch at once, not after the long-poll.
        self.assertEqual(lists_result["response"].status_code, 409)
        self.assertLess(lists_result["seconds"], LONG_POLL / 2)
        relisted = Shape(bob, "/shapes/lists/").sync()
        self.assertEqual(
            {r["name"] for r in relisted.values()}, {"Ann's groceries", "Bob's chores"}
        )
        # The todos shape is a subquery shape: Ann's list's todos move in.
        self.assertEqual(todos_result["response"].status_code, 200)
        self.assertLess(todos_result["seconds"], LONG_POLL / 2)
        self.assertEqual(titles(todos.rows), {"dishes", "laundry", "milk", "bread"})

        # Unsharing: the lists request refetches, the todos move out.
        lists = Shape(bob, "/shapes/lists/")
        lists.sync()
        lists_live, lists_result = in_thread(lists.live)
        todos_live, todos_result = in_thread(todos.live)
        time.sleep(0.5)
        unshared = client_of(self.ann).delete(
            f"/api/lists/{self.ann_list.pk}/members/{self.bob.pk}/"
        )
        self.assertEqual(unshared.status_code, 200, unshared.content)
        lists_live.join(LONG_POLL + 5)
        todos_live.join(LONG_POLL + 5)
        self.assertEqual(lists_result["response"].status_code, 409)
        self.assertIn("move-out", events(todos_result["response"]))
        self.assertLess(todos_result["seconds"], LONG_POLL / 2)
        self.assertEqual(
            {r["name"] for r in Shape(bob, "/shapes/lists/").sync().values()}, {"Bob's chores"}
        )

    def test_only_the_owner_shares_a_list(self) -> None:
        response = client_of(self.bob).post(
            f"/api/lists/{self.ann_list.pk}/members/",
            {"user": "bob"},
            content_type="application/json",
        )
        self.assertEqual(response.status_code, 404)
        self.assertFalse(self.ann_list.memberships.filter(user=self.bob).exists())
        response = client_of(self.ann).post(
            f"/api/lists/{self.ann_list.pk}/members/",
            {"user": "nobody"},
            content_type="application/json",
        )
        self.assertEqual(response.status_code, 400)
        self.assertIn("nobody", response.json()["message"])

    def test_a_write_is_awaited_by_its_txid(self) -> None:
        todos = Shape(client_of(self.ann), "/shapes/todos/")
        todos.sync()
        todo = {
            "id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "list_id": self.ann_list.pk,
            "title": "eggs",
            "done": False,
        }
        written = self.write(self.ann, {"type": "insert", "modified": todo})
        self.assertEqual(written.status_code, 200, written.content)
        [change] = changes(todos.live())
        self.assertEqual(change["value"]["title"], "eggs")
        self.assertEqual(change["headers"]["txids"], [written.json()["txid"]])
        updated = self.write(
            self.ann, {"type": "update", "original": todo, "changes": {"done": True}}
        )
        [change] = changes(todos.live())
        self.assertEqual(
            (change["value"]["done"], change["headers"]["txids"]), ("t", [updated.json()["txid"]])
        )

    def test_the_writers_rules_judge_the_stored_row_not_the_clients_original(self) -> None:
        milk = Todo.objects.get(title="milk")
        dishes = Todo.objects.get(title="dishes")
        lie = {"id": str(milk.id), "list_id": self.bob_list.pk, "title": "milk", "done": False}
        for mutation in (
            # Bob's claims that Ann's todo is in his list.
            {"type": "update", "original": lie, "changes": {"title": "mine now"}},
            {"type": "update", "original": lie, "changes": {"list_id": self.bob_list.pk}},
            {"type": "delete", "original": lie},
            # Moving his own todo into Ann's list, or adding one there.
            {
                "type": "update",
                "original": {"id": str(dishes.id)},
                "changes": {"list_id": self.ann_list.pk},
            },
            {
                "type": "insert",
                "modified": {
                    **lie,
                    "id": "2b4e28ba-2fa1-11d2-883f-0016d3cca427",
                    "list_id": self.ann_list.pk,
                },
            },
        ):
            refused = self.write(self.bob, mutation)
            self.assertEqual(refused.status_code, 403, (mutation, refused.content))
        milk.refresh_from_db()
        dishes.refresh_from_db()
        self.assertEqual(
            (milk.title, milk.list_id, dishes.list_id), ("milk", self.ann_list.pk, self.bob_list.pk)
        )
        self.assertEqual(Todo.objects.count(), 4)
        # Once shared, the stored row is in one of Bob's lists: his write is accepted.
        client_of(self.ann).post(
            f"/api/lists/{self.ann_list.pk}/members/",
            {"user": "bob"},
            content_type="application/json",
        )
        accepted = self.write(
            self.bob,
            {"type": "update", "original": {"id": str(milk.id)}, "changes": {"title": "oat milk"}},
        )
        self.assertEqual(accepted.status_code, 200, accepted.content)
        milk.refresh_from_db()
        self.assertEqual(milk.title, "oat milk")

    def test_invalid_writes_are_refused_by_name(self) -> None:
        todo = {
            "id": "3b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "list_id": self.ann_list.pk,
            "title": "x",
            "done": False,
        }
        for modified, named in (
            ({**todo, "title": "x" * 201}, "title"),  # max_length=200: the model's full_clean
            ({**todo, "list_id": "abc"}, "list_id"),
            ({**todo, "list_id": [1]}, "list_id"),
            ({**todo, "colour": "red"}, "colour"),
        ):
            refused = self.write(self.ann, {"type": "insert", "modified": modified})
            self.assertEqual(refused.status_code, 422, (modified, refused.content))
            self.assertIn(named, refused.json()["message"])
        self.assertFalse(Todo.objects.filter(id=todo["id"]).exists())
        anonymous = self.client.post("/api/mutations/", [], content_type="application/json")
        self.assertEqual(anonymous.status_code, 401)

    def test_writes_pass_djangos_csrf_check(self) -> None:
        client = client_of(self.ann, enforce_csrf_checks=True)
        page = client.get("/")
        self.assertEqual(page.status_code, 200)
        token = page.cookies["csrftoken"].value
        body = [
            {
                "type": "insert",
                "modified": {
                    "id": "4b4e28ba-2fa1-11d2-883f-0016d3cca427",
                    "list_id": self.ann_list.pk,
                    "title": "tea",
                },
                "syncMetadata": RELATION,
            }
        ]
        refused = client.post("/api/mutations/", body, content_type="application/json")
        self.assertEqual(refused.status_code, 403)
        self.assertFalse(Todo.objects.filter(title="tea").exists())
        written = client.post(
            "/api/mutations/", body, content_type="application/json", headers={"X-CSRFToken": token}
        )
        self.assertEqual(written.status_code, 200, written.content)
        self.assertTrue(Todo.objects.filter(title="tea", done=False).exists())

    def test_the_page_needs_a_sign_in(self) -> None:
        self.assertRedirects(
            self.client.get("/"), "/accounts/login/?next=/", fetch_redirect_response=False
        )
        signed_in = self.client.post("/accounts/login/", {"username": "ann", "password": "pw"})
        self.assertRedirects(signed_in, "/", fetch_redirect_response=False)
        page = self.client.get("/")
        self.assertContains(page, '"username": "ann"')
        self.assertContains(page, '"username": "bob"')
