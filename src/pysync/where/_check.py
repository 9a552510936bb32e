"""Parse a WHERE clause with sqlglot and turn it into a typed, validated tree (``Node``).

Everything not explicitly understood here is rejected: the evaluator and the SQL renderer
only ever see nodes this module built.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pglast import parser as pg
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

from pysync.postgres.catalog import Column as TableColumn
from pysync.postgres.catalog import Table
from pysync.postgres.types.arrays import parse_array
from pysync.postgres.types.numbers import INT_RANGES, NumericOverflow, parse_numeric

from . import registry
from ._calls import check_call_names
from ._fold import fold
from ._ir import (
    INT_TYPES,
    NUMERIC_TYPES,
    And,
    ArrayLiteral,
    Call,
    Cast,
    Column,
    Comparison,
    Const,
    Distinct,
    Index,
    InList,
    Node,
    Not,
    NullTest,
    Operator,
    Or,
    Param,
    Quantified,
    Sublink,
    TruthTest,
    WhereError,
    WhereRuntimeError,
    display,
    elem,
    is_array,
)
from ._limits import MAX_DEPTH, MAX_LIST_ITEMS, MAX_NODES, MAX_TERMS, over_limit
from ._memo import SizedCache
from ._operators import (
    Parser,
    UnknownOperator,
    UnknownPrefixOperator,
    correct_tokens,
    name_unknown_operators,
)
from ._sublinks import MARKER_PREFIX, SublinkSpec, cut_sublinks
from ._syntax import check_syntax
from .runtime.casts import IMPLICIT_CASTS, OUTPUT, cast_function, input_function
from .runtime.datetimes import time_zone
from .runtime.enums import EnumType

_DIALECT = Postgres()

_COLUMN_TYPES = {
    "int2": "int2",
    "int4": "int4",
    "int8": "int8",
    "float4": "float4",
    "float8": "float8",
    "numeric": "numeric",
    "bool": "bool",
    "text": "text",
    "varchar": "text",
    "bpchar": "bpchar",
    "uuid": "uuid",
    "date": "date",
    "time": "time",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "interval": "interval",
}

_DTYPES = {
    exp.DataType.Type.SMALLINT: "int2",
    exp.DataType.Type.INT: "int4",
    exp.DataType.Type.BIGINT: "int8",
    exp.DataType.Type.FLOAT: "float4",
    exp.DataType.Type.DOUBLE: "float8",
    exp.DataType.Type.DECIMAL: "numeric",
    exp.DataType.Type.BOOLEAN: "bool",
    exp.DataType.Type.TEXT: "text",
    exp.DataType.Type.VARCHAR: "text",
    exp.DataType.Type.BPCHAR: "bpchar",
    exp.DataType.Type.UUID: "uuid",
    exp.DataType.Type.DATE: "date",
    exp.DataType.Type.TIME: "time",
    exp.DataType.Type.TIMESTAMP: "timestamp",
    exp.DataType.Type.TIMESTAMPTZ: "timestamptz",
    exp.DataType.Type.INTERVAL: "interval",
}

_CMP_OPS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.GT: ">",
    exp.LTE: "<=",
    exp.GTE: ">=",
}
_ARITH_OPS: dict[type[exp.Expr], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.BitwiseAnd: "&",
    exp.BitwiseOr: "|",
    exp.BitwiseXor: "#",
}
_UNSUPPORTED_NAMES: dict[type[exp.Expr], str] = {
    exp.RegexpLike: "unknown binary operator ~",
    exp.RegexpILike: "unknown binary operator ~*",
    exp.SimilarTo: "SIMILAR TO is not supported",
    exp.Case: "CaseExpr is not supported in this context",
    exp.If: "CaseExpr is not supported in this context",
    exp.Nullif: "NullIfExpr is not supported in this context",
    exp.Subquery: "only `value IN (SELECT ...)` sublinks are supported right now",
    exp.Select: "only `value IN (SELECT ...)` sublinks are supported right now",
    exp.Exists: "only `value IN (SELECT ...)` sublinks are supported right now",
    exp.Mod: "unknown binary operator %",
    exp.BitwiseLeftShift: "unknown binary operator <<",
    exp.BitwiseRightShift: "unknown binary operator >>",
    exp.Tuple: "row expressions are not supported",
    exp.Slice: "array slices are not supported",
}
_TYPE_INPUT_FUNCTIONS = {
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "bool",
    "uuid",
    "text",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "interval",
}
FUNCTIONS = frozenset(
    {
        "lower",
        "upper",
        "coalesce",
        "greatest",
        "least",
        "concat",
        "array_cat",
        "array_append",
        "array_prepend",
        "timezone",
    }
    | _TYPE_INPUT_FUNCTIONS
    | {o.name for o in registry.OVERLOADS if o.form == "call"}
)
"""Every function of the language (the visitors below check each one's arguments); what
other front ends (SQLAlchemy shapes) may emit."""


def fold_identifier(ident: exp.Identifier) -> str:
    """Postgres folds unquoted identifiers to lower case (ASCII letters only)."""
    name: str = ident.this
    if ident.quoted:
        return name
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)


def position(e: exp.Expr) -> int:
    """The smallest source offset recorded in the subtree (sqlglot records identifiers,
    literals and function names), or 0."""
    best: int | None = None
    for node in e.walk():
        meta = node.meta if node._meta else None  # _meta avoids creating empty dicts
        if meta and "start" in meta:
            start = int(meta["start"])
            if best is None or start < best:
                best = start
    return best or 0


class Parsed(NamedTuple):
    tree: exp.Expr
    sublinks: tuple[SublinkSpec, ...]
    """The clause's ``IN (SELECT ...)`` sublinks; markers stand for them in ``tree``."""


# Parse trees by clause text (the checker never changes a tree): shapes per user share a
# clause and differ only in params, and parsing is most of the cost of a new shape. A tree
# takes about 150 bytes per character of its clause: at most ~80 MB for 512 KiB of text.
_PARSED: SizedCache[str, Parsed] = SizedCache(
    max_entries=4096, max_total_cost=512 * 1024, max_entry_cost=8 * 1024
)


def parse(clause: str) -> Parsed:
    """One expression, nothing else: Postgres' syntax check first (``_syntax``), its
    sublinks cut out (``_sublinks``), then sqlglot's tree, bounded in depth and list
    sizes (``_limits``)."""
    parsed = _PARSED.get(clause)
    if parsed is None:
        text, sublinks = cut_sublinks(check_syntax(clause))
        parsed = Parsed(_parse(text), tuple(sublinks))
        _PARSED.put(clause, parsed, len(clause))
    return parsed


def _parse(clause: str) -> exp.Expr:
    text, spaced = _space_params(clause)
    try:
        tokens = _DIALECT.tokenize(text)
    except TokenError as e:
        raise WhereError(f"unsupported syntax: {e}", 0) from None
    _reject_like_function_form(tokens)
    tokens, unknown = correct_tokens(text, tokens, spaced)
    try:
        parsed = Parser(dialect=_DIALECT).parse(tokens, text)
    except ParseError as e:
        # Postgres accepted the clause: sqlglot does not know this syntax.
        location = 0
        near = ""
        if e.errors:
            first = e.errors[0]
            near = first.get("highlight") or ""
            location = max(0, _offset(text, first.get("line", 1), first.get("col", 1)) - len(near))
        raise WhereError(f'unsupported syntax at or near "{near}"', location) from None
    if len(parsed) != 1 or parsed[0] is None:
        raise WhereError("malformed query ending with SQL clauses")
    tree: exp.Expr = parsed[0]
    if unknown:
        tree = name_unknown_operators(tree, unknown)
    if spaced:
        _unshift(tree, spaced)
    check_call_names(tree, clause, _HANDLERS)
    _check_size(tree)
    return tree


def _space_params(text: str) -> tuple[str, list[int]]:
    """A space after each ``$n`` directly followed by more: sqlglot's tokenizer reads
    ``$1,$2`` as the start of a dollar-quoted string and fails. Returns the text for
    sqlglot and where spaces went (positions in that text)."""
    if "$" not in text:
        return text, []
    ends = [
        t.end + 1
        for t in pg.scan(text)
        if t.name == "PARAM" and t.end + 1 < len(text) and not text[t.end + 1].isspace()
    ]
    if not ends:
        return text, []
    parts: list[str] = []
    spaced: list[int] = []
    start = 0
    for end in ends:
        parts += [text[start:end], " "]
        spaced.append(end + len(spaced))
        start = end
    parts.append(text[start:])
    return "".join(parts), spaced


def _unshift(tree: exp.Expr, spaced: list[int]) -> None:
    """Source offsets back to the clause's own (less the spaces added before them)."""
    for node in tree.walk():
        meta = node.meta if node._meta else None
        if meta:
            for key in ("start", "end"):
                if key in meta:
                    meta[key] -= bisect_left(spaced, meta[key])


def _check_size(tree: exp.Expr) -> None:
    """MAX_DEPTH and MAX_LIST_ITEMS, without recursion: the checker, compiler and renderer
    recurse once per level of what passes."""
    stack: list[tuple[exp.Expr, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise WhereError(over_limit("expression depth", MAX_DEPTH), position(node))
        if isinstance(node, exp.In | exp.Array) and len(node.expressions) > MAX_LIST_ITEMS:
            raise WhereError(over_limit("number of list items", MAX_LIST_ITEMS), position(node))
        chain = type(node) if isinstance(node, exp.And | exp.Or) else None
        for child in node.iter_expressions():
            if isinstance(child, exp.Identifier):  # the name of a column or function
                continue
            flat = type(child) is chain or isinstance(child, exp.Paren)
            stack.append((child, depth if flat else depth + 1))


def _index_shifted(base: exp.Expr) -> bool:
    """Did sqlglot store the subscript of ``base[...]`` 0-based? It subtracts Postgres'
    offset 1 only where it typed the base (annotated in place while parsing) as an array
    or unknown: not for ``(a || 4)[1]``, whose ``||`` it types as text."""
    typed = base.type
    return typed is None or typed.this in (exp.DataType.Type.UNKNOWN, exp.DataType.Type.ARRAY)


def _offset(clause: str, line: int, col: int) -> int:
    lines = clause.split("\n")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col


def _reject_like_function_form(tokens: list[Any]) -> None:
    # sqlglot reads like(a, b) as "b LIKE a" (SQLite's argument order); Postgres means
    # "a LIKE b". The function form cannot be told apart afterwards, so refuse it here.
    for i, tok in enumerate(tokens):
        if (
            tok.token_type in (TokenType.LIKE, TokenType.ILIKE)
            and i + 1 < len(tokens)
            and tokens[i + 1].token_type == TokenType.L_PAREN
        ):
            before = tokens[i - 1].token_type if i else None
            if before in (
                None,
                TokenType.L_PAREN,
                TokenType.COMMA,
                TokenType.AND,
                TokenType.OR,
                TokenType.NOT,
                TokenType.EQ,
                TokenType.NEQ,
                TokenType.LT,
                TokenType.GT,
                TokenType.LTE,
                TokenType.GTE,
            ):
                raise WhereError(
                    "the like()/ilike() function forms are not supported; "
                    "use the LIKE / ILIKE operators",
                    tok.start,
                )


def column_type(column: TableColumn) -> str | None:
    kind, name = column.type_kind, column.type_name
    if kind == "d" and column.base_type and not column.dims:
        # Postgres (and Electric) treat a domain as its base type in operators and functions
        kind, name = column.base_kind, column.base_type
    if kind == "e":
        base = f"enum:{name}"
    elif kind == "b":
        mapped = _COLUMN_TYPES.get(name)
        if mapped is None:
            return None
        base = mapped
    else:
        return None
    return base + "[]" if column.dims else base


def _numeric_common(a: str, b: str) -> str:
    if a in INT_TYPES and b in INT_TYPES:
        return a if INT_TYPES.index(a) >= INT_TYPES.index(b) else b
    if a in INT_TYPES + ("numeric",) and b in INT_TYPES + ("numeric",):
        return "numeric"
    if a == "float4" and b == "float4":
        return "float4"
    return "float8"


_DATETIME_RANK = {"date": 0, "timestamp": 1, "timestamptz": 2}


def common_type(a: str, b: str) -> str | None:
    """The type both sides of a comparison (or members of IN/COALESCE...) convert to."""
    if a == b:
        return "text" if a == "unknown" else a
    if a == "unknown":
        return b
    if b == "unknown":
        return a
    if a in NUMERIC_TYPES and b in NUMERIC_TYPES:
        return _numeric_common(a, b)
    if a in ("text", "bpchar") and b in ("text", "bpchar"):
        return "text"
    if a in _DATETIME_RANK and b in _DATETIME_RANK:
        return a if _DATETIME_RANK[a] > _DATETIME_RANK[b] else b
    return None


SUBLINK_TYPES = frozenset(
    {
        "int2",
        "int4",
        "int8",
        "text",
        "varchar",
        "uuid",
        "bool",
        "date",
        "time",
        "timestamp",
        "timestamptz",
    }
)
"""Column types an ``IN (SELECT ...)`` may compare: those whose text form is unique per
value (given pysync's fixed display settings), so values are compared, hashed into tags
and sent back to Postgres as their text. numeric (1.0 = 1.00), floats (-0 = 0), intervals
('1 day' = '24 hours'), bpchar (padding) and arrays are not."""


@dataclass(frozen=True)
class SublinkType:
    """What a sublink of the clause refers to, resolved by the caller."""

    dependency: int
    """Number of the dependency: sublinks with equal subqueries share one."""
    key: str
    """Identity of the dependency (it names the subquery in the normalised clause)."""
    columns: tuple[TableColumn, ...]
    """The subquery's columns, in its SELECT order."""


_UNICODE_CTYPES = frozenset({"C.UTF-8", "C.utf8", "C.UTF8", "C.utf-8"})


def case_mapping(collation: str) -> str | None:
    """How lower()/upper()/ILIKE map case under a collation (``provider:collate:ctype``):
    ``unicode`` (libc's C.UTF-8: per character, simple mapping), ``builtin`` (the builtin
    provider's C.UTF-8: the same by Postgres' Unicode tables), ``ascii`` (C, POSIX), or None
    where pysync cannot reproduce it (ICU, libc locales such as en_US or tr_TR,
    PG_UNICODE_FAST's full mapping)."""
    provider, _, rest = collation.partition(":")
    ctype = rest.partition(":")[2]
    if provider in ("libc", "builtin"):
        if ctype in ("C", "POSIX"):
            return "ascii"
        if ctype in _UNICODE_CTYPES:
            return "unicode" if provider == "libc" else "builtin"
    return None


def code_point_order(collation: str) -> bool:
    """Whether text sorts by code point under a collation (as pysync compares strings):
    the builtin provider's, and libc's C, POSIX and C.UTF-8; not ICU or other locales."""
    provider, _, rest = collation.partition(":")
    collate = rest.partition(":")[0]
    if provider == "builtin":
        return True
    return provider == "libc" and (collate in ("C", "POSIX") or collate in _UNICODE_CTYPES)


_PG_TYPE_NAMES = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "bpchar": "character",
    "time": "time without time zone",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}


def pg_type_name(t: str) -> str:
    """A type as Postgres' messages name it (format_type)."""
    if is_array(t):
        return pg_type_name(elem(t)) + "[]"
    if t.startswith("enum:"):
        return t[5:]
    return _PG_TYPE_NAMES.get(t, t)


def readable_type(column: TableColumn) -> str:
    """A column type in Electric's words: ``int4``, ``enum mood``, ``text[]``."""
    base = f"enum {column.type_name}" if column.type_kind == "e" else column.type_name
    return base + "[]" * column.dims


class Checker:
    def __init__(
        self,
        clause: str,
        table: Table,
        params: Mapping[int, str] | None,
        sublinks: Mapping[str, tuple[SublinkSpec, SublinkType]] | None = None,
    ) -> None:
        self.clause = clause
        self.table = table
        self.params = dict(params or {})
        self.param_types: dict[int, str] = {}
        self.columns: set[str] = set()
        self.sublinks = sublinks or {}
        """Sublinks by marker identifier."""
        self.enums: dict[str, EnumType] = {}
        """The enum types of the columns read (``enum:<name>``), with their labels' order."""

    # ------------------------------------------------------------ entry

    def check_clause(self, e: exp.Expr) -> Node:
        node = self.check(e)
        if node.type == "unknown":
            node = self.coerce(node, "bool")
        if node.type != "bool":
            raise WhereError("WHERE clause must return a boolean")
        return node

    def collation(self, nodes: Sequence[Node], e: exp.Expr | Node) -> str:
        """The collation an operation on ``nodes`` uses: that of the columns it reads
        (Postgres' implicit derivation), else the database's default."""
        found: set[str] = set()
        for node in nodes:
            pending = [node]
            while pending:
                n = pending.pop()
                if isinstance(n, Column):
                    column = self.table.column(n.name)
                    if column is not None and column.collation:
                        found.add(column.collation)
                pending.extend(n.args)
        if len(found) > 1:
            raise self.fail(
                "could not determine which collation to use (the columns' collations differ)", e
            )
        return found.pop() if found else self.table.collation

    def case_of(self, what: str, nodes: Sequence[Node], e: exp.Expr | Node) -> str:
        collation = self.collation(nodes, e)
        mapping = case_mapping(collation)
        if mapping is None:
            provider, _, rest = collation.partition(":")
            raise self.fail(
                f"{what} depends on the ctype {rest.partition(':')[2]!r} ({provider}), whose "
                "case mapping pysync cannot reproduce; only C, POSIX and C.UTF-8 are supported",
                e,
            )
        return mapping

    def check_equality(self, what: str, nodes: Sequence[Node], e: exp.Expr | Node) -> None:
        collation = self.collation(nodes, e)
        if collation.endswith(":nondeterministic"):
            raise self.fail(
                f"{what} on text depends on the nondeterministic collation "
                f"{collation.split(':')[1]!r}, whose equality pysync cannot reproduce",
                e,
            )

    def check_order(self, what: str, nodes: Sequence[Node], e: exp.Expr | Node) -> None:
        collation = self.collation(nodes, e)
        if not code_point_order(collation):
            provider, _, rest = collation.partition(":")
            raise self.fail(
                f"{what} on text depends on the collation {rest.partition(':')[0]!r} "
                f"({provider}), whose order pysync cannot reproduce; only C, POSIX and "
                "C.UTF-8 are supported",
                e,
            )

    def fail(self, reason: str, e: exp.Expr | Node) -> WhereError:
        pos = e.pos if isinstance(e, Node) else position(e)
        return WhereError(reason, pos)

    # ------------------------------------------------------------ coercion

    def coerce(self, node: Node, target: str) -> Node:
        """node converted to ``target`` implicitly (literals are parsed as ``target``)."""
        if node.type == target:
            return node
        if isinstance(node, Const) and node.type == "unknown":
            return self._type_literal(node, target)
        if isinstance(node, ArrayLiteral) and is_array(target) and node.untyped:
            items = tuple(self.coerce(a, elem(target)) for a in node.args)
            return ArrayLiteral(type=target, args=items, pos=node.pos)
        if (node.type, target) in IMPLICIT_CASTS:
            cast = Cast(type=target, args=(node,), pos=node.pos, implicit=True)
            return self._fold(cast)
        raise self.fail(f"cannot use {display(node.type)} as {display(target)}", node)

    def _type_literal(self, node: Const, target: str) -> Node:
        if isinstance(node, Param):
            seen = self.param_types.setdefault(node.number, target)
            if seen != target:
                raise self.fail(
                    f"type conflict for ${node.number}: {display(seen)} and {display(target)}", node
                )
        if node.value is None:
            return _retyped(node, target, None)
        text: str = node.value
        enum = self.enums.get(elem(target) if is_array(target) else target)
        try:
            if enum is None:
                value = input_function(target)(text)
            else:
                # a label the catalog listed (an enum type only comes from a column read)
                value = parse_array(enum.value)(text) if is_array(target) else enum.value(text)
        except NumericOverflow as exc:
            raise self.fail(str(exc), node) from None
        except (ValueError, KeyError) as exc:
            if enum is not None:
                raise self.fail(str(exc), node) from None
            raise self.fail(f"invalid syntax for type {display(target)}: {text}", node) from None
        return _retyped(node, target, value)

    def unify(self, nodes: list[Node], what: str, e: exp.Expr) -> tuple[str, list[Node]]:
        t = "unknown"
        first: str | None = None
        for n in nodes:
            if n.type == "unknown":
                continue  # as Postgres' select_common_type: text only if all are unknown
            first = first or n.type
            c = common_type(t, n.type)
            if c is None:
                raise self.fail(
                    f"{what} types {display(t)} and {display(n.type)} cannot be matched", e
                )
            t = c
        if t == "unknown":
            t = "text"
        elif t == "text" and first == "bpchar":
            # Strings convert to each other implicitly both ways, so select_common_type
            # keeps the first one's type: coalesce(c, s) is bpchar.
            t = "bpchar"
        return t, [self.coerce(n, t) for n in nodes]

    # ------------------------------------------------------------ dispatch

    def check(self, e: exp.Expr) -> Node:
        for cls, reason in _UNSUPPORTED_NAMES.items():
            if isinstance(e, cls):
                raise self.fail(reason, e)
        if isinstance(e, exp.Window | exp.Filter | exp.WithinGroup) or (
            isinstance(e, exp.AggFunc) and _aggregate_syntax(e)
        ):
            # Electric's rule: a call is an aggregation by its syntax (*, DISTINCT, ORDER BY,
            # FILTER, OVER, WITHIN GROUP); sum(x) is just an unknown function
            raise self.fail("aggregation is not supported in this context", e)
        handler = _HANDLERS.get(type(e))
        if handler is None:
            if isinstance(e, exp.Func) and not isinstance(
                e, exp.CurrentTimestamp | exp.JSONExtractScalar
            ):
                n = sum(
                    len(v) if isinstance(v, list) else 1
                    for v in e.args.values()
                    if isinstance(v, exp.Expr | list)
                )
                raise self.fail(f"unknown or unsupported function {e.sql_name().lower()}/{n}", e)
            raise self.fail(f"{type(e).__name__} is not supported in this context", e)
        node: Node = handler(self, e)
        return node

    def _paren(self, e: exp.Paren) -> Node:
        return self.check(e.this)

    def _column(self, e: exp.Column) -> Node:
        if e.args.get("table") is not None:
            raise self.fail("qualified column references are not supported", e)
        ident = e.this
        if not isinstance(ident, exp.Identifier):
            raise self.fail(f"{type(ident).__name__} is not supported in this context", e)
        name = fold_identifier(ident)
        column = self.table.column(name)
        if column is None:
            raise self.fail(f"unknown reference {name}", e)
        t = column_type(column)
        if t is None:
            raise self.fail(f"column {name} has unsupported type {column.type_name}", e)
        if column.enum_type:
            self._enum_type(t.removesuffix("[]"), column, e)
        self.columns.add(name)
        return Column(
            type=t,
            name=name,
            pos=position(e),
            varchar=(column.base_type or column.type_name) == "varchar",
        )

    def _enum_type(self, t: str, column: TableColumn, e: exp.Expr) -> None:
        """Remember the enum type ``t`` of ``column``: its labels' order, its SQL name."""
        known = self.enums.get(t)
        if known is None:
            self.enums[t] = EnumType(t, column.enum_type, column.enum_labels)
        elif known.sql != column.enum_type:
            # The checker names enum types by typname alone: two of one name would be one.
            raise self.fail(
                f"the enum types {known.sql} and {column.enum_type} have the same name; "
                "a clause may read only one of them",
                e,
            )

    def _enum_named(self, kind: object, e: exp.Expr) -> str | None:
        """The enum type a cast names (``mood``, ``public.mood``), if it is that of one of
        the table's columns: the only enum types pysync has the labels of. An unqualified
        name is taken as the column's type, as the search path finds it in the usual
        setup (one type of that name)."""
        if isinstance(kind, exp.Identifier):
            schema, name = None, fold_identifier(kind)
        elif (
            isinstance(kind, exp.Dot)
            and isinstance(kind.this, exp.Identifier)
            and isinstance(kind.expression, exp.Identifier)
        ):
            schema, name = fold_identifier(kind.this), fold_identifier(kind.expression)
        else:
            return None
        found = [
            c
            for c in self.table.columns
            if c.enum_type
            and (c.base_type if c.type_kind == "d" else c.type_name) == name
            and (schema is None or c.enum_type == f"{quote_name(schema)}.{quote_name(name)}")
        ]
        if not found or any(c.enum_type != found[0].enum_type for c in found):
            return None
        t = f"enum:{name}"
        self._enum_type(t, found[0], e)
        return t

    def _literal(self, e: exp.Literal) -> Node:
        pos = position(e)
        if e.is_string:
            return Const(type="unknown", value=e.this, pos=pos)
        return self._number(str(e.this), pos, e)

    def _number(self, text: str, pos: int, e: exp.Expr) -> Node:
        digits = text.lstrip("-")
        if digits.isdigit() and len(digits.lstrip("0")) <= 19:  # longer ones are numeric
            v = int(text)
            for t in ("int4", "int8"):
                lo, hi = INT_RANGES[t]
                if lo <= v <= hi:
                    return Const(type=t, value=v, pos=pos)
        try:
            return Const(type="numeric", value=parse_numeric(text), pos=pos)
        except NumericOverflow as exc:
            raise self.fail(str(exc), e) from None
        except ValueError:
            raise self.fail(f'syntax error at or near "{text}"', e) from None

    def _bytestring(self, e: exp.ByteString) -> Node:  # E'...'
        return Const(type="unknown", value=e.this, pos=position(e))

    def _rawstring(self, e: exp.RawString) -> Node:  # $$...$$
        return Const(type="unknown", value=e.this, pos=position(e))

    def _boolean(self, e: exp.Boolean) -> Node:
        return Const(type="bool", value=bool(e.this), pos=position(e))

    def _null(self, e: exp.Null) -> Node:
        return Const(type="unknown", value=None, pos=position(e))

    def _parameter(self, e: exp.Parameter) -> Node:
        inner = e.this
        if not (
            isinstance(inner, exp.Literal) and not inner.is_string and str(inner.this).isdigit()
        ):
            raise self.fail("unsupported parameter syntax", e)
        n = int(inner.this)  # Postgres' parser refused numbers beyond int4
        pos = max(0, position(e) - 1)  # sqlglot records the digits; Postgres the "$"
        if n not in self.params:
            raise WhereError(f"parameter ${n} was not provided", pos)
        value = self.params[n]
        if "\x00" in value:  # Postgres rejects NUL in any text value
            raise WhereError('invalid byte sequence for encoding "UTF8": 0x00', pos)
        return Param(type="unknown", value=value, pos=pos, number=n)

    # ------------------------------------------------------------ logic

    def _bool_arg(self, e: exp.Expr, what: str) -> Node:
        node = self.check(e)
        if node.type == "unknown":
            node = self.coerce(node, "bool")
        if node.type != "bool":
            raise self.fail(f"argument of {what} must be bool, not {display(node.type)}", e)
        return node

    def _and(self, e: exp.And) -> Node:
        args = self._flatten(e, exp.And, "AND")
        return And(type="bool", args=tuple(args), pos=args[0].pos)

    def _or(self, e: exp.Or) -> Node:
        args = self._flatten(e, exp.Or, "OR")
        return Or(type="bool", args=tuple(args), pos=args[0].pos)

    def _flatten(self, e: exp.Expr, cls: type[exp.Expr], what: str) -> list[Node]:
        """The terms of a chain ``a AND b AND c`` (a left-deep tree in sqlglot), in order,
        without recursion: a chain may have thousands of terms."""
        terms: list[exp.Expr] = []
        pending = [e]
        while pending:
            node = pending.pop()
            if isinstance(node, cls):
                pending.append(node.expression)
                pending.append(node.this)
            else:
                terms.append(node)
        if len(terms) > MAX_TERMS:
            raise self.fail(over_limit(f"number of {what} terms", MAX_TERMS), e)
        return [self._bool_arg(term, what) for term in terms]

    def _not(self, e: exp.Not) -> Node:
        inner = e.this
        if isinstance(inner, exp.In | exp.Between | exp.Like | exp.ILike | exp.Escape | exp.Is):
            node = self.check(inner)
        else:
            node = self._bool_arg(inner, "NOT")
        return Not(type="bool", args=(node,), pos=position(e))

    def _is(self, e: exp.Is) -> Node:
        target = e.expression
        node = self.check(e.this)
        if isinstance(target, exp.Null):
            if node.type == "unknown":
                node = self.coerce(node, "text")  # Postgres resolves a bare literal as text
            return NullTest(
                type="bool", args=(node,), pos=node.pos, negated=bool(e.args.get("negate"))
            )
        if isinstance(target, exp.Boolean):
            if node.type == "unknown":
                node = self.coerce(node, "bool")
            if node.type != "bool":
                word = "TRUE" if target.this else "FALSE"
                raise self.fail(f"argument of IS {word} must be bool, not {display(node.type)}", e)
            result: Node = TruthTest(
                type="bool", args=(node,), pos=node.pos, truth=bool(target.this)
            )
            if e.args.get("negate"):
                result = Not(type="bool", args=(result,), pos=node.pos)
            return result
        raise self.fail(f"IS {type(target).__name__} is not supported", e)

    # ------------------------------------------------------------ comparisons

    def _comparison(self, e: exp.Binary, op: str) -> Node:
        right = e.expression
        if isinstance(right, exp.Any) or (
            isinstance(right, exp.Anonymous) and str(right.this).lower() in ("all", "some", "any")
        ):
            return self._any_all(e, op, right)
        left = self.check(e.this)
        rnode = self.check(right)
        return self.compare(op, left, rnode, e)

    def compare(self, op: str, left: Node, right: Node, e: exp.Expr) -> Comparison:
        self._no_enum_domain(op, left, right, e)
        t = common_type(left.type, right.type)
        if {left.type, right.type} == {"text", "bpchar"} and (_varchar(left) or _varchar(right)):
            # varchar = bpchar resolves to bpchar's operator (text = bpchar to text's)
            t = "bpchar"
        if t is None and is_array(left.type) and isinstance(right, ArrayLiteral) and right.untyped:
            t = left.type
        if t is None and is_array(right.type) and isinstance(left, ArrayLiteral) and left.untyped:
            t = right.type
        if t is None:
            raise self.fail(
                f"Could not select an operator overload for {display(left.type)} {op} {display(right.type)}",
                e,
            )
        overload = self._check_comparable(op, t, e)
        if _texts(t):
            self.check_equality(op, (left, right), e)
            if op not in ("=", "<>"):
                self.check_order(op, (left, right), e)
        if t in ("timestamp", "timestamptz") and {left.type, right.type} == {"date", t}:
            # Postgres' date-timestamp operators compare over the whole date range (a
            # cast to timestamp would fail past 294276 AD)
            mixed = registry.lookup(op, "infix", (left.type, right.type))
            assert mixed is not None  # declared for each comparison
            return Comparison(
                type="bool",
                args=(left, right),
                pos=left.pos,
                op=op,
                compared_as=t,
                date_mixed=True,
                overload=mixed,
            )
        left, right = self.coerce(left, t), self.coerce(right, t)
        return Comparison(
            type="bool",
            args=(left, right),
            pos=left.pos,
            op=op,
            compared_as=t,
            overload=overload,
        )

    def _no_enum_domain(self, op: str, left: Node, right: Node, e: exp.Expr) -> None:
        """Postgres has no comparison for a domain over an enum: its enum operators take
        ``anyenum``, which such a domain is not (coalesce and greatest/least, which look
        up the base type's order, take it)."""
        names = [self._enum_domain(n) for n in (left, right)]
        if names[0] is None and names[1] is None:
            return
        shown = [name or pg_type_name(n.type) for name, n in zip(names, (left, right), strict=True)]
        raise self.fail(f"operator does not exist: {shown[0]} {op} {shown[1]}", e)

    def _enum_domain(self, node: Node) -> str | None:
        """The domain's name if ``node`` reads a column of a domain over an enum."""
        if not isinstance(node, Column):
            return None
        column = self.table.column(node.name)
        if column is None or column.type_kind != "d" or column.base_kind != "e":
            return None
        return column.type_name

    def _check_comparable(self, op: str, t: str, e: exp.Expr) -> registry.Overload:
        """The registry's ``op`` for two values of ``t``."""
        overload = registry.lookup(op, "infix", (t, t))
        if overload is not None:
            return overload
        raise self.fail(
            f"Could not select an operator overload for {display(t)} {op} {display(t)}", e
        )

    def _eq(self, e: exp.EQ) -> Node:
        return self._comparison(e, "=")

    def _neq(self, e: exp.NEQ) -> Node:
        return self._comparison(e, "<>")

    def _lt(self, e: exp.LT) -> Node:
        return self._comparison(e, "<")

    def _gt(self, e: exp.GT) -> Node:
        return self._comparison(e, ">")

    def _lte(self, e: exp.LTE) -> Node:
        return self._comparison(e, "<=")

    def _gte(self, e: exp.GTE) -> Node:
        return self._comparison(e, ">=")

    def _nullsafeeq(self, e: exp.NullSafeEQ) -> Node:
        return self._distinct(e, negated=True)

    def _nullsafeneq(self, e: exp.NullSafeNEQ) -> Node:
        return self._distinct(e, negated=False)

    def _distinct(self, e: exp.Binary, negated: bool) -> Node:
        node = self.compare("=", self.check(e.this), self.check(e.expression), e)
        return Distinct(
            type="bool",
            args=node.args,
            pos=node.pos,
            negated=negated,
            compared_as=node.compared_as,
            overload=node.overload,
        )

    def _any_all(self, e: exp.Binary, op: str, right: exp.Expr) -> Node:
        every = False
        if isinstance(right, exp.Any):
            inner = right.this
            if isinstance(inner, exp.Paren):
                inner = inner.this
        else:
            if str(right.this).lower() == "all":
                every = True
            if len(right.expressions) != 1:
                raise self.fail(f"{str(right.this).upper()} takes exactly one argument", right)
            inner = right.expressions[0]
        if isinstance(inner, exp.Select | exp.Subquery):
            raise self.fail("subqueries are not supported", inner)
        left = self.check(e.this)
        arr = self.check(inner)
        self._no_enum_domain(op, left, arr, e)
        if arr.type == "unknown":
            if left.type == "unknown":
                left = self.coerce(left, "text")
            arr = self.coerce(arr, left.type + "[]")
        if not is_array(arr.type):
            raise self.fail("argument of ANY must be an array", inner)
        et = elem(arr.type)
        t = common_type(left.type, et)
        if t != et:
            raise self.fail(
                f"Could not select an operator overload for {display(left.type)} {op} {display(et)}",
                e,
            )
        overload = self._check_comparable(op, t, e)
        if _texts(t):
            self.check_equality(op, (left, arr), e)
            if op not in ("=", "<>"):
                self.check_order(op, (left, arr), e)
        left = self.coerce(left, t)
        return Quantified(
            type="bool",
            args=(left, arr),
            pos=left.pos,
            op=op,
            compared_as=t,
            every=every,
            overload=overload,
        )

    def _in(self, e: exp.In) -> Node:
        if (
            e.args.get("query") is not None
            or e.args.get("unnest") is not None
            or e.args.get("field") is not None
        ):
            raise self.fail("only `value IN (SELECT ...)` sublinks are supported right now", e)
        sublink = self._marker(e)
        if sublink is not None:
            return self._sublink(e, *sublink)
        left = self.check(e.this)
        items = [self.check(x) for x in e.expressions]
        # As Postgres' transformAExprIn: items that read a column, or a lone constant, are
        # compared one by one with their own operator (varchar = bpchar is bpchar's);
        # only two or more constants share one common type (an array comparison).
        constants = [i for i in items if not _reads_column(i)]
        singles = [i for i in items if _reads_column(i)]
        parts: list[Node] = []
        if len(constants) > 1:
            t, unified = self.unify([left, *constants], "IN", e)
            # an array of the items' common type, as Postgres builds it
            self._no_enum_domain("=", left, unified[1], e)
            equality = self._check_comparable("=", t, e)
            if t in ("text", "bpchar"):
                self.check_equality("IN", unified, e)
            parts.append(
                InList(
                    type="bool",
                    args=tuple(unified),
                    pos=left.pos,
                    compared_as=t,
                    overload=equality,
                )
            )
        else:
            singles = constants + singles
        parts.extend(self.compare("=", left, item, e) for item in singles)
        if len(parts) == 1:
            return parts[0]
        return Or(type="bool", args=tuple(parts), pos=left.pos)

    def _marker(self, e: exp.In) -> tuple[SublinkSpec, SublinkType] | None:
        """The sublink an IN list of one marker stands for."""
        if len(e.expressions) != 1:
            return None
        item = e.expressions[0]
        if not (
            isinstance(item, exp.Column)
            and isinstance(item.this, exp.Identifier)
            and item.this.quoted
            and str(item.this.this).startswith(MARKER_PREFIX)
        ):
            return None
        found: tuple[SublinkSpec, SublinkType] | None = self.sublinks.get(str(item.this.this))
        if found is None or position(item) not in (found[0].start + 1, found[0].start + 2):
            return None
        return found

    def _sublink(self, e: exp.In, spec: SublinkSpec, target: SublinkType) -> Node:
        left = e.this
        while isinstance(left, exp.Paren):
            left = left.this
        refs = left.expressions if isinstance(left, exp.Tuple) else [left]
        if not all(isinstance(r, exp.Column) for r in refs):
            raise WhereError(
                "currently, left side of `IN (SELECT ...)` can only be a column reference or a "
                "list of column references",
                spec.location,
            )
        nodes = [self._column(r) for r in refs if isinstance(r, exp.Column)]
        tested = [self.table.column(n.name) for n in nodes if isinstance(n, Column)]
        assert all(c is not None for c in tested)
        mine = [readable_type(c) for c in tested if c is not None]
        theirs = [readable_type(c) for c in target.columns]
        if mine != theirs:
            left_type = (
                mine[0] if not isinstance(left, exp.Tuple) else f"row of ({', '.join(mine)})"
            )
            right_type = theirs[0] if len(theirs) == 1 else f"row of ({', '.join(theirs)})"
            raise WhereError(
                f"left side of `IN (SELECT ...)` has type {left_type} but subquery returns "
                f"{right_type}[]",
                spec.location,
            )
        for column in target.columns:
            if column.dims or not (column.type_kind == "e" or column.type_name in SUBLINK_TYPES):
                raise WhereError(
                    f"`IN (SELECT ...)` is not supported for columns of type "
                    f"{readable_type(column)}: only integers, text, varchar, uuid, bool, "
                    "dates, times, timestamps and enums",
                    spec.location,
                )
        casts = tuple("text" if c.type_kind == "e" else c.type_name for c in target.columns)
        return Sublink(
            type="bool",
            args=tuple(nodes),
            pos=spec.location,
            dependency=target.dependency,
            key=target.key,
            casts=casts,
            enums=tuple(c.type_kind == "e" for c in target.columns),
        )

    def _between(self, e: exp.Between) -> Node:
        x = self.check(e.this)
        low = self.check(e.args["low"])
        high = self.check(e.args["high"])
        lo1 = self.compare(">=", x, low, e)
        hi1 = self.compare("<=", x, high, e)
        node: Node = And(type="bool", args=(lo1, hi1), pos=x.pos)
        if e.args.get("symmetric"):
            lo2 = self.compare(">=", x, high, e)
            hi2 = self.compare("<=", x, low, e)
            other = And(type="bool", args=(lo2, hi2), pos=x.pos)
            node = Or(type="bool", args=(node, other), pos=x.pos)
        return node

    # ------------------------------------------------------------ LIKE

    def _like(self, e: exp.Like) -> Node:
        return self._like_node(e, "like", None)

    def _ilike(self, e: exp.ILike) -> Node:
        return self._like_node(e, "ilike", None)

    def _escape(self, e: exp.Escape) -> Node:
        inner = e.this
        negate = False
        if isinstance(inner, exp.Not):
            inner, negate = inner.this, True
        if not isinstance(inner, exp.Like | exp.ILike):
            raise self.fail("ESCAPE is only supported with LIKE / ILIKE", e)
        escape = self.coerce(self.check(e.expression), "text")
        node = self._like_node(inner, "like" if isinstance(inner, exp.Like) else "ilike", escape)
        return Not(type="bool", args=(node,), pos=node.pos) if negate else node

    def _like_node(self, e: exp.Like | exp.ILike, name: str, escape: Node | None) -> Node:
        if isinstance(e.expression, exp.Any | exp.Anonymous):
            raise self.fail(f"{name.upper()} ANY/ALL is not supported", e)
        s = self.check(e.this)
        pattern = self.check(e.expression)
        if s.type == "unknown":
            s = self.coerce(s, "text")
        if s.type not in ("text", "bpchar"):
            raise self.fail(
                f"Could not select an operator overload for {display(s.type)} "
                f"{'~~' if name == 'like' else '~~*'} {display(pattern.type)}",
                e,
            )
        pattern = self.coerce(pattern, "text")
        args = (s, pattern) if escape is None else (s, pattern, escape)
        self.check_equality(name.upper(), (s, pattern), e)
        case = self.case_of("ILIKE", (s, pattern), e) if name == "ilike" else None
        overload = registry.lookup("~~" if name == "like" else "~~*", "infix", [s.type, "text"])
        assert overload is not None  # declared for text and bpchar
        node: Node = Operator(type="bool", args=args, pos=s.pos, overload=overload, case=case)
        if e.args.get("negate"):
            node = Not(type="bool", args=(node,), pos=s.pos)
        return node

    # ------------------------------------------------------------ arithmetic

    def _arith(self, e: exp.Binary, op: str) -> Node:
        left = self.check(e.this)
        right = self.check(e.expression)
        return self.arith(op, left, right, e)

    def arith(self, op: str, left: Node, right: Node, e: exp.Expr) -> Node:
        if left.type == "unknown" and right.type == "unknown":
            raise self.fail(f"operator is not unique: unknown {op} unknown", e)
        return self.apply(op, "infix", [left, right], e)

    def apply(self, name: str, form: registry.Form, args: list[Node], e: exp.Expr) -> Node:
        """The registry's overload of ``name`` for ``args`` (converted to its argument
        types), or the error Postgres' resolution ends in."""
        types = [a.type for a in args]
        shown = [display(t) for t in types]
        if form == "call":
            call = f"{name}({', '.join(shown)})"
        elif form == "prefix":
            call = f"{name} {shown[0]}"
        else:
            call = f"{shown[0]} {name} {shown[1]}"
        try:
            overload = registry.resolve(name, form, types)
        except registry.Ambiguous:
            what = "function" if form == "call" else "operator"
            raise self.fail(f"{what} is not unique: {call}", e) from None
        if overload is None:
            what = "a function" if form == "call" else "an operator"
            raise self.fail(f"Could not select {what} overload for {call}", e)
        converted = tuple(
            a if p == registry.ANYARRAY else self.coerce(a, p)
            for a, p in zip(args, overload.operands, strict=True)
        )
        pos = position(e) if form != "infix" else converted[0].pos
        if form == "call":
            return Call(type=overload.result, args=converted, pos=pos, name=name, overload=overload)
        return Operator(type=overload.result, args=converted, pos=pos, overload=overload)

    def _add(self, e: exp.Add) -> Node:
        return self._arith(e, "+")

    def _sub(self, e: exp.Sub) -> Node:
        return self._arith(e, "-")

    def _mul(self, e: exp.Mul) -> Node:
        return self._arith(e, "*")

    def _div(self, e: exp.Div) -> Node:
        return self._arith(e, "/")

    def _bitwiseand(self, e: exp.BitwiseAnd) -> Node:
        return self._arith(e, "&")

    def _bitwiseor(self, e: exp.BitwiseOr) -> Node:
        return self._arith(e, "|")

    def _bitwisexor(self, e: exp.BitwiseXor) -> Node:
        return self._arith(e, "#")

    def _neg(self, e: exp.Neg) -> Node:
        # Postgres folds unary minus (through parentheses) into a numeric constant and
        # types the folded value: -2147483648 is int4, - -2147483648 int8.
        inner: exp.Expr = e.this
        negative = True
        while isinstance(inner, exp.Neg | exp.Paren):
            if isinstance(inner, exp.Neg):
                negative = not negative
            inner = inner.this
        if isinstance(inner, exp.Literal) and not inner.is_string:
            return self._number(("-" if negative else "") + str(inner.this), position(e), e)
        return self.apply("-", "prefix", [self.check(e.this)], e)

    def _bitwisenot(self, e: exp.BitwiseNot) -> Node:
        return self.apply("~", "prefix", [self.check(e.this)], e)

    def _float8_arg(self, node: Node, e: exp.Expr, what: str) -> Node:
        # Postgres would convert numeric to float8 implicitly; pysync asks for the cast
        if node.type == "numeric":
            raise self.fail(f"{what} of numeric is not supported; cast to float8", e)
        return node

    def _pow(self, e: exp.Pow) -> Node:
        left = self._float8_arg(self.check(e.this), e, "^")
        right = self._float8_arg(self.check(e.expression), e, "^")
        return self.apply("^", "infix", [left, right], e)

    def _unknownoperator(self, e: UnknownOperator) -> Node:
        # an operator Postgres does not have (see _operators): its message, once typed
        left = self.check(e.this)
        right = self.check(e.expression)
        raise WhereError(
            f"operator does not exist: {pg_type_name(left.type)} {e.meta['name']} "
            f"{pg_type_name(right.type)}",
            int(e.meta["start"]),
        )

    def _unknownprefixoperator(self, e: UnknownPrefixOperator) -> Node:
        operand = self.check(e.this)
        raise WhereError(
            f"operator does not exist: {e.meta['name']} {pg_type_name(operand.type)}",
            int(e.meta["start"]),
        )

    def _abs(self, e: exp.Abs) -> Node:
        # prefix @ (see _operators): Postgres has it for every numeric type
        node = self.check(e.this)
        if node.type not in (*NUMERIC_TYPES, "unknown"):
            raise self.fail(f"operator does not exist: @ {pg_type_name(node.type)}", e)
        return self.apply("@", "prefix", [node], e)

    def _sqrt(self, e: exp.Sqrt) -> Node:
        return self.apply("|/", "prefix", [self._float8_arg(self.check(e.this), e, "|/")], e)

    def _dpipe(self, e: exp.DPipe) -> Node:
        left = self.check(e.this)
        right = self.check(e.expression)
        if (
            is_array(left.type)
            or is_array(right.type)
            or isinstance(left, ArrayLiteral)
            or isinstance(right, ArrayLiteral)
        ):
            return self._array_concat(left, right, e)
        if left.type == "unknown" and right.type == "unknown":
            left, right = self.coerce(left, "text"), self.coerce(right, "text")
        for n in (left, right):
            self._check_output(n, e)
        texty = ("text", "bpchar", "unknown")
        if left.type not in texty and right.type not in texty:
            raise self.fail(
                f"Could not select an operator overload for {display(left.type)} || {display(right.type)}",
                e,
            )
        left = self._as_text(left)
        right = self._as_text(right)
        return self.apply("||", "infix", [left, right], e)

    def _check_output(self, n: Node, e: exp.Expr) -> None:
        if n.type != "unknown" and n.type not in OUTPUT and not n.type.startswith("enum:"):
            raise self.fail(f"cannot convert {display(n.type)} to text here", e)

    def _as_text(self, n: Node) -> Node:
        """Text for ||: unknown literals are text, other types cast to text (bpchar loses
        its trailing spaces, as with Postgres' implicit cast)."""
        if n.type in ("unknown", "bpchar"):
            return self.coerce(n, "text")
        if n.type == "text":
            return n
        # textanycat is "$1 || $2::text": the cast, so bool gives 'true' (concat() gives 't')
        return Cast(type="text", args=(n,), pos=n.pos)

    def _array_concat(self, left: Node, right: Node, e: exp.Expr) -> Node:
        if is_array(left.type) and not isinstance(left, ArrayLiteral) or not is_array(right.type):
            t = left.type if is_array(left.type) else right.type + "[]"
        else:
            t = right.type
        if left.type == "unknown" and right.type == "unknown":
            raise self.fail("operator is not unique: unknown || unknown", e)
        if isinstance(left, ArrayLiteral) and left.untyped and is_array(right.type):
            t = right.type
        if t == "unknown[]":
            raise self.fail("could not determine the array type", e)
        lt = left.type if left.type != "unknown" else t
        rt_ = right.type if right.type != "unknown" else t
        if is_array(lt) and is_array(rt_):
            left, right = self.coerce(left, t), self.coerce(right, t)
            return self._array_function("array_cat", t, (left, right), left.pos)
        if is_array(lt):
            left, right = self.coerce(left, t), self.coerce(right, elem(t))
            return self._array_function("array_append", t, (left, right), left.pos)
        t = rt_
        left, right = self.coerce(left, elem(t)), self.coerce(right, t)
        return self._array_function("array_prepend", t, (left, right), left.pos)

    # ------------------------------------------------------------ arrays

    def _array(self, e: exp.Array) -> Node:
        items = [self.check(x) for x in e.expressions]
        if not items:
            return ArrayLiteral(type="unknown[]", pos=position(e), untyped=True)
        if any(is_array(n.type) or isinstance(n, ArrayLiteral) for n in items):
            raise self.fail("nested ARRAY constructors are not supported", e)
        untyped = all(n.type == "unknown" for n in items)
        t, items = self.unify(items, "ARRAY", e)
        return ArrayLiteral(type=t + "[]", args=tuple(items), pos=position(e), untyped=untyped)

    def _arraycontainsall(self, e: exp.ArrayContainsAll) -> Node:
        return self._array_op(e, "@>")

    def _arraycontainedby(self, e: exp.ArrayContainedBy) -> Node:
        return self._array_op(e, "<@")

    def _arrayoverlaps(self, e: exp.ArrayOverlaps) -> Node:
        return self._array_op(e, "&&")

    def _array_op(self, e: exp.Binary, op: str) -> Node:
        left = self.check(e.this)
        right = self.check(e.expression)
        t = self._array_pair_type(left, right, op, e)
        left, right = self.coerce(left, t), self.coerce(right, t)
        overload = registry.lookup(op, "infix", (t, t))
        assert overload is not None, t  # declared for every element type
        if _texts(t):
            self.check_equality(op, (left, right), e)
        return Operator(type="bool", args=(left, right), pos=left.pos, overload=overload)

    def _array_pair_type(self, left: Node, right: Node, op: str, e: exp.Expr) -> str:
        for a, b in ((left, right), (right, left)):
            if is_array(a.type) and a.type != "unknown[]" and not _untyped_array(a):
                if b.type in (a.type, "unknown") or _untyped_array(b):
                    return a.type
                raise self.fail(
                    f"Could not select an operator overload for "
                    f"{display(left.type)} {op} {display(right.type)}",
                    e,
                )
        if left.type == right.type and is_array(left.type) and left.type != "unknown[]":
            return left.type
        raise self.fail(
            f"Could not select an operator overload for "
            f"{display(left.type)} {op} {display(right.type)}",
            e,
        )

    def _bracket(self, e: exp.Bracket) -> Node:
        subs: list[exp.Expr] = []
        shifted: list[bool] = []
        base: exp.Expr = e
        while isinstance(base, exp.Bracket):
            if len(base.expressions) != 1:
                raise self.fail("array slices are not supported", base)
            subs.insert(0, base.expressions[0])
            shifted.insert(0, _index_shifted(base.this))
            base = base.this
        arr = self.check(base)
        if not is_array(arr.type) or arr.type == "unknown[]":
            raise self.fail(
                f"cannot subscript type {display(arr.type)} because it does not support subscripting",
                e,
            )
        nodes = []
        for s, shift in zip(subs, shifted, strict=True):
            if isinstance(s, exp.Slice):
                raise self.fail("array slices are not supported", s)
            if isinstance(s, exp.Literal) and not s.is_string and _short_int(s.this):
                nodes.append(self._number(str(int(s.this) + shift), position(s), s))
            elif (
                isinstance(s, exp.Neg)
                and isinstance(s.this, exp.Literal)
                and not s.this.is_string
                and _short_int(s.this.this)
            ):
                nodes.append(self._number(str(-int(s.this.this) + shift), position(s), s))
            else:
                raise self.fail("only constant integer array subscripts are supported", s)
        subs_nodes = [self.coerce(n, "int4") for n in nodes]
        return Index(type=elem(arr.type), args=(arr, *subs_nodes), pos=arr.pos)

    # ------------------------------------------------------------ casts

    def _cast(self, e: exp.Cast) -> Node:
        target = self.data_type(e.args["to"], e)
        return self.cast(self.check(e.this), target, e)

    def cast(self, node: Node, target: str, e: exp.Expr) -> Node:
        if node.type == target:
            return node
        if isinstance(node, Const) and node.type == "unknown":
            return self.coerce(node, target)
        if _untyped_array(node) and is_array(target):
            return self.coerce(node, target)
        src = node.type
        if (
            _base(target).startswith("enum:")
            and _base(src) in ("text", "bpchar")
            and is_array(src) == is_array(target)
        ):
            # An explicit cast from a string type is Postgres' I/O conversion: the label's
            # input function, an error for a label the enum lacks (on that row).
            cast = Cast(type=target, args=(node,), pos=node.pos)
            return cast if is_array(target) else self._fold(cast)
        if is_array(src) or is_array(target):
            if (
                not (is_array(src) and is_array(target))
                or cast_function(elem(src), elem(target)) is None
                or elem(src).startswith("enum:")
                or elem(target) == "text"
                and elem(src) != "bpchar"
            ):
                raise self.fail(
                    f"unknown cast from type {display(src)} to type {display(target)}", e
                )
            return Cast(type=target, args=(node,), pos=node.pos)
        if src.startswith("enum:") and target != "text":
            raise self.fail(f"unknown cast from type {display(src)} to type {display(target)}", e)
        if cast_function(src, target) is None:
            raise self.fail(f"unknown cast from type {display(src)} to type {display(target)}", e)
        return self._fold(Cast(type=target, args=(node,), pos=node.pos))

    def _fold(self, cast: Cast) -> Node:
        """A cast of a constant becomes a constant of the target type (as Postgres' planner
        folds it); a cast that fails stays a cast and fails on every row, as in Postgres."""
        inner = cast.args[0]
        if not isinstance(inner, Const):
            return cast
        if inner.value is None:
            return _retyped(inner, cast.type, None)
        enum = self.enums.get(cast.type)
        fn = enum.cast if enum is not None else cast_function(inner.type, cast.type)
        assert fn is not None
        try:
            value = fn(inner.value)
        except (WhereRuntimeError, ValueError, ArithmeticError):
            return cast
        return _retyped(inner, cast.type, value)

    def data_type(self, dt: exp.DataType, e: exp.Expr) -> str:
        if dt.this == exp.DataType.Type.ARRAY:
            inner = dt.expressions[0] if dt.expressions else None
            if not isinstance(inner, exp.DataType):
                raise self.fail("unsupported array type", e)
            t = self.data_type(inner, e)
            return t if is_array(t) else t + "[]"
        if dt.expressions:
            raise self.fail("type modifiers are not supported", e)
        if dt.this == exp.DataType.Type.USERDEFINED:
            enum = self._enum_named(dt.args.get("kind"), e)
            if enum is not None:
                return enum
        mapped = _DTYPES.get(dt.this)
        if mapped is None:
            raise self.fail(f"unsupported type {dt.sql('postgres').lower()}", e)
        return mapped

    def _interval(self, e: exp.Interval) -> Node:
        this = e.this
        if not isinstance(this, exp.Literal) or not this.is_string:
            raise self.fail("unsupported INTERVAL syntax", e)
        text = str(this.this)
        unit = e.args.get("unit")
        if unit is not None:
            text = f"{text} {unit.sql('postgres')}"
        node = Const(type="unknown", value=text, pos=position(e))
        return self.coerce(node, "interval")

    # ------------------------------------------------------------ functions

    def _timezone(self, e: exp.Expr, zone_e: exp.Expr, value_e: exp.Expr) -> Node:
        zone = self.check(zone_e)
        value = self.check(value_e)
        if value.type not in ("timestamp", "timestamptz"):
            raise self.fail(
                f"Could not select a function overload for timezone({display(zone.type)}, "
                f"{display(value.type)}): the second argument must be a timestamp or "
                "timestamptz",
                e,
            )
        zone = self.coerce(zone, "text")
        if not isinstance(zone, Const) or zone.value is None:
            raise self.fail("timezone() needs a constant time zone name", zone)
        if time_zone(str(zone.value)) is None:
            raise self.fail(
                f"time zone {zone.value!r} is not supported: use a name of the time zone "
                "database such as 'Europe/Paris', or 'UTC' (abbreviations and POSIX zone "
                "specifications are not)",
                zone,
            )
        return self.apply("timezone", "call", [zone, value], e)

    def _justify(self, e: exp.Func, name: str) -> Node:
        return self.apply(name, "call", [self.check(e.this)], e)

    def _justifyhours(self, e: exp.JustifyHours) -> Node:
        return self._justify(e, "justify_hours")

    def _justifydays(self, e: exp.JustifyDays) -> Node:
        return self._justify(e, "justify_days")

    def _justifyinterval(self, e: exp.JustifyInterval) -> Node:
        return self._justify(e, "justify_interval")

    def _lower(self, e: exp.Lower) -> Node:
        return self._text_function(e, "lower")

    def _upper(self, e: exp.Upper) -> Node:
        return self._text_function(e, "upper")

    def _text_function(self, e: exp.Func, name: str) -> Node:
        node = self.check(e.this)
        if node.type not in ("text", "bpchar", "unknown"):
            raise self.fail(
                f"Could not select a function overload for {name}({display(node.type)})", e
            )
        arg = self.coerce(node, "text")
        case = self.case_of(f"{name}()", (arg,), e)
        overload = registry.lookup(name, "call", ["text"])
        assert overload is not None
        return Call(
            type="text", args=(arg,), pos=position(e), name=name, overload=overload, case=case
        )

    def _variadic(self, e: exp.Func, name: str) -> Node:
        args = [self.check(x) for x in [e.this, *e.expressions] if x is not None]
        first = next((a for a in args if a.type != "unknown"), None)
        t, args = self.unify(args, name.upper(), e)
        # The first string's type is the result's (see unify): coalesce(v, s) is varchar,
        # whose = with a bpchar is bpchar's.
        varchar = t == "text" and first is not None and _varchar(first)
        overload = registry.lookup(name, "call", [t] * len(args))
        if overload is None:
            # coalesce is declared for every type; greatest/least need a btree order
            raise self.fail(
                f"could not identify a comparison function for type {pg_type_name(t)}", e
            )
        if name in ("greatest", "least") and _texts(t):
            self.check_order(name, args, e)
        return Call(
            type=t,
            args=tuple(args),
            pos=position(e),
            name=name,
            overload=overload,
            varchar=varchar,
        )

    def _coalesce(self, e: exp.Coalesce) -> Node:
        return self._variadic(e, "coalesce")

    def _greatest(self, e: exp.Greatest) -> Node:
        return self._variadic(e, "greatest")

    def _least(self, e: exp.Least) -> Node:
        return self._variadic(e, "least")

    def _concat(self, e: exp.Concat) -> Node:
        args = [self.check(x) for x in e.expressions]
        out = []
        for n in args:
            if is_array(n.type):
                raise self.fail("concat() of arrays is not supported", e)
            self._check_output(n, e)
            if n.type == "unknown":
                out.append(self.coerce(n, "text"))
            elif n.type == "text":
                out.append(n)
            else:
                # concat() uses each argument's output function (bpchar keeps its padding)
                out.append(Cast(type="text", args=(n,), pos=n.pos, output=True))
        overload = registry.lookup("concat", "call", ["text"] * len(out))
        assert overload is not None  # declared for any number of arguments
        return Call(type="text", args=tuple(out), pos=position(e), name="concat", overload=overload)

    def _arrayconcat(self, e: exp.ArrayConcat) -> Node:
        args = [self.check(x) for x in [e.this, *e.expressions]]
        if len(args) != 2:
            raise self.fail(f"unknown or unsupported function array_cat/{len(args)}", e)
        t = self._array_pair_type(args[0], args[1], "array_cat", e)
        left, right = self.coerce(args[0], t), self.coerce(args[1], t)
        return self._array_function("array_cat", t, (left, right), position(e))

    def _arrayappend(self, e: exp.ArrayAppend) -> Node:
        arr, value = self.check(e.this), self.check(e.expression)
        if not is_array(arr.type) or arr.type == "unknown[]":
            raise self.fail("array_append needs an array of a known type", e)
        t = arr.type
        args = (arr, self.coerce(value, elem(t)))
        return self._array_function("array_append", t, args, position(e))

    def _arrayprepend(self, e: exp.ArrayPrepend) -> Node:
        arr, value = self.check(e.this), self.check(e.expression)
        if not is_array(arr.type) or arr.type == "unknown[]":
            raise self.fail("array_prepend needs an array of a known type", e)
        t = arr.type
        args = (self.coerce(value, elem(t)), arr)
        return self._array_function("array_prepend", t, args, position(e))

    def _array_function(self, name: str, t: str, args: tuple[Node, Node], pos: int) -> Node:
        """The registry's polymorphic ``name`` on arguments the caller has converted to
        the array type ``t`` (and its element type)."""
        overload = registry.lookup(name, "call", [a.type for a in args])
        assert overload is not None, (name, t)
        return Call(type=t, args=args, pos=pos, name=name, overload=overload)

    def _anonymous(self, e: exp.Anonymous) -> Node:
        name = str(e.this).lower()
        args = e.expressions
        if name == "timezone" and len(args) == 2:
            return self._timezone(e, args[0], args[1])
        if registry.declared(name, "call", len(args)):
            return self.apply(name, "call", [self.check(a) for a in args], e)
        if name in _TYPE_INPUT_FUNCTIONS and len(args) == 1:
            node = self.check(args[0])
            if node.type not in ("text", "unknown", "bpchar"):
                raise self.fail(
                    f"Could not select a function overload for {name}({display(node.type)})", e
                )
            return self.cast(self.coerce(node, "text"), _COLUMN_TYPES[name], e)
        raise self.fail(f"unknown or unsupported function {name}/{len(args)}", e)


_Handler = Callable[[Checker, Any], Node]
_HANDLERS: dict[type[exp.Expr], _Handler] = {
    exp.Abs: Checker._abs,
    exp.Add: Checker._add,
    exp.And: Checker._and,
    exp.Anonymous: Checker._anonymous,
    exp.Array: Checker._array,
    exp.ArrayAppend: Checker._arrayappend,
    exp.ArrayConcat: Checker._arrayconcat,
    exp.ArrayContainedBy: Checker._arraycontainedby,
    exp.ArrayContainsAll: Checker._arraycontainsall,
    exp.ArrayOverlaps: Checker._arrayoverlaps,
    exp.ArrayPrepend: Checker._arrayprepend,
    exp.Between: Checker._between,
    exp.BitwiseAnd: Checker._bitwiseand,
    exp.BitwiseNot: Checker._bitwisenot,
    exp.BitwiseOr: Checker._bitwiseor,
    exp.BitwiseXor: Checker._bitwisexor,
    exp.Boolean: Checker._boolean,
    exp.Bracket: Checker._bracket,
    exp.ByteString: Checker._bytestring,
    exp.Cast: Checker._cast,
    exp.Coalesce: Checker._coalesce,
    exp.Column: Checker._column,
    exp.Concat: Checker._concat,
    exp.Div: Checker._div,
    exp.DPipe: Checker._dpipe,
    exp.EQ: Checker._eq,
    exp.Escape: Checker._escape,
    exp.GT: Checker._gt,
    exp.GTE: Checker._gte,
    exp.Greatest: Checker._greatest,
    exp.ILike: Checker._ilike,
    exp.In: Checker._in,
    exp.Interval: Checker._interval,
    exp.Is: Checker._is,
    exp.JustifyDays: Checker._justifydays,
    exp.JustifyHours: Checker._justifyhours,
    exp.JustifyInterval: Checker._justifyinterval,
    exp.LT: Checker._lt,
    exp.LTE: Checker._lte,
    exp.Least: Checker._least,
    exp.Like: Checker._like,
    exp.Literal: Checker._literal,
    exp.Lower: Checker._lower,
    exp.Mul: Checker._mul,
    exp.NEQ: Checker._neq,
    exp.Neg: Checker._neg,
    exp.Not: Checker._not,
    exp.Null: Checker._null,
    exp.NullSafeEQ: Checker._nullsafeeq,
    exp.NullSafeNEQ: Checker._nullsafeneq,
    exp.Or: Checker._or,
    exp.Parameter: Checker._parameter,
    exp.Paren: Checker._paren,
    exp.Pow: Checker._pow,
    exp.RawString: Checker._rawstring,
    exp.Sqrt: Checker._sqrt,
    exp.Sub: Checker._sub,
    exp.Upper: Checker._upper,
    UnknownOperator: Checker._unknownoperator,
    UnknownPrefixOperator: Checker._unknownprefixoperator,
}
"""The method that checks each kind of sqlglot node (by exact class: a subclass is
another construct); any other node is not in the language."""


class Checked(NamedTuple):
    tree: Node
    columns: frozenset[str]
    """The columns the clause reads."""
    enums: Mapping[str, EnumType]
    """The enum types it reads (to evaluate and render their values)."""


def check_clause(
    clause: str,
    table: Table,
    params: Mapping[int, str] | None,
    sublinks: Sequence[SublinkType] | None = None,
) -> Checked:
    """The typed tree, the columns and enum types it reads. ``sublinks`` resolves the clause's
    ``IN (SELECT ...)`` in order (see ``parse``); None where none are allowed."""
    tree, specs = parse(clause)
    if specs and sublinks is None:
        raise WhereError("Subqueries are not allowed in subsets")
    resolved = {
        spec.marker: (spec, target) for spec, target in zip(specs, sublinks or (), strict=False)
    }
    checker = Checker(clause, table, params, resolved)
    node = checker.check_clause(tree)
    if _expanded_size(node) > MAX_NODES:
        raise WhereError(over_limit("size of the expression", MAX_NODES))
    return Checked(fold(node, checker.enums), frozenset(checker.columns), checker.enums)


def _expanded_size(root: Node) -> int:
    """Nodes of the tree with shared sub-trees counted at each use (the evaluator and the
    renderer walk it as a tree), computed once per distinct node; capped past MAX_NODES."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if children_done:
            sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes[id(a)] for a in node.args))
        else:
            stack.append((node, True))
            stack.extend((a, False) for a in node.args if id(a) not in sizes)
    return sizes[id(root)]


def _aggregate_syntax(e: exp.Expr) -> bool:
    return any(isinstance(v, exp.Star | exp.Distinct | exp.Order) for v in e.args.values())


def _short_int(text: object) -> bool:
    """An integer literal of at most 19 digits (a longer one is out of range of int8 and
    too long for int()); others are reported by the caller."""
    digits = str(text)
    return digits.isdigit() and len(digits.lstrip("0")) <= 19


def _reads_column(node: Node) -> bool:
    # each distinct node once: sub-trees may be shared (see _expanded_size)
    seen: set[int] = set()
    pending = [node]
    while pending:
        n = pending.pop()
        if isinstance(n, Column):
            return True
        if id(n) not in seen:
            seen.add(id(n))
            pending.extend(n.args)
    return False


def _retyped(node: Const, t: str, value: Any) -> Const:
    """A constant of type ``t`` in place of ``node`` (still the same parameter)."""
    if isinstance(node, Param):
        return Param(type=t, value=value, pos=node.pos, number=node.number)
    return Const(type=t, value=value, pos=node.pos)


def _varchar(node: Node) -> bool:
    """A varchar column, or coalesce/greatest/least of the type of one."""
    return isinstance(node, Column | Call) and node.varchar


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def quote_name(name: str) -> str:
    """An identifier as Postgres' format('%I') writes it: quoted unless lower-case ASCII
    letters, digits and underscores (it quotes keywords too: such a type name is then
    not matched, and the cast refused)."""
    return name if _PLAIN_NAME.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def _texts(t: str) -> bool:
    """Values of ``t`` compare by the collation: text, bpchar, or arrays of them."""
    return (elem(t) if is_array(t) else t) in ("text", "bpchar")


def _base(t: str) -> str:
    """An array type's element type, any other type itself."""
    return elem(t) if is_array(t) else t


def _untyped_array(node: Node) -> bool:
    return isinstance(node, ArrayLiteral) and node.untyped
