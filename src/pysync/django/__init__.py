"""pysync for Django (``pip install 'pysync[django]'``): shapes from QuerySets, served
from Django views.

    import pysync.django
    pysync.django.shape(Todo.objects.filter(done=False, list_id__in=lists))

    urlpatterns = [pysync.django.sync_path("shapes/open-todos/", Todo.objects.filter(done=False))]

    async def my_todos(request):          # an async view: Django's auth, then the shape
        return await pysync.django.render(request, lambda: Todo.objects.filter(owner=request.user))

    pysync.django.interrupt(Todo)         # after a change to who sees what

    async def todos_live(request):         # the rows as live HTML for htmx's SSE extension
        return await pysync.django.live_html(request, lambda: Todo.objects.filter(owner=request.user),
                                             template="todos/row.html", target="#todos")

    writer = pysync.django.Writer().allow(Todo, check=...)   # full_clean, transaction.atomic

Imported only by apps that use it: nothing else in pysync imports Django.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet
from django.db.models.query import RawQuerySet

from pysync.app.instances import register_instances
from pysync.app.shapes import register_source
from pysync.django.engine import asgi, get_sync
from pysync.django.live_html import live_html
from pysync.django.queryset import queryset_shape
from pysync.django.rows import instance_maker
from pysync.django.views import electric_view, interrupt, render, sync_path
from pysync.django.writer import Writer
from pysync.shapes.definition import ShapeDefinition, ShapeError

__all__ = [
    "ShapeError",
    "Writer",
    "asgi",
    "electric_view",
    "get_sync",
    "interrupt",
    "live_html",
    "render",
    "shape",
    "sync_path",
]


def _convert(source: object) -> ShapeDefinition | None:
    """``pysync.shape``'s converter: a QuerySet, or a model class (its whole table)."""
    if isinstance(source, QuerySet):
        return queryset_shape(source)
    if isinstance(source, type) and issubclass(source, Model):
        model: Any = source
        return queryset_shape(model._base_manager.all())
    return None


# pysync.shape(QuerySet), Sync.route(path, QuerySet), pysync.interrupt(Model) ...
register_source(_convert)
# sync.materialise(QuerySet): rows as model instances.
register_instances(instance_maker)


def shape(
    queryset: QuerySet[Any, Any], *, replica: str = "default", log_mode: str = "full"
) -> ShapeDefinition:
    """The shape of a QuerySet over one model: the same ``ShapeDefinition`` that
    ``pysync.shape(...)`` gives, so it is served, routed and interrupted as any other.
    ShapeError names what a shape cannot have (joins, ordering, aggregates ...)."""
    if isinstance(queryset, RawQuerySet):
        raise ShapeError(
            "table", "a RawQuerySet (raw() SQL) cannot be a shape: use filter() on the model"
        )
    if not isinstance(queryset, QuerySet):
        raise ShapeError(
            "table",
            f"expected a QuerySet (Model.objects.filter(...)), not {type(queryset).__name__}",
        )
    return queryset_shape(queryset, replica=replica, log_mode=log_mode)
