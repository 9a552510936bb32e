"""Rows of a Django shape as model instances (``sync.materialise(Todo.objects...)``).

Each instance is what the QuerySet would have loaded (``Model.from_db``: not new, of the
QuerySet's database), its fields converted by their own ``to_python`` from the values
the shape's log parsed by their Postgres types (a JSONField's value is decoded JSON
already). Columns the shape leaves out (``only()``) are deferred, as Django defers them:
reading one queries the database. A ``values()`` QuerySet's rows stay dicts, as the
QuerySet's would be.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import router
from django.db.models import Field, Model, QuerySet
from django.db.models.query import ModelIterable

from pysync.app.instances import InstanceMaker
from pysync.client.values import Row


def instance_maker(source: object) -> InstanceMaker | None:
    """For a model class or a QuerySet of instances: makes its model's instances."""
    model: Any
    if isinstance(source, QuerySet):
        if not issubclass(source._iterable_class, ModelIterable):
            return None  # values() / values_list(): not instances
        model, db = source.model, source.db
    elif isinstance(source, type) and issubclass(source, Model):
        model = source
        db = router.db_for_read(model)
    else:
        return None
    fields: list[tuple[str, str, Field[Any, Any]]] = [
        (field.attname, field.column, field) for field in model._meta.concrete_fields
    ]

    def make(row: Row) -> Any:
        names = []
        values = []
        for attname, column, field in fields:
            if column in row:
                names.append(attname)
                values.append(_python(field, row[column]))
        return model.from_db(db, names, values)

    return make


def _python(field: Field[Any, Any], value: Any) -> Any:
    if value is None:
        return None
    try:
        return field.to_python(value)
    except ValidationError:
        # A value the field's parser does not take (a column of a type the model maps
        # loosely): as the log has it, rather than no row at all.
        return value
