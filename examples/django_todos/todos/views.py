"""The page, the per-user shapes, the Writer endpoint, lists and sharing.

- ``GET /shapes/todos/``, ``/shapes/lists/``, ``/shapes/memberships/``: what the
  signed-in user syncs (todos/access.py says how each follows sharing).
- ``POST /api/mutations/``: TanStack DB's optimistic writes of todos, applied by
  ``pysync.django.Writer`` in one ``transaction.atomic``; the answer's ``txid`` is what
  the page waits for in the todos shape.
- ``POST /api/lists/``, ``POST /api/lists/<id>/members/``, ``DELETE
  /api/lists/<id>/members/<user id>/``: lists and sharing (owner only).

Every API view answers 401 JSON to an anonymous request (not a redirect to the login
page, which a shape client would read as a broken response), and every POST and DELETE
passes Django's CSRF check (the page sends the ``X-CSRFToken`` header).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render as render_page

import pysync
import pysync.django
from todos.access import lists_of, may_edit, memberships_of, todos_of
from todos.models import Membership, Todo, TodoList

AsyncView = Callable[..., Awaitable[HttpResponseBase]]
SyncView = Callable[..., HttpResponseBase]


def _unauthorized() -> JsonResponse:
    return JsonResponse({"message": "sign in first"}, status=401)


def signed_in_async(view: AsyncView) -> AsyncView:
    @functools.wraps(view)
    async def checked(request: HttpRequest, **kwargs: Any) -> HttpResponseBase:
        user = await request.auser()
        if not user.is_authenticated:
            return _unauthorized()
        return await view(request, user, **kwargs)

    return checked


def signed_in(*methods: str) -> Callable[[SyncView], SyncView]:
    """A sync API view for signed-in users, answering only ``methods``."""

    def decorate(view: SyncView) -> SyncView:
        @functools.wraps(view)
        def checked(request: HttpRequest, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return JsonResponse({"message": f"use {' or '.join(methods)}"}, status=405)
            if not request.user.is_authenticated:
                return _unauthorized()
            return view(request, request.user, **kwargs)

        return checked

    return decorate


# -- the page -------------------------------------------------------------------------


def index(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    get_token(request)  # sets the csrftoken cookie, which the page's script sends back
    others = get_user_model().objects.exclude(pk=request.user.pk).order_by("username")
    return render_page(
        request,
        "todos/index.html",
        {
            "page": {
                "me": {"id": request.user.pk, "username": request.user.username},
                "users": [{"id": u.pk, "username": u.username} for u in others],
            }
        },
    )


def bundle(request: HttpRequest) -> HttpResponse:
    """static/app.js, served by Django itself so that uvicorn alone runs the example (a
    deployment serves static files with WhiteNoise or its web server instead)."""
    return HttpResponse(
        (settings.STATIC_ROOT / "app.js").read_bytes(), content_type="text/javascript"
    )


# -- shapes ---------------------------------------------------------------------------


@signed_in_async
async def todos_shape(request: HttpRequest, user: Any) -> HttpResponseBase:
    # One QuerySet: a subquery shape, its param the user's id (the engine moves rows in
    # and out as memberships change).
    return await pysync.django.render(request, todos_of(user))


@signed_in_async
async def lists_shape(request: HttpRequest, user: Any) -> HttpResponseBase:
    # A function: re-run when interrupted (todos/access.py), its list ids read again.
    return await pysync.django.render(request, lambda: lists_of(user))


@signed_in_async
async def memberships_shape(request: HttpRequest, user: Any) -> HttpResponseBase:
    return await pysync.django.render(request, lambda: memberships_of(user))


# -- writes ---------------------------------------------------------------------------


def todo_rules(user: Any) -> Callable[[pysync.Mutation], None]:
    def check(mutation: pysync.Mutation) -> None:
        # mutation.data: for an update or delete, the row as stored (read and locked by
        # the Writer), never the client's "original"; {} for an insert.
        if mutation.operation != "insert" and not may_edit(user, mutation.data["list_id"]):
            raise pysync.MutationForbidden("this todo is in a list that is not shared with you")
        if "list_id" in mutation.changes:
            list_id = mutation.changes["list_id"]
            # Checked before the model validates the values: an id, not any JSON.
            if isinstance(list_id, bool) or not isinstance(list_id, int):
                raise pysync.MutationInvalid(f"list_id is a list's id, not {list_id!r}")
            if not may_edit(user, list_id):
                raise pysync.MutationForbidden(f"list {list_id} is not shared with you")

    return check


@signed_in("POST")
def mutations(request: HttpRequest, user: Any) -> HttpResponseBase:
    writer = pysync.django.Writer().allow(Todo, check=todo_rules(user))
    return writer.view(request)


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


@signed_in("POST")
def new_list(request: HttpRequest, user: Any) -> HttpResponseBase:
    name = str(_json_body(request).get("name") or "").strip()[:100]
    if not name:
        return JsonResponse(
            {"message": "a list needs a name", "errors": {"name": "empty"}}, status=400
        )
    with transaction.atomic():
        todo_list = TodoList.objects.create(name=name, owner=user)
        Membership.objects.create(list=todo_list, user=user)
    return JsonResponse({"id": todo_list.pk}, status=201)


def _owned(user: Any, list_id: int) -> TodoList | None:
    found: TodoList | None = TodoList.objects.filter(pk=list_id, owner=user).first()
    return found


@signed_in("POST")
def share(request: HttpRequest, user: Any, list_id: int) -> HttpResponseBase:
    todo_list = _owned(user, list_id)
    if todo_list is None:
        return JsonResponse({"message": f"no list {list_id} of yours"}, status=404)
    username = str(_json_body(request).get("user") or "")
    other = get_user_model().objects.filter(username=username).first()
    if other is None:
        return JsonResponse(
            {"message": f"no user {username!r}", "errors": {"user": "unknown"}}, status=400
        )
    # The membership's post_save releases the other user's waiting requests.
    Membership.objects.get_or_create(list=todo_list, user=other)
    return JsonResponse({"shared": True})


@signed_in("DELETE")
def unshare(request: HttpRequest, user: Any, list_id: int, user_id: int) -> HttpResponseBase:
    todo_list = _owned(user, list_id)
    if todo_list is None:
        return JsonResponse({"message": f"no list {list_id} of yours"}, status=404)
    if user_id == user.pk:
        return JsonResponse({"message": "the owner stays a member of the list"}, status=400)
    # Its post_delete releases the other user's waiting requests.
    Membership.objects.filter(list=todo_list, user_id=user_id).delete()
    return JsonResponse({"shared": False})
