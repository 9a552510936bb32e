"""``manage.py seed_demo``: the demo's users (ann, bob, cat; password ``todos``) and a
list of todos for ann and bob. Run once after ``migrate``; later runs change nothing."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from todos.models import Membership, Todo, TodoList

DEMO = {
    "ann": ("Ann's groceries", ["milk", "bread"]),
    "bob": ("Bob's chores", ["dishes", "laundry"]),
}


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no types
    help = "Create the demo users (ann, bob, cat; password 'todos') and their lists."

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        with transaction.atomic():
            for name in ("ann", "bob", "cat"):
                if users.filter(username=name).exists():
                    continue
                user = users.create_user(name, password="todos")
                if name in DEMO:
                    title, todos = DEMO[name]
                    todo_list = TodoList.objects.create(name=title, owner=user)
                    Membership.objects.create(list=todo_list, user=user)
                    Todo.objects.bulk_create(Todo(list=todo_list, title=t) for t in todos)
                self.stdout.write(f"user {name} (password: todos)")
