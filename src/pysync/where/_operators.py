"""Operators as Postgres' grammar reads them, corrected in sqlglot's token stream.

sqlglot and Postgres disagree on two things the checker cannot see in sqlglot's tree:

* Prefix ``@`` (absolute value), ``|/`` (square root) and ``~`` (bitwise not) take
  everything of higher precedence than a generic operator as their operand: ``|/ f + 1``
  is ``|/ (f + 1)``, ``~ i + 1`` is ``~ (i + 1)`` and ``@ coalesce(i, 10)`` is
  ``abs(coalesce(i, 10))``. sqlglot reads ``@`` as a parameter and binds ``|/`` and
  ``~`` to the next term only. They become ``abs( ... )``, ``sqrt( ... )`` and
  ``~ ( ... )`` around the operand Postgres' grammar gives them.
* Operators Postgres does not have for any of the language's types (``==``, ``<=>``,
  ``**``, ...): sqlglot reads some as ``=`` or ``IS NOT DISTINCT FROM``. They become an
  ``UnknownOperator`` node (parsed with the precedence of Postgres' generic operators)
  that knows the operator's name and position; the checker types both sides and reports
  Postgres' ``operator does not exist: integer == integer``.

Positions come from Postgres' own lexer and parse tree (pglast), so what is rewritten is
exactly what Postgres would have resolved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pglast import parser as pg
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.tokens import Token, TokenType  # type: ignore[attr-defined]

from ._syntax import PREFIX


class UnknownOperator(exp.Expression, exp.Binary):
    """``a <op> b`` for an operator Postgres does not have; ``meta`` holds its ``name``
    and ``start`` (its position in the clause)."""


class UnknownPrefixOperator(exp.Unary):
    """``<op> a`` for a prefix operator Postgres does not have (``!``, ``!!``); ``meta``
    holds its ``name`` and ``start``."""


_PostgresParser: Any = Postgres.Parser


class Parser(_PostgresParser):  # type: ignore[misc]
    """Postgres' sqlglot parser that reads the UNKNOWN token as an ``UnknownOperator``
    (sqlglot's Postgres tokenizer never makes that token itself)."""

    BITWISE = {**Postgres.Parser.BITWISE, TokenType.UNKNOWN: UnknownOperator}


PREFIX_FUNCTIONS = {"@": "abs", "|/": "sqrt", "~": ""}
"""Prefix operators by the function sqlglot reads them as (none for ``~``: sqlglot knows
it, only its operand is parenthesised)."""

# Operators Postgres has for the language's types (and json's); sqlglot reads each of them as itself
# or refuses it with its own message. Any other operator is reported as not existing.
_KNOWN = frozenset(
    {
        "+", "-", "*", "/", "%", "^", "<", ">", "=", "<=", ">=", "<>", "!=",
        "||", "&", "|", "#", "~", "@>", "<@", "&&", "~~", "~~*", "!~~", "!~~*",
        "|/", "||/", "@", "~*", "!~", "!~*", "<<", ">>", "^@", "@@",
        "->", "->>", "#>", "#>>", "?", "?|", "?&", "@?", "#-",
    }
)  # fmt: skip

# Tokens that continue an operand of a prefix operator (they bind tighter than Op).
_TIGHTER = frozenset(
    {"ASCII_43", "ASCII_45", "ASCII_42", "ASCII_47", "ASCII_37", "ASCII_94", "TYPECAST"}
    | {"ASCII_46", "COLLATE", "AT"}
)
_OPEN = frozenset({"ASCII_40", "ASCII_91"})
_CLOSE = frozenset({"ASCII_41", "ASCII_93"})
# Words of a type name after "::" (double precision, timestamp with time zone, ...).
_TYPE_WORDS = frozenset(
    {"IDENT", "DOUBLE_P", "PRECISION", "TIMESTAMP", "TIME", "WITH", "WITHOUT", "ZONE"}
    | {"VARYING", "CHARACTER", "CHAR_P", "INTERVAL", "INT_P", "INTEGER", "SMALLINT"}
    | {"BIGINT", "REAL", "FLOAT_P", "NUMERIC", "DECIMAL_P", "DEC", "BOOLEAN_P", "VARCHAR"}
)
_OPERAND_LEADS = frozenset({"Op", "ASCII_43", "ASCII_45", "NOT"})


class _Op:
    __slots__ = ("end", "name", "operand_end", "start")

    def __init__(self, name: str, start: int, end: int, operand_end: int = -1) -> None:
        self.name = name
        self.start = start
        self.end = end
        self.operand_end = operand_end


def _expressions(tree: Any) -> Iterator[dict[str, Any]]:
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            expr = node.get("A_Expr")
            if isinstance(expr, dict) and expr.get("kind") == "AEXPR_OP":
                yield expr
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def _operators(text: str) -> tuple[list[_Op], list[_Op]]:
    """(prefix @ and |/ with their operand's extent, unknown binary operators) in ``text``,
    positions in ``text``."""
    wrapped = PREFIX + text
    tokens = list(pg.scan(wrapped))
    if not any(
        t.name == "Op"
        and (
            wrapped[t.start : t.end + 1] in PREFIX_FUNCTIONS
            or wrapped[t.start : t.end + 1] not in _KNOWN
        )
        for t in tokens
    ):
        return [], []  # the common case: no second parse
    starts = {t.start: i for i, t in enumerate(tokens)}
    shift = len(PREFIX)
    prefix: list[_Op] = []
    unknown: list[_Op] = []
    for expr in _expressions(json.loads(pg.parse_sql_json(wrapped))):
        names = expr.get("name") or []
        name = names[-1].get("String", {}).get("sval", "") if names else ""
        location = int(expr.get("location", -1))
        i = starts.get(location)
        if i is None:
            continue
        end = tokens[i].end
        if expr.get("lexpr") is None and (name in PREFIX_FUNCTIONS or name not in _KNOWN):
            prefix.append(
                _Op(name, location - shift, end - shift, _operand_end(tokens, i + 1) - shift)
            )
        elif expr.get("lexpr") is not None and name not in _KNOWN:
            unknown.append(_Op(name, location - shift, end - shift))
    return prefix, unknown


def _operand_end(tokens: list[Any], i: int) -> int:
    """End (inclusive) of the operand of a prefix operator whose operand starts at token i:
    it stops at the first operator, outside brackets, that binds no tighter than Op."""
    depth = 0
    expect_operand = True
    last = tokens[i - 1].end
    after_cast = False
    while i < len(tokens):
        t = tokens[i]
        name = t.name
        if name in _OPEN:
            depth += 1
        elif name in _CLOSE:
            if depth == 0:
                break
            depth -= 1
            expect_operand = False
        elif depth == 0:
            if after_cast and name in _TYPE_WORDS:
                pass
            elif expect_operand:
                expect_operand = name in _OPERAND_LEADS
            elif name in _TIGHTER:
                expect_operand = name != "TYPECAST"
                after_cast = name == "TYPECAST"
                last = t.end
                i += 1
                continue
            elif name == "SCONST":
                pass  # a typed literal: date '2024-01-01', interval '1 day'
            else:
                break
            after_cast = False
        last = t.end
        i += 1
    return int(last)


def correct_tokens(
    text: str, tokens: list[Token], spaced: list[int]
) -> tuple[list[Token], list[tuple[int, str]]]:
    """sqlglot's ``tokens`` of ``text`` (the clause with a space added at each position in
    ``spaced``) with prefix operators and unknown operators rewritten (module doc), and
    the unknown operators' (position in ``text``, name)."""
    original = text
    if spaced:
        # the clause before _space_params: what pglast lexes the same as Postgres does
        chars = list(text)
        for p in reversed(spaced):
            del chars[p]
        original = "".join(chars)
    prefix, unknown = _operators(original)
    if not prefix and not unknown:
        return tokens, []
    inserted = [p - k for k, p in enumerate(spaced)]

    def moved(p: int) -> int:
        return p + sum(1 for q in inserted if q <= p)

    out = list(tokens)
    for op in unknown:
        lo, hi = moved(op.start), moved(op.end)
        first = next(k for k, t in enumerate(out) if t.start >= lo)
        count = sum(1 for t in out if lo <= t.start <= hi)
        ref = out[first]
        marked = Token(TokenType.UNKNOWN, op.name, ref.line, ref.col, lo, hi)
        out[first : first + max(count, 1)] = [marked]
    for op in sorted(prefix, key=lambda o: -o.start):
        lo, hi, stop = moved(op.start), moved(op.end), moved(op.operand_end)
        first = next(k for k, t in enumerate(out) if t.start >= lo)
        count = sum(1 for t in out if lo <= t.start <= hi)
        ref = out[first]
        # an unknown operator becomes a call of a function named as it (see name_unknown_operators)
        function = PREFIX_FUNCTIONS.get(op.name, op.name)
        head = [Token(TokenType.L_PAREN, "(", ref.line, ref.col, hi, hi)]
        if function:
            head.insert(0, Token(TokenType.VAR, function, ref.line, ref.col, lo, lo))
        else:
            head[0:0] = out[first : first + count]
        out[first : first + count] = head
        after = max(k for k, t in enumerate(out) if t.start <= stop) + 1
        out.insert(after, Token(TokenType.R_PAREN, ")", ref.line, ref.col, stop, stop))
    unknown_prefix = [op for op in prefix if op.name not in PREFIX_FUNCTIONS]
    return out, [(moved(op.start), op.name) for op in [*unknown, *unknown_prefix]]


def name_unknown_operators(tree: exp.Expr, unknown: list[tuple[int, str]]) -> exp.Expr:
    """``tree`` with each unknown prefix operator (a call named as it, see correct_tokens)
    an ``UnknownPrefixOperator``, and each ``UnknownOperator`` given its operator: the
    one between the last position recorded in its left operand and the first in its
    right one."""
    for call in list(tree.find_all(exp.Anonymous)):
        start = _meta(call, "start")
        if (start, call.name) in unknown and len(call.expressions) == 1:
            marked = UnknownPrefixOperator(this=call.expressions[0])
            marked.meta.update(start=start, name=call.name)
            if call is tree:
                tree = marked
            else:
                call.replace(marked)
    for node in tree.find_all(UnknownOperator):
        lo = max((_meta(n, "end") for n in node.this.walk()), default=-1)
        hi = min((_meta(n, "start") for n in node.expression.walk()), default=1 << 62)
        start, name = next(((p, n) for p, n in unknown if lo < p < hi), unknown[0])
        node.meta["start"] = start
        node.meta["name"] = name
    return tree


def _meta(node: exp.Expr, key: str) -> int:
    meta = node.meta if node._meta else None
    if meta and key in meta:
        return int(meta[key])
    return -1 if key == "end" else 1 << 62
