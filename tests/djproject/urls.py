"""Shape routes of the test project: a fixed shape, and a per-request one whose user
comes from a header (standing in for the app's auth)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.db.models.signals import post_save
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import path

import pysync
import pysync.django
from djapp.models import Item, Member, TodoList


def lists_of(user: str) -> Any:
    """The items of the user's lists, by the list ids read now (so a new membership
    changes the shape: ``pysync.django.interrupt`` makes waiting requests see it)."""
    lists = sorted(Member.objects.filter(user=user).values_list("todo_list_id", flat=True))
    return Item.objects.filter(todo_list_id__in=lists).only("name", "todo_list")


async def my_items(request: HttpRequest) -> HttpResponseBase:
    user = request.headers.get("x-user")
    if not user:
        return HttpResponse("who are you?", status=401)
    return await pysync.django.render(request, lambda: lists_of(user))


async def live_items(request: HttpRequest) -> HttpResponseBase:
    """The user's items as live HTML (tests/test_django_live_html.py)."""
    user = request.headers.get("x-user")
    if not user:
        return HttpResponse("who are you?", status=401)
    return await pysync.django.live_html(
        request, lambda: lists_of(user), template="djapp/item_row.html", target="#items"
    )


def join(request: HttpRequest) -> HttpResponse:
    """A plain (sync) view writing a membership; the post_save handler interrupts."""
    Member.objects.create(todo_list_id=int(request.GET["list"]), user=request.headers["x-user"])
    return HttpResponse(status=204)


def membership_changed(sender: type, **kwargs: Any) -> None:
    pysync.django.interrupt(Item)


post_save.connect(membership_changed, sender=Member, dispatch_uid="djproject")

urlpatterns = [
    pysync.django.sync_path("shapes/unflagged/", Item.objects.filter(flag=False)),
    pysync.django.sync_path("shapes/lists/", TodoList),
    path("shapes/mine/", my_items),
    path("join/", join),
    path("live/items/", live_items),
]


def only_own_members(mutation: pysync.Mutation) -> bool | str:
    """Members are written only for ann: the stored row's user for updates and deletes
    (never the client's ``original``), the new one for inserts and updates."""
    if mutation.data and mutation.data.get("user") != "ann":
        return "not your membership"
    return bool(mutation.changes.get("user", "ann") == "ann")


electric = pysync.django.electric_view(tables=[Item])


async def electric_api(request: HttpRequest) -> HttpResponseBase:
    """Electric's API, for signed-in users (the header stands in for login_required)."""
    if not request.headers.get("x-user"):
        return HttpResponse("who are you?", status=401)
    return await electric(request)


urlpatterns.append(path("electric/v1/shape", electric_api))


def _anns_lists() -> Any:
    return Member.objects.filter(user="ann").values("todo_list_id")


SUBQUERY_SHAPES = {
    # The items of ann's lists; of those of her lists titled "a..." (a subquery in a
    # subquery); flagged or of her lists (a row in by either); not of her lists (NOT IN).
    "anns": Item.objects.filter(todo_list_id__in=_anns_lists()),
    "anns-a": Item.objects.filter(
        todo_list_id__in=TodoList.objects.filter(
            title__startswith="a", id__in=_anns_lists()
        ).values("id")
    ),
    "flagged-or-anns": Item.objects.filter(Q(flag=True) | Q(todo_list_id__in=_anns_lists())),
    "not-anns": Item.objects.exclude(todo_list_id__in=_anns_lists()),
    # NOT IN a subquery of its own table whose values may hold a NULL
    "n-not-flagged": Item.objects.exclude(n__in=Item.objects.filter(flag=True).values("n")),
}
"""Shapes with subqueries (tests/djproject/sandbox_tests.py)."""
urlpatterns += [
    pysync.django.sync_path(f"shapes/sub/{name}/", queryset)
    for name, queryset in SUBQUERY_SHAPES.items()
]

writer = pysync.django.Writer().allow(Item).allow(Member, check=only_own_members)
urlpatterns.append(path("write/", writer.view))
