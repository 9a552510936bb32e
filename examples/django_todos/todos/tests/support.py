"""Test helpers: users and lists, signed-in clients, and reading shape responses."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.test import Client

from todos.models import Membership, Todo, TodoList


def user(name: str) -> Any:
    return get_user_model().objects.create_user(name, password="pw")


def todo_list(owner: Any, name: str, titles: list[str]) -> TodoList:
    made: TodoList = TodoList.objects.create(name=name, owner=owner)
    Membership.objects.create(list=made, user=owner)
    for title in titles:
        Todo.objects.create(list=made, title=title)
    return made


def client_of(who: Any, **options: Any) -> Client:
    client = Client(**options)
    client.force_login(who)
    return client


class Shape:
    """One user's requests of one shape route: ``sync()`` reads it up to date, ``live()``
    sends the next live long-poll."""

    def __init__(self, client: Client, path: str) -> None:
        self.client = client
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self.handle: str | None = None
        self.offset = "-1"

    def sync(self) -> dict[str, dict[str, Any]]:
        for _ in range(50):
            response = self.request({})
            assert response.status_code == 200, response.content
            if "electric-up-to-date" in response.headers:
                return self.rows
        raise AssertionError(f"{self.path} never up to date")

    def live(self) -> Any:
        return self.request({"live": "true"})

    def request(self, extra: dict[str, str]) -> Any:
        params = {"offset": self.offset, **extra}
        if self.handle is not None:
            params["handle"] = self.handle
        response = self.client.get(self.path, params)
        if response.status_code == 200:
            self.handle = response.headers["electric-handle"]
            self.offset = response.headers["electric-offset"]
            for message in response.json():
                if message["headers"].get("operation") == "delete":
                    self.rows.pop(message["key"], None)
                elif "key" in message:
                    self.rows[message["key"]] = {
                        **self.rows.get(message["key"], {}),
                        **message["value"],
                    }
        return response


def titles(rows: dict[str, dict[str, Any]]) -> set[str]:
    return {row["title"] for row in rows.values()}


def changes(response: Any) -> list[dict[str, Any]]:
    return [m for m in response.json() if "key" in m]


def events(response: Any) -> list[str]:
    return [m["headers"]["event"] for m in response.json() if "event" in m["headers"]]
