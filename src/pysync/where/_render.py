"""Typed tree -> SQL text, either with psycopg placeholders (snapshot query) or with
literals inlined (the normalised form used in shape identity keys).

Every operation is fully parenthesised and every implicit cast the checker inserted is
written out, so Postgres evaluates exactly what the in-process evaluator evaluates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pysync.postgres.types.booleans import format_bool
from pysync.postgres.types.datetimes import (
    format_date,
    format_time,
    format_timestamp,
    format_timestamptz,
)
from pysync.postgres.types.intervals import interval_literal
from pysync.postgres.types.numbers import format_float, format_float4, format_int, format_numeric

from ._ir import Node, elem, is_array
from .runtime.arrays import format_array

_FORMATTERS: dict[str, Callable[[Any], str]] = {
    "int2": format_int,
    "int4": format_int,
    "int8": format_int,
    "float4": format_float4,
    "float8": format_float,
    "numeric": format_numeric,
    "bool": format_bool,
    "text": str,
    "bpchar": str,
    "uuid": str,
    "date": format_date,
    "time": format_time,
    "timestamp": format_timestamp,
    "timestamptz": format_timestamptz,
    "interval": interval_literal,
}


def literal_text(t: str, value: Any) -> str:
    """Text Postgres' input function for ``t`` reads back as exactly ``value``."""
    if is_array(t):
        return format_array(value, _FORMATTERS[elem(t)])
    return _FORMATTERS[t](value)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Renderer:
    def __init__(self, inline: bool, views: Sequence[Any] = ()) -> None:
        self.inline = inline
        self.params: list[object] = []
        self.views = views
        """Per dependency, an object whose ``texts()`` are its values (``IN (SELECT ...)``
        becomes ``= ANY`` of them)."""

    def render(self, node: Node) -> str:
        method: Callable[[Node], str] = getattr(self, "_" + node.kind)
        return method(node)

    def _col(self, node: Node) -> str:
        text = quote_ident(node.name)
        # psycopg treats % as a placeholder marker in the query text
        return text if self.inline else text.replace("%", "%%")

    def _const(self, node: Node) -> str:
        t = node.type
        if node.value is None:
            return f"NULL::{t}"
        text = literal_text(t, node.value)
        if self.inline:
            return f"{quote_literal(text)}::{t}"
        self.params.append(text)
        return f"%s::{t}"

    def _and(self, node: Node) -> str:
        return "(" + " AND ".join(self.render(a) for a in node.args) + ")"

    def _or(self, node: Node) -> str:
        return "(" + " OR ".join(self.render(a) for a in node.args) + ")"

    def _not(self, node: Node) -> str:
        return f"(NOT {self.render(node.args[0])})"

    def _isnull(self, node: Node) -> str:
        return f"({self.render(node.args[0])} IS NULL)"

    def _notnull(self, node: Node) -> str:
        return f"({self.render(node.args[0])} IS NOT NULL)"

    def _istrue(self, node: Node) -> str:
        return f"({self.render(node.args[0])} IS TRUE)"

    def _isfalse(self, node: Node) -> str:
        return f"({self.render(node.args[0])} IS FALSE)"

    def _distinct(self, node: Node) -> str:
        a, b = (self.render(x) for x in node.args)
        return f"({a} IS DISTINCT FROM {b})"

    def _notdistinct(self, node: Node) -> str:
        a, b = (self.render(x) for x in node.args)
        return f"({a} IS NOT DISTINCT FROM {b})"

    def _op(self, node: Node) -> str:
        overload = node.extra.get("overload")
        if overload is not None:
            return str(overload.render([self.render(a) for a in node.args]))
        a, b = (self.render(x) for x in node.args)
        return f"({a} {node.name} {b})"

    def _in(self, node: Node) -> str:
        x, *items = (self.render(a) for a in node.args)
        return f"({x} IN ({', '.join(items)}))"

    def _any(self, node: Node) -> str:
        x, arr = (self.render(a) for a in node.args)
        return f"({x} {node.name} ANY ({arr}))"

    def _all(self, node: Node) -> str:
        x, arr = (self.render(a) for a in node.args)
        return f"({x} {node.name} ALL ({arr}))"

    def _cast(self, node: Node) -> str:
        inner = self.render(node.args[0])
        if node.extra.get("output"):
            # || and concat() apply the output function themselves
            return inner
        return f"CAST({inner} AS {node.type})"

    def _func(self, node: Node) -> str:
        overload = node.extra.get("overload")
        if overload is not None:
            return str(overload.render([self.render(a) for a in node.args]))
        args = ", ".join(self.render(a) for a in node.args)
        return f"{node.name}({args})"

    def _index(self, node: Node) -> str:
        arr, *subs = (self.render(a) for a in node.args)
        return f"({arr})" + "".join(f"[{s}]" for s in subs)

    def _array(self, node: Node) -> str:
        items = ", ".join(self.render(a) for a in node.args)
        return f"CAST(ARRAY[{items}] AS {node.type})"

    def _sublink(self, node: Node) -> str:
        casts: tuple[str, ...] = node.extra["casts"]
        enums: tuple[bool, ...] = node.extra["enums"]
        cols = [
            self.render(a) + ("::text" if enum else "")
            for a, enum in zip(node.args, enums, strict=True)
        ]
        if self.inline:
            return f"({', '.join(cols)} IN (SUBQUERY {node.extra['key']}))"
        values = self.views[node.value].texts()
        if len(cols) == 1:
            self.params.append(values)
            return f"({cols[0]} = ANY (%s::{quote_ident(casts[0])}[]))"
        for i in range(len(cols)):
            self.params.append([None if v is None else v[i] for v in values])
        arrays = ", ".join(f"%s::{quote_ident(t)}[]" for t in casts)
        return f"(({', '.join(cols)}) IN (SELECT * FROM unnest({arrays})))"

    def _like(self, node: Node) -> str:
        s, p, *escape = (self.render(a) for a in node.args)
        op = "LIKE" if node.name == "like" else "ILIKE"
        suffix = f" ESCAPE {escape[0]}" if escape else ""
        return f"({s} {op} {p}{suffix})"


def to_sql(node: Node, views: Sequence[Any] = ()) -> tuple[str, list[object]]:
    r = Renderer(inline=False, views=views)
    return r.render(node), r.params


def normalized(node: Node) -> str:
    return Renderer(inline=True).render(node)
