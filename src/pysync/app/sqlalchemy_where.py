"""SQLAlchemy WHERE expressions compiled to Electric's WHERE language with ``$n`` parameters.

The compiler walks the expression tree itself instead of using the Postgres dialect's SQL
compiler: a shape's WHERE may use only what Electric's language has (comparisons,
AND/OR/NOT, IN lists, NULL tests, LIKE/ILIKE, BETWEEN, ANY/ALL over arrays, arithmetic,
casts and a few functions), and anything else must be refused by name, at definition
time. The output is deterministic (parameters numbered in tree order, identifiers quoted
only when Postgres needs it), so one expression always gives one shape.

Values become parameter text the way the column's type binds them (an ``Enum`` column
binds a Python enum member by its name, a ``JSON`` column as JSON text ...), then as
Postgres' input syntax (dates in ISO format, arrays as ``{...}`` literals).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg as _psycopg_dialect
from sqlalchemy.sql import elements, functions, operators
from sqlalchemy.sql.selectable import ScalarSelect, Select

from pysync.app.sqlalchemy_operators import (
    ARITHMETIC,
    ARRAY_OPERATORS,
    COMPARISONS,
    LIKES,
    NAMES,
    PATTERNS,
)
from pysync.app.sqlalchemy_select import select_parts
from pysync.shapes.definition import ShapeError, param_text
from pysync.where import FUNCTIONS

DIALECT: Any = _psycopg_dialect.dialect()  # type: ignore[no-untyped-call]
_quote = DIALECT.identifier_preparer.quote


def compile_where(clause: Any, table: sa.Table) -> tuple[str, tuple[str, ...]]:
    """``clause`` as Electric WHERE text with ``$n`` placeholders, and the ``$n`` values."""
    compiler = _WhereCompiler(table)
    return compiler.render(clause), tuple(compiler.params)


# Precedence classes: a child below its parent's class is put in parentheses.
ATOM, OPERATOR, PREDICATE, NOT, AND, OR = 6, 5, 4, 3, 2, 1


class _WhereCompiler:
    def __init__(self, table: sa.Table) -> None:
        self.table = table
        self.params: list[str] = []

    def render(self, node: Any) -> str:
        text, _ = self.node(node)
        return text

    def wrap(self, node: Any, at_least: int) -> str:
        text, level = self.node(node)
        return text if level >= at_least else f"({text})"

    def node(self, node: Any) -> tuple[str, int]:
        if isinstance(node, (elements.Grouping, elements.TypeCoerce)):
            return self.node(node.element if isinstance(node, elements.Grouping) else node.clause)
        if isinstance(
            node, elements.BooleanClauseList | elements.ExpressionClauseList
        ) and node.operator in (operators.and_, operators.or_):
            return self.boolean(node)
        if isinstance(node, elements.BinaryExpression):
            return self.binary(node)
        if isinstance(node, elements.UnaryExpression):
            return self.unary(node)
        if isinstance(node, sa.Column | elements.ColumnClause) and not isinstance(
            node, elements.Label
        ):
            return self.column(node), ATOM
        if isinstance(node, elements.BindParameter):
            return self.param(node), ATOM
        if isinstance(node, elements.Null):
            return "NULL", ATOM
        if isinstance(node, elements.True_):
            return "true", ATOM
        if isinstance(node, elements.False_):
            return "false", ATOM
        if isinstance(node, elements.Cast):
            return f"{self.wrap(node.clause, ATOM)}::{self.type_name(node.type)}", ATOM
        if isinstance(node, functions.FunctionElement):
            return self.function(node), ATOM
        if isinstance(node, elements.Label):
            return self.node(node.element)
        raise ShapeError("where", f"{_describe(node)} is not supported in a shape's WHERE clause")

    def boolean(self, node: Any) -> tuple[str, int]:
        level = AND if node.operator is operators.and_ else OR
        word = " AND " if level == AND else " OR "
        clauses = list(node.clauses)
        if not clauses:  # and_() / or_() of nothing
            return ("true" if level == AND else "false"), ATOM
        if len(clauses) == 1:
            return self.node(clauses[0])
        parts = []
        for clause in clauses:
            text, child = self.node(clause)
            # Same operator flattens; AND inside OR gets parentheses too, for the reader.
            parts.append(text if child > AND or child == level else f"({text})")
        return word.join(parts), level

    def binary(self, node: elements.BinaryExpression[Any]) -> tuple[str, int]:
        op = node.operator
        left, right = node.left, node.right
        if op in COMPARISONS:
            if (_is_enum(left) or _is_enum(right)) and op in _ENUMCOMPARISONS:
                # Electric compares enums as text: "mood::text = $1". Ordering them is
                # not text order: it is the labels' order, as the column compares.
                return (
                    f"{self.enum_side(left)} {COMPARISONS[op]} {self.enum_side(right)}",
                    PREDICATE,
                )
            return (
                f"{self.wrap(left, OPERATOR)} {COMPARISONS[op]} {self.operand(right)}",
                PREDICATE,
            )
        if op in (operators.is_, operators.is_not):
            word = "IS" if op is operators.is_ else "IS NOT"
            return f"{self.wrap(left, OPERATOR)} {word} {self.wrap(right, OPERATOR)}", PREDICATE
        if op in LIKES:
            text = f"{self.wrap(left, OPERATOR)} {LIKES[op]} {self.wrap(right, OPERATOR)}"
            return text + self.escape(node), PREDICATE
        if op in PATTERNS:
            if node.modifiers.get("autoescape"):
                raise ShapeError(
                    "where", "autoescape=True is not supported in a shape's WHERE clause"
                )
            word, before, after = PATTERNS[op]
            # No parentheses after LIKE: pysync refuses "LIKE (" (it reads as like()).
            text = f"{self.wrap(left, OPERATOR)} {word} {before}{self.wrap(right, ATOM)}{after}"
            return text + self.escape(node), PREDICATE
        if op in (operators.in_op, operators.not_in_op):
            return self.in_list(left, right, negated=op is operators.not_in_op)
        if op in (operators.between_op, operators.not_between_op):
            low, high = list(right.clauses)
            word = "BETWEEN" if op is operators.between_op else "NOT BETWEEN"
            if node.modifiers.get("symmetric"):
                word += " SYMMETRIC"
            text = f"{self.wrap(left, OPERATOR)} {word} {self.wrap(low, OPERATOR)} AND {self.wrap(high, OPERATOR)}"
            return text, PREDICATE
        if op in ARITHMETIC:
            return f"{self.wrap(left, ATOM)} {ARITHMETIC[op]} {self.wrap(right, ATOM)}", OPERATOR
        if isinstance(op, operators.custom_op) and op.opstring in ARRAY_OPERATORS:
            level = PREDICATE if op.is_comparison else OPERATOR
            return f"{self.wrap(left, ATOM)} {op.opstring} {self.wrap(right, ATOM)}", level
        name = (
            op.opstring
            if isinstance(op, operators.custom_op)
            else NAMES.get(op, getattr(op, "__name__", str(op)))
        )
        raise ShapeError("where", f"the operator {name} is not supported in a shape's WHERE clause")

    def enum_side(self, node: Any) -> str:
        text = self.wrap(node, OPERATOR)
        return (
            f"{text}::text"
            if _is_enum(node) and isinstance(node, sa.Column | elements.ColumnClause)
            else text
        )

    def operand(self, node: Any) -> str:
        """The right side of a comparison: also ``ANY (array)`` / ``ALL (array)``."""
        if isinstance(node, elements.CollectionAggregate):
            word = (
                "ANY"
                if node.modifier is operators.any_op or node.operator is operators.any_op
                else "ALL"
            )
            return f"{word}({self.render(node.element)})"
        return self.wrap(node, OPERATOR)

    def escape(self, node: elements.BinaryExpression[Any]) -> str:
        escape = node.modifiers.get("escape")
        if escape is None:
            return ""
        return " ESCAPE " + _string_literal(str(escape))

    def in_list(self, left: Any, right: Any, *, negated: bool) -> tuple[str, int]:
        word = "NOT IN" if negated else "IN"
        if isinstance(right, (ScalarSelect, Select)):
            return f"{self.subquery_left(left)} {word} ({self.subquery(right)})", PREDICATE
        if isinstance(right, elements.BindParameter) and right.expanding:
            values = right.value if right.callable is None else right.callable()
            if not values:  # as Postgres would answer an empty list, even for NULL
                return ("true" if negated else "false"), ATOM
            items = ", ".join(self.param_value(v, right.type) for v in values)
        elif isinstance(right, (elements.ClauseList, elements.Tuple, elements.Grouping)):
            inner = right.element if isinstance(right, elements.Grouping) else right
            if not isinstance(inner, (elements.ClauseList, elements.Tuple)):
                raise ShapeError(
                    "where",
                    f"IN with {_describe(inner)} is not supported: IN takes a "
                    "list of values or a select() of one table",
                )
            items = ", ".join(self.wrap(item, OPERATOR) for item in inner.clauses)
        else:
            raise ShapeError(
                "where",
                f"IN with {_describe(right)} is not supported: IN takes a "
                "list of values or a select() of one table",
            )
        return f"{self.enum_side(left)} {word} ({items})", PREDICATE

    def subquery_left(self, left: Any) -> str:
        """The value (or row of values, ``tuple_(a, b)``) tested against a subquery."""
        if isinstance(left, elements.Tuple):
            return "(" + ", ".join(self.wrap(item, OPERATOR) for item in left.clauses) + ")"
        return self.wrap(left, OPERATOR)

    def subquery(self, node: ScalarSelect[Any] | Select[Any]) -> str:
        """``SELECT cols FROM table [WHERE ...]``, Electric's one sublink form: its WHERE
        is compiled by the same rules, its parameters numbered on from the outer ones."""
        stmt = node.element if isinstance(node, ScalarSelect) else node
        if not isinstance(stmt, Select):
            raise ShapeError(
                "where",
                f"IN with {_describe(stmt)} is not supported: the subquery must be "
                "a select() of one table",
            )
        table, columns, where = select_parts(stmt)
        inner = _WhereCompiler(table)
        inner.params = self.params
        names = ", ".join(str(_quote(c.name)) for c in columns)
        text = f"SELECT {names} FROM {qualified_name(table)}"
        return text if where is None else f"{text} WHERE {inner.render(where)}"

    def unary(self, node: elements.UnaryExpression[Any]) -> tuple[str, int]:
        if isinstance(node, elements.AsBoolean):  # a boolean column as a condition
            if node.operator is operators.is_false:
                return f"NOT {self.wrap(node.element, PREDICATE)}", NOT
            return self.node(node.element)
        if node.operator is operators.inv:
            return f"NOT {self.wrap(node.element, PREDICATE)}", NOT
        if node.operator is operators.neg:
            return f"-{self.wrap(node.element, ATOM)}", OPERATOR
        if node.operator is operators.bitwise_not_op:
            return f"~{self.wrap(node.element, ATOM)}", OPERATOR
        if isinstance(node, elements.CollectionAggregate):
            raise ShapeError("where", "ANY()/ALL() must be the right side of a comparison")
        raise ShapeError("where", f"{_describe(node)} is not supported in a shape's WHERE clause")

    def column(self, node: Any) -> str:
        table = getattr(node, "table", None)
        if table is not None and table is not self.table and not _same_table(table, self.table):
            raise ShapeError(
                "where",
                f"the column {table.name}.{node.name} is not in {self.table.name}: a shape "
                "reads one table (no joins; a subquery reads only its own table)",
            )
        return str(_quote(node.name))

    def function(self, node: Any) -> str:
        name = str(node.name).lower()
        if (
            name not in FUNCTIONS
            or isinstance(node, functions.GenericFunction)
            and node.name != name
        ):
            raise ShapeError(
                "where",
                f"the function {node.name}() is not in Electric's WHERE language (it has "
                f"{', '.join(sorted(FUNCTIONS))})",
            )
        return f"{name}({', '.join(self.render(arg) for arg in node.clauses)})"

    def type_name(self, type_: Any) -> str:
        return str(DIALECT.type_compiler_instance.process(type_)).lower()

    def param(self, node: elements.BindParameter[Any]) -> str:
        value = node.effective_value
        if node.expanding:
            raise ShapeError("where", "an expanding parameter is only supported in IN (...)")
        return self.param_value(value, node.type)

    def param_value(self, value: Any, type_: Any) -> str:
        if value is None:
            return "NULL"
        # Plain values go as they are (a Numeric's processor would turn Decimal("1.50")
        # into a float); others (enum members, JSON documents, TypeDecorator values) as
        # the column's type binds them.
        processor = None if isinstance(value, _PLAIN) else _bind_processor(type_)
        if processor is not None:
            value = processor(value)
            if value is None:
                return "NULL"
        self.params.append(param_text(value))
        return f"${len(self.params)}"


_PLAIN = (
    str,
    int,
    float,
    Decimal,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    bytes,
    list,
    tuple,
)


def _bind_processor(type_: Any) -> Callable[[Any], Any] | None:
    if type_ is None or isinstance(type_, sa.types.NullType):
        return None
    try:
        return type_.bind_processor(DIALECT)  # type: ignore[no-any-return]
    except (NotImplementedError, AttributeError):  # pragma: no cover - exotic user types
        return None


_ENUMCOMPARISONS = (
    operators.eq,
    operators.ne,
    operators.is_distinct_from,
    operators.is_not_distinct_from,
)


def _is_enum(node: Any) -> bool:
    return isinstance(getattr(node, "type", None), sa.Enum)


def qualified_name(table: sa.Table) -> str:
    name = str(_quote(table.name))
    return name if table.schema is None else f"{_quote(table.schema)}.{name}"


def _same_table(a: Any, b: sa.Table) -> bool:
    return getattr(a, "name", None) == b.name and getattr(a, "schema", None) == b.schema


def _describe(node: Any) -> str:
    name = type(node).__name__
    known = {
        "TextClause": "text() SQL",
        "Select": "a subquery",
        "ScalarSelect": "a subquery",
        "Exists": "EXISTS (a subquery)",
        "Subquery": "a subquery",
        "Case": "CASE",
        "Over": "a window function",
        "Tuple": "a row expression",
        "Extract": "EXTRACT",
        "Label": "a label",
        "Null": "NULL",
    }
    return known.get(name, f"{name} ({node})")


def _string_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
