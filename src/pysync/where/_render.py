"""Typed tree -> SQL text, either with psycopg placeholders (snapshot query) or with
literals inlined (the normalised form used in shape identity keys).

Every operation is fully parenthesised and every implicit cast the checker inserted is
written out, so Postgres evaluates exactly what the in-process evaluator evaluates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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

from ._ir import (
    And,
    ArrayLiteral,
    Call,
    Cast,
    Column,
    Comparison,
    Const,
    Distinct,
    Function,
    Index,
    InList,
    Node,
    Not,
    NullTest,
    Operator,
    Or,
    Quantified,
    Sublink,
    TruthTest,
    elem,
    is_array,
)
from .runtime.arrays import format_array
from .runtime.enums import EnumType

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
    base = elem(t) if is_array(t) else t
    out = str if base.startswith("enum:") else _FORMATTERS[base]  # an enum value: its label
    return format_array(value, out) if is_array(t) else out(value)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Renderer:
    def __init__(
        self, inline: bool, views: Sequence[Any] = (), enums: Mapping[str, EnumType] | None = None
    ) -> None:
        self.inline = inline
        self.params: list[object] = []
        self.views = views
        """Per dependency, an object whose ``texts()`` are its values (``IN (SELECT ...)``
        becomes ``= ANY`` of them)."""
        self.enums = enums or {}
        """The clause's enum types (``enum:<name>``), whose SQL names its casts write."""

    def type_sql(self, t: str) -> str:
        """The type ``t`` as SQL (an enum type by its qualified name)."""
        if is_array(t):
            return self.type_sql(elem(t)) + "[]"
        if t.startswith("enum:"):
            sql = self.enums[t].sql
            # psycopg treats % as a placeholder marker in the query text (a quoted name)
            return sql if self.inline else sql.replace("%", "%%")
        return t

    def render(self, node: Node) -> str:
        match node:
            case Column():
                text = quote_ident(node.name)
                # psycopg treats % as a placeholder marker in the query text
                return text if self.inline else text.replace("%", "%%")
            case Const():
                return self._const(node)
            case And():
                return "(" + " AND ".join(self.render(a) for a in node.args) + ")"
            case Or():
                return "(" + " OR ".join(self.render(a) for a in node.args) + ")"
            case Not():
                return f"(NOT {self.render(node.args[0])})"
            case NullTest():
                test = "IS NOT NULL" if node.negated else "IS NULL"
                return f"({self.render(node.args[0])} {test})"
            case TruthTest():
                test = "IS TRUE" if node.truth else "IS FALSE"
                return f"({self.render(node.args[0])} {test})"
            case Distinct():
                a, b = (self.render(x) for x in node.args)
                test = "IS NOT DISTINCT FROM" if node.negated else "IS DISTINCT FROM"
                return f"({a} {test} {b})"
            case Operator() | Call():
                return node.overload.render([self.render(a) for a in node.args])
            case Comparison():
                return node.overload.render([self.render(a) for a in node.args])
            case InList():
                x, *items = (self.render(a) for a in node.args)
                return f"({x} IN ({', '.join(items)}))"
            case Quantified():
                x, arr = (self.render(a) for a in node.args)
                return f"({x} {node.op} {'ALL' if node.every else 'ANY'} ({arr}))"
            case Cast():
                inner = self.render(node.args[0])
                if node.output:
                    # || and concat() apply the output function themselves
                    return inner
                return f"CAST({inner} AS {self.type_sql(node.type)})"
            case Function():
                args = ", ".join(self.render(a) for a in node.args)
                return f"{node.name}({args})"
            case Index():
                arr, *subs = (self.render(a) for a in node.args)
                return f"({arr})" + "".join(f"[{s}]" for s in subs)
            case ArrayLiteral():
                listed = ", ".join(self.render(a) for a in node.args)
                return f"CAST(ARRAY[{listed}] AS {self.type_sql(node.type)})"
            case Sublink():
                return self._sublink(node)
        raise AssertionError(node)

    def _const(self, node: Const) -> str:
        t = self.type_sql(node.type)
        if node.value is None:
            return f"NULL::{t}"
        text = literal_text(node.type, node.value)
        if self.inline:
            return f"{quote_literal(text)}::{t}"
        self.params.append(text)
        return f"%s::{t}"

    def _sublink(self, node: Sublink) -> str:
        cols = [
            self.render(a) + ("::text" if enum else "")
            for a, enum in zip(node.args, node.enums, strict=True)
        ]
        if self.inline:
            return f"({', '.join(cols)} IN (SUBQUERY {node.key}))"
        values = self.views[node.dependency].texts()
        if len(cols) == 1:
            self.params.append(values)
            return f"({cols[0]} = ANY (%s::{quote_ident(node.casts[0])}[]))"
        for i in range(len(cols)):
            self.params.append([None if v is None else v[i] for v in values])
        arrays = ", ".join(f"%s::{quote_ident(t)}[]" for t in node.casts)
        return f"(({', '.join(cols)}) IN (SELECT * FROM unnest({arrays})))"


def to_sql(
    node: Node, views: Sequence[Any] = (), enums: Mapping[str, EnumType] | None = None
) -> tuple[str, list[object]]:
    r = Renderer(inline=False, views=views, enums=enums)
    return r.render(node), r.params


def normalized(node: Node, enums: Mapping[str, EnumType] | None = None) -> str:
    return Renderer(inline=True, enums=enums).render(node)
