"""Rows of a shape as instances of the SQLAlchemy model it came from (``Sync.materialise``
of an ORM class): detached instances built from the row's values, typed as the ORM types
its columns.

The row's values are parsed by their Postgres types already (``client.values``: int,
Decimal, datetime, UUID, bool, JSON...). Where a column's type says otherwise (a value
still text, e.g. of a domain or a type the parsers leave as text, or a ``Numeric``
mapped to float) the column's Python type converts it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from pysync.client.values import Row

Convert = Callable[[Any], Any]

_FROM_TEXT: dict[type, Convert] = {
    int: int,
    float: float,
    Decimal: Decimal,
    bool: lambda text: text in ("t", "true"),
    uuid.UUID: uuid.UUID,
    dict: json.loads,
    list: json.loads,
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
}


def instance_maker(model: type) -> Callable[[Row], Any]:
    """A function making a detached ``model`` instance of a shape row (by column name)."""
    mapper: sa.orm.Mapper[Any] = sa.inspect(model)
    fields: list[tuple[str, str, Convert | None]] = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if isinstance(column, sa.Column):
            fields.append((prop.key, column.name, _converter(column.type)))
    new_instance = mapper.class_manager.new_instance

    def make(row: Row) -> Any:
        instance = new_instance()
        for key, name, convert in fields:
            if name in row:
                value = row[name]
                if convert is not None and value is not None:
                    value = convert(value)
                set_committed_value(instance, key, value)
        make_transient_to_detached(instance)
        return instance

    return make


def _converter(column_type: sa.types.TypeEngine[Any]) -> Convert | None:
    """What turns a parsed value into the column's Python type (None: nothing to do)."""
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return None
    if python_type is str or python_type is object:
        return None
    from_text = _FROM_TEXT.get(python_type)

    def convert(value: Any) -> Any:
        if isinstance(value, python_type):
            return value
        if isinstance(value, str):
            return from_text(value) if from_text is not None else value
        if python_type in (float, int, Decimal) and isinstance(value, (int, float, Decimal)):
            return python_type(value)
        return value

    return convert
