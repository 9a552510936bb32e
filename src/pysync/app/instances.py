"""Rows of an in-process view as the app's model instances (``Sync.materialise(Todo)``).

SQLAlchemy ORM classes are known here; other front ends (pysync.django for models and
QuerySets) register theirs when imported, so this layer imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pysync.app.shapes import uses_sqlalchemy
from pysync.client.values import Row

InstanceMaker = Callable[[Row], Any]
"""Makes one model instance of a shape row (column name -> parsed value)."""

InstanceSource = Callable[[object], InstanceMaker | None]
"""The instance maker for a shape's source (a model, a QuerySet), or None: rows stay dicts."""

_sources: list[InstanceSource] = []


def register_instances(source: InstanceSource) -> None:
    """Teach ``Sync.materialise`` / ``subscribe`` another front end's models."""
    if source not in _sources:
        _sources.append(source)


def instance_maker(shape_source: object) -> InstanceMaker | None:
    """How rows of a shape made from ``shape_source`` become instances (None: dicts)."""
    if isinstance(shape_source, type) and uses_sqlalchemy(shape_source):
        from pysync.app.sqlalchemy_rows import instance_maker as sqlalchemy_instances

        return sqlalchemy_instances(shape_source)
    for source in _sources:
        maker = source(shape_source)
        if maker is not None:
            return maker
    return None
