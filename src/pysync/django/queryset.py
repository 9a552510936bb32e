"""``pysync.django.shape(QuerySet)``: the model's table, the columns ``.only()`` or
``.values()`` name (the primary key always), and the WHERE of its filters.

A shape is one table filtered by a WHERE clause, as in Electric: what a QuerySet can say
beyond that (joins, ordering, slicing, annotations, ``extra()``, ``distinct()``, unions)
is refused by name, with the subquery form to use where one says the same.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.sql.query import Query

from pysync.django.where import WhereCompiler
from pysync.shapes.definition import ShapeDefinition, ShapeError


def queryset_shape(
    queryset: QuerySet[Any, Any], *, replica: str = "default", log_mode: str = "full"
) -> ShapeDefinition:
    """The shape of ``queryset`` (see the module's docstring); ShapeError names what
    cannot be one."""
    query = queryset.query
    check_query(query, "the QuerySet")
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        raise ShapeError(
            "table",
            f"the QuerySet's database {queryset.db!r} is {connection.vendor}, not PostgreSQL",
        )
    compiler = WhereCompiler(query, connection)
    where = compiler.render()
    model: type[Model] = queryset.model
    return ShapeDefinition.create(
        model._meta.db_table,
        namespace="public",
        where=where,
        params=compiler.params,
        columns=_columns(model, query),
        replica=replica,
        log_mode=log_mode,
    )


def check_query(query: Query, what: str) -> None:
    """Refuse what a shape (or its subquery) cannot have, by name."""
    refused = [
        name
        for name, present in (
            ("order_by()", bool(query.order_by) or bool(query.extra_order_by)),
            ("slicing", query.low_mark != 0 or query.high_mark is not None),
            ("aggregates or annotations", bool(query.annotations)),
            ("extra()", bool(query.extra) or bool(query.extra_tables)),
            ("distinct()", bool(query.distinct)),
            ("union()/intersection()/difference()", bool(query.combinator)),
            ("select_for_update()", bool(query.select_for_update)),
        )
        if present
    ]
    if refused:
        raise ShapeError(
            "where",
            f"a shape is one model filtered by conditions; {what} has {', '.join(refused)}, "
            "which a shape cannot have",
        )
    aliases = [a for a, join in query.alias_map.items() if query.alias_refcount.get(a, 1) > 0]
    if len(aliases) > 1:
        joined = ", ".join(query.alias_map[a].table_name for a in aliases[1:])
        raise ShapeError(
            "where",
            f"{what} joins {joined}: a shape reads one table. Say it with a subquery, "
            'e.g. list_id__in=List.objects.filter(owner=user).values("id")',
        )


def _columns(model: type[Model], query: Query) -> tuple[str, ...]:
    """The shape's columns in the model's order: every concrete field's, or those of
    ``.values()``/``.only()``/``.defer()``, with the primary key."""
    opts = model._meta.concrete_model._meta  # a proxy model reads its concrete model's table
    if opts.parents:
        raise ShapeError(
            "table",
            f"{opts.label} inherits from {', '.join(p._meta.label for p in opts.parents)} "
            "(multi-table inheritance): its rows span tables, a shape reads one",
        )
    fields = [f for f in opts.local_concrete_fields if not getattr(f, "generated", False)]
    names: set[str] | None = None
    if query.values_select:
        names = set(query.values_select)
    else:
        field_names, defer = query.deferred_loading
        if field_names:
            named = {_field_name(model, n) for n in field_names}
            names = {f.name for f in fields if (f.name in named) != defer}
    if names is not None:
        names = {_field_name(model, n) for n in names}
        unknown = sorted(names - {f.name for f in fields})
        if unknown:
            raise ShapeError("columns", f"{', '.join(unknown)} are not columns of {opts.label}")
        names.add(opts.pk.name)
        fields = [f for f in fields if f.name in names]
    return tuple(f.column for f in fields)


def _field_name(model: type[Model], name: str) -> str:
    if "__" in name:
        raise ShapeError(
            "columns", f"{name} follows a relation: a shape's columns are its model's own"
        )
    if name == "pk":
        return str(model._meta.pk.name)
    for field in model._meta.concrete_fields:
        if name in (field.name, field.attname):
            return str(field.name)
    return name
