"""Who sees what, and releasing waiting shape requests when that changes.

The todos shape is a subquery shape (``list IN (SELECT list_id FROM memberships WHERE
user_id = $1)``): the engine itself moves a list's todos in and out of a user's shape
as memberships change, and TanStack DB's collection applies those moves.

The lists and memberships shapes are read with ``useShape`` (``@electric-sql/react``),
whose ``Shape`` ignores move-out events: a subquery shape would leave an unshared list
on the page. So they are shapes of the list ids read when the request came, and a
membership change interrupts their waiting requests: each re-runs its function, and a
user whose lists changed gets a 409 with the new shape and refetches; the others go
on waiting.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save

import pysync.django
from todos.models import Membership, Todo, TodoList


def member_lists(user: Any) -> QuerySet[Any, Any]:
    """The ids of the lists ``user`` may see, as a subquery."""
    return Membership.objects.filter(user=user).values("list_id")


def todos_of(user: Any) -> QuerySet[Any, Any]:
    return Todo.objects.filter(list__in=member_lists(user))


def list_ids(user: Any) -> list[int]:
    return sorted(member_lists(user).values_list("list_id", flat=True))


def lists_of(user: Any) -> QuerySet[Any, Any]:
    return TodoList.objects.filter(id__in=list_ids(user))


def memberships_of(user: Any) -> QuerySet[Any, Any]:
    """Who else is in each of the user's lists (the page shows "shared with ...")."""
    return Membership.objects.filter(list_id__in=list_ids(user))


def may_edit(user: Any, list_id: object) -> bool:
    return bool(Membership.objects.filter(user=user, list_id=list_id).exists())


def access_changed(**kwargs: Any) -> None:
    # After the commit: the re-run shape functions must read the new memberships.
    transaction.on_commit(_interrupt)


def _interrupt() -> None:
    for model in (TodoList, Membership):
        pysync.django.interrupt(model)


post_save.connect(access_changed, sender=Membership, dispatch_uid="todos.access")
post_delete.connect(access_changed, sender=Membership, dispatch_uid="todos.access")
