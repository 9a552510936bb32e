"""SQLAlchemy's operators and the words of Electric's WHERE language they become (and the
names of those it has no word for, for the error message)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.sql import operators

COMPARISONS: dict[Any, str] = {
    operators.eq: "=",
    operators.ne: "<>",
    operators.lt: "<",
    operators.le: "<=",
    operators.gt: ">",
    operators.ge: ">=",
    operators.is_distinct_from: "IS DISTINCT FROM",
    operators.is_not_distinct_from: "IS NOT DISTINCT FROM",
}
LIKES: dict[Any, str] = {
    operators.like_op: "LIKE",
    operators.not_like_op: "NOT LIKE",
    operators.ilike_op: "ILIKE",
    operators.not_ilike_op: "NOT ILIKE",
}
# col.contains("x") and friends: a LIKE over a pattern built around the parameter.
PATTERNS: dict[Any, tuple[str, str, str]] = {
    operators.contains_op: ("LIKE", "'%' || ", " || '%'"),
    operators.not_contains_op: ("NOT LIKE", "'%' || ", " || '%'"),
    operators.startswith_op: ("LIKE", "", " || '%'"),
    operators.not_startswith_op: ("NOT LIKE", "", " || '%'"),
    operators.endswith_op: ("LIKE", "'%' || ", ""),
    operators.not_endswith_op: ("NOT LIKE", "'%' || ", ""),
    operators.icontains_op: ("ILIKE", "'%' || ", " || '%'"),
    operators.not_icontains_op: ("NOT ILIKE", "'%' || ", " || '%'"),
    operators.istartswith_op: ("ILIKE", "", " || '%'"),
    operators.not_istartswith_op: ("NOT ILIKE", "", " || '%'"),
    operators.iendswith_op: ("ILIKE", "'%' || ", ""),
    operators.not_iendswith_op: ("NOT ILIKE", "'%' || ", ""),
}
ARITHMETIC: dict[Any, str] = {
    operators.add: "+",
    operators.sub: "-",
    operators.mul: "*",
    operators.truediv: "/",
    operators.concat_op: "||",
    operators.bitwise_and_op: "&",
    operators.bitwise_or_op: "|",
    operators.bitwise_xor_op: "#",
}
ARRAY_OPERATORS = frozenset({"@>", "<@", "&&", "||"})
NAMES: dict[Any, str] = {
    operators.mod: "% (modulo)",
    operators.match_op: "match()",
    operators.regexp_match_op: "regexp_match()",
    operators.not_regexp_match_op: "regexp_match()",
    operators.json_getitem_op: "JSON subscripts",
    operators.json_path_getitem_op: "JSON paths",
    operators.bitwise_lshift_op: "<<",
    operators.bitwise_rshift_op: ">>",
    operators.distinct_op: "DISTINCT",
}
