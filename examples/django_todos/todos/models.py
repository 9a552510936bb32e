"""The tables: users own lists, share them through memberships, and lists hold todos.

The owner is a member too (a membership is made with the list), so "the lists a user
may see" is one subquery: ``Membership.objects.filter(user=user).values("list_id")``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class TodoList(models.Model):  # type: ignore[misc]  # Django ships no types
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_lists"
    )


class Membership(models.Model):  # type: ignore[misc]
    """``user`` sees ``list`` and may edit its todos."""

    list = models.ForeignKey(TodoList, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["list", "user"], name="one_membership_per_user")
        ]


class Todo(models.Model):  # type: ignore[misc]
    # Made by the client, so an optimistic insert has its final key from the start.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    list = models.ForeignKey(TodoList, on_delete=models.CASCADE, related_name="todos")
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
