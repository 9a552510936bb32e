"""A shape as query parameters, and the URL it is asked for."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pysync.shapes.definition import ShapeDefinition

DEFAULT_PATH = "/v1/shape"
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*\Z")


def shape_of(
    shape: ShapeDefinition | str | None,
    *,
    namespace: str | None = None,
    where: str | None = None,
    params: Sequence[object] | Mapping[int | str, object] | None = None,
    columns: Sequence[str] | None = None,
    replica: str = "default",
    log_mode: str = "full",
) -> ShapeDefinition | None:
    """``shape`` as a definition: a ShapeDefinition as is, or a table name with the other
    keywords (as ``pysync.shape(...)``); None for a shape the server route defines."""
    if isinstance(shape, ShapeDefinition):
        if where is not None or params is not None or columns is not None or namespace is not None:
            raise TypeError(
                "pass namespace/where/params/columns in the ShapeDefinition, not beside it"
            )
        return shape
    if shape is None:
        if where is not None or params is not None or columns is not None:
            raise TypeError("where/params/columns need a table")
        return None
    return ShapeDefinition.create(
        shape,
        namespace=namespace,
        where=where,
        params=params,
        columns=columns,
        replica=replica,
        log_mode=log_mode,
    )


def shape_params(definition: ShapeDefinition) -> list[tuple[str, str]]:
    """The query parameters of a client-defined shape, as Electric reads them."""
    query = [
        ("table", _relation(definition.schema, definition.table)),
        ("log", definition.log_mode),
    ]
    if definition.where is not None:
        query.append(("where", definition.where))
        query.extend((f"params[{i}]", value) for i, value in enumerate(definition.params, 1))
    if definition.columns is not None:
        query.append(("columns", ",".join(_quote(name) for name in definition.columns)))
    if definition.queryable_columns is not None:
        names = ",".join(_quote(name) for name in definition.queryable_columns)
        query.append(("queryable_columns", names))
    if definition.replica != "default":
        query.append(("replica", definition.replica))
    return query


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _relation(schema: str, table: str) -> str:
    name = table if _PLAIN.match(table) else _quote(table)
    if schema == "public":
        return name
    return f"{schema if _PLAIN.match(schema) else _quote(schema)}.{name}"
