"""A Django QuerySet's WHERE tree (``qs.query.where``) as Electric's WHERE language with
``$n`` parameters.

The compiler walks Django's own tree (``WhereNode`` with its ``Lookup`` children) instead
of reading the SQL Django would send: each lookup becomes the clause Django's Postgres
backend means by it (``icontains`` is ``upper(col::text) LIKE upper($1)``, the pattern
escaped as Django escapes it), and anything the language cannot say is refused by name,
when the shape is defined. Values are bound as Django binds them: the lookup's own
``process_rhs`` with the database's connection runs the field's ``get_db_prep_value``, so
dates, decimals, UUIDs, choices and JSON become the text Postgres reads for the column.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db.models import Model
from django.db.models.expressions import Col, Value
from django.db.models.functions import TruncDate
from django.db.models.lookups import Lookup, YearLookup
from django.db.models.sql.query import Query
from django.db.models.sql.where import NothingNode, WhereNode

from pysync.postgres.identifiers import quote_identifier
from pysync.shapes.definition import ShapeError, param_text

COMPARISONS = {"exact": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# Django's Postgres backend: the lhs cast and operator of each pattern lookup.
PATTERNS = {
    "contains": ("{}::text", "LIKE {}"),
    "startswith": ("{}::text", "LIKE {}"),
    "endswith": ("{}::text", "LIKE {}"),
    "icontains": ("upper({}::text)", "LIKE upper({})"),
    "istartswith": ("upper({}::text)", "LIKE upper({})"),
    "iendswith": ("upper({}::text)", "LIKE upper({})"),
    "iexact": ("upper({}::text)", "= upper({})"),
}
DATE_PARTS = (
    "month, day, week, week_day, iso_week_day, quarter, hour, minute, second, time and "
    "iso_year are not in Electric's WHERE language (it has no EXTRACT): use __year, "
    "__date or a range of dates (__range, __gte/__lt)"
)


class WhereCompiler:
    """Compiles the WHERE of ``query`` (one model, no joins); ``params`` are shared with
    subqueries so that their ``$n`` number on from the outer ones."""

    def __init__(self, query: Query, connection: Any, params: list[str] | None = None) -> None:
        self.query = query
        self.connection = connection
        self.compiler = query.get_compiler(connection=connection)
        self.alias = query.get_initial_alias()
        self.params: list[str] = [] if params is None else params

    def render(self) -> str | None:
        """The clause, or None when the query has no condition."""
        text = self.node(self.query.where)
        return None if text == "true" else text

    def node(self, node: Any) -> str:
        if isinstance(node, WhereNode):
            return self.boolean(node)
        if isinstance(node, NothingNode):
            return "false"
        if isinstance(node, Lookup):
            try:
                return self.lookup(node)
            except EmptyResultSet:  # __in=[]: no row, as Django answers
                return "false"
            except FullResultSet:
                return "true"
        raise ShapeError("where", f"{_describe(node)} is not supported in a shape")

    def boolean(self, node: WhereNode) -> str:
        connector = node.connector
        if connector not in ("AND", "OR"):
            raise ShapeError("where", f"the {connector} connector is not supported in a shape")
        parts = [self.node(child) for child in node.children]
        neutral, absorbing = ("true", "false") if connector == "AND" else ("false", "true")
        parts = [p for p in parts if p != neutral]
        if absorbing in parts:
            text = absorbing
        elif not parts:
            text = neutral
        elif len(parts) == 1:
            text = parts[0]
        else:
            text = f" {connector} ".join(f"({p})" for p in parts)
        if node.negated:
            return {"true": "false", "false": "true"}.get(text) or f"NOT ({text})"
        return text

    def lookup(self, lookup: Lookup) -> str:
        name = lookup.lookup_name
        if isinstance(lookup, YearLookup):
            return self.year(lookup)
        lhs = self.lhs(lookup.lhs, name)
        if name == "isnull":
            if not isinstance(lookup.rhs, bool):
                raise ShapeError("where", "__isnull takes True or False")
            return f"{lhs} IS NULL" if lookup.rhs else f"{lhs} IS NOT NULL"
        if name == "in":
            if isinstance(lookup.rhs, Query):
                return f"{lhs} IN ({self.subquery(lookup.rhs)})"
            _, values = lookup.process_rhs(self.compiler, self.connection)
            return f"{lhs} IN ({', '.join(self.param(v) for v in values)})"
        if name == "range":
            if not lookup.rhs_is_direct_value():
                raise ShapeError("where", "__range takes two values, not expressions")
            _, (low, high) = lookup.process_rhs(self.compiler, self.connection)
            return f"{lhs} BETWEEN {self.param(low)} AND {self.param(high)}"
        if name in COMPARISONS:
            return f"{lhs} {COMPARISONS[name]} {self.rhs(lookup)}"
        if name in PATTERNS:
            if not lookup.rhs_is_direct_value():
                raise ShapeError(
                    "where", f"__{name} with an expression (F()) is not supported: give a value"
                )
            cast, operator = PATTERNS[name]
            _, (pattern,) = lookup.process_rhs(self.compiler, self.connection)
            return f"{cast.format(lhs)} {operator.format(self.param(pattern))}"
        raise ShapeError(
            "where",
            f"the lookup __{name} is not supported in a shape (it has exact, iexact, in, gt, "
            "gte, lt, lte, range, isnull, contains, icontains, startswith, istartswith, "
            "endswith, iendswith, year and date)",
        )

    def year(self, lookup: YearLookup) -> str:
        """``__year``: the bounds Django compares with (the column itself, no EXTRACT)."""
        if not lookup.rhs_is_direct_value():
            raise ShapeError("where", "__year with an expression is not supported: give a year")
        if getattr(lookup.lhs, "lookup_name", None) != "year":
            raise ShapeError("where", DATE_PARTS)
        column = self.lhs(lookup.lhs.lhs, lookup.lookup_name)
        start, finish = lookup.year_lookup_bounds(self.connection, lookup.rhs)
        bounds = [self.param(v) for v in lookup.get_bound_params(start, finish)]
        if lookup.lookup_name == "exact":
            return f"{column} BETWEEN {bounds[0]} AND {bounds[1]}"
        return f"{column} {COMPARISONS[lookup.lookup_name]} {bounds[0]}"

    def lhs(self, node: Any, lookup_name: str) -> str:
        if isinstance(node, Col):
            return self.column(node)
        if isinstance(node, TruncDate):
            (source,) = node.get_source_expressions()
            column = self.lhs(source, lookup_name)
            zone = node.get_tzname()
            if zone is None:
                return f"{column}::date"
            return f"timezone({_string(zone)}, {column})::date"
        transform = getattr(node, "lookup_name", None)
        if transform is not None and transform in _DATE_TRANSFORMS:
            raise ShapeError("where", f"__{transform}: {DATE_PARTS}")
        if transform is not None:
            raise ShapeError("where", f"the transform __{transform} is not supported in a shape")
        raise ShapeError("where", f"{_describe(node)} is not supported in a shape")

    def column(self, col: Col) -> str:
        if col.alias != self.alias:
            raise ShapeError(
                "where",
                f"the condition on {col.target.model._meta.label}.{col.target.name} follows "
                "a relation (a join): a shape reads one table. Say it with a subquery, "
                'e.g. list_id__in=List.objects.filter(owner=user).values("id")',
            )
        if col.target.get_internal_type() == "JSONField":
            raise ShapeError(
                "where",
                f"{col.target.name} is a JSON column: Electric's WHERE language cannot "
                "compare JSON (a shape can sync the column, not filter on it)",
            )
        return quote_identifier(col.target.column)

    def rhs(self, lookup: Lookup) -> str:
        value = lookup.rhs
        if isinstance(value, Col):  # F("other_column"), resolved
            return self.column(value)
        if isinstance(value, Query):
            raise ShapeError(
                "where",
                f"__{lookup.lookup_name} with a subquery is not supported: a shape's "
                "subquery is __in=Model.objects.filter(...).values(column)",
            )
        if not lookup.rhs_is_direct_value() and not isinstance(value, Value):
            raise ShapeError(
                "where",
                f"{_describe(value)} is not supported in a shape: compare with a value or "
                "with F() of a column of the same model",
            )
        _, values = lookup.process_rhs(self.compiler, self.connection)
        (single,) = values
        return self.param(single)

    def subquery(self, query: Query) -> str:
        """``SELECT column FROM table [WHERE ...]``: Electric's one subquery form."""
        from pysync.django.queryset import check_query

        check_query(query, "the subquery")
        select = list(query.select)
        if len(select) != 1 or not isinstance(select[0], Col):
            raise ShapeError("where", 'a subquery selects one column, e.g. .values("list_id")')
        inner = WhereCompiler(query, self.connection, self.params)
        column = inner.column(select[0])
        model: type[Model] = query.model
        text = f"SELECT {column} FROM {quote_identifier(model._meta.db_table)}"
        where = inner.render()
        return text if where is None else f"{text} WHERE {where}"

    def param(self, value: Any) -> str:
        if value is None:
            return "NULL"
        self.params.append(_param_text(value))
        return f"${len(self.params)}"


_DATE_TRANSFORMS = frozenset(
    {"month", "day", "week", "week_day", "iso_week_day", "quarter", "hour", "minute"}
    | {"second", "time", "iso_year", "year"}
)


def _param_text(value: Any) -> str:
    """A value Django prepared for psycopg, as Postgres input text: a choices enum by
    its value (as psycopg sends a str/int subclass), a JSON wrapper as its document."""
    if isinstance(value, enum.Enum):
        return param_text(value.value)
    obj = getattr(value, "obj", _MISSING)
    if obj is not _MISSING and type(value).__name__ in ("Json", "Jsonb"):
        dumps = getattr(value, "dumps", None) or json.dumps
        return str(dumps(obj))
    return param_text(value)


_MISSING = object()


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _describe(node: Any) -> str:
    known = {
        "ExtraWhere": "extra(where=...)",
        "RawSQL": "RawSQL",
        "Subquery": "Subquery()",
        "Exists": "Exists()",
        "OuterRef": "OuterRef()",
        "CombinedExpression": "arithmetic on expressions",
        "Func": "a database function",
    }
    name = type(node).__name__
    return known.get(name, f"{name} ({node})")
