"""The syntax check, with Postgres' own parser (libpg_query, through pglast), as Electric.

Electric parses ``SELECT 1 WHERE <clause>`` with libpg_query and reports Postgres' message
with Postgres' cursor position in that wrapped statement, made zero-based
(``At location 17: syntax error at or near "x"`` for ``1 x 1``). Doing the same here gives
the same accept/reject decision and the same words; sqlglot then parses what Postgres
accepted, and the checker built on sqlglot's tree decides what pysync supports.

The lexical limits (``_limits``) are checked here on Postgres' tokens, before sqlglot
spends any work on the clause.
"""

from __future__ import annotations

from pglast import parser as pg
from sqlglot.dialects.postgres import Postgres

from ._ir import WhereError
from ._limits import (
    MAX_CLAUSE_LENGTH,
    MAX_NESTING,
    MAX_TOKENS,
    MAX_TYPE_CALL_NESTING,
    over_limit,
)

PREFIX = "SELECT 1 WHERE "

_OPEN = frozenset({"ASCII_40", "ASCII_91", "CASE"})  # ( [ CASE
_CLOSE = frozenset({"ASCII_41", "ASCII_93", "END_P"})
_PREFIX_OPERATORS = frozenset({"NOT", "Op", "ASCII_43", "ASCII_45"})  # NOT, ~ @ |/ ..., + -
_OPERANDS = frozenset(
    {
        "IDENT",
        "UIDENT",
        "ICONST",
        "FCONST",
        "SCONST",
        "USCONST",
        "BCONST",
        "XCONST",
        "PARAM",
    }
)
# Keywords that take an operand after them: a prefix operator may follow them.
_OPERATOR_KEYWORDS = frozenset(
    {
        "AND",
        "OR",
        "NOT",
        "IS",
        "IN_P",
        "LIKE",
        "ILIKE",
        "SIMILAR",
        "BETWEEN",
        "SYMMETRIC",
        "ASYMMETRIC",
        "WHEN",
        "THEN",
        "ELSE",
        "CASE",
        "ANY",
        "ALL",
        "SOME",
        "ESCAPE",
        "OPERATOR",
        "COLLATE",
        "AT",
        "DISTINCT",
        "FROM",
        "ARRAY",
        "EXISTS",
        "INTERVAL",
        "OVERLAPS",
        "TO",
    }
)
# Keywords that can only start a clause of the SELECT after its WHERE (Electric: "malformed
# query ending with SQL clauses"); GROUP counts only before BY (WITHIN GROUP is a function's).
_CLAUSE_KEYWORDS = frozenset(
    {
        "ORDER",
        "HAVING",
        "WINDOW",
        "LIMIT",
        "OFFSET",
        "FETCH",
        "FOR",
        "UNION",
        "INTERSECT",
        "EXCEPT",
        "INTO",
    }
)
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_QUANTIFIERS = frozenset({"ANY", "ALL", "SOME"})  # "= ANY(" costs sqlglot two levels
# Words sqlglot reads as type names: before "(" or "[" it tries a type first (see
# MAX_TYPE_CALL_NESTING); ARRAY is one of them.
_TYPE_WORDS = frozenset(
    word
    for word, token in Postgres.Tokenizer.KEYWORDS.items()
    if token in Postgres.Parser.TYPE_TOKENS and " " not in word
)


def check_syntax(clause: str) -> str:
    """The clause as Postgres parsed it (a trailing ``;`` dropped); raises WhereError."""
    if len(clause) > MAX_CLAUSE_LENGTH:
        raise WhereError(over_limit("WHERE clause length", MAX_CLAUSE_LENGTH))
    nul = clause.find("\x00")
    if nul >= 0:
        # Postgres cannot receive a NUL in query text; its message for one in a literal:
        raise WhereError('invalid byte sequence for encoding "UTF8": 0x00', nul)
    wrapped = PREFIX + clause
    try:
        statements = pg.split(wrapped, with_parser=True)
    except pg.ParseError as e:
        raise WhereError(str(e.args[0]), _electric_location(wrapped, e)) from None
    if len(statements) != 1:
        raise WhereError('unescaped ";" causing statement split')
    statement = statements[0]
    tokens = pg.scan(statement)
    _check_tokens(statement, [t for t in tokens if t.name not in _COMMENTS])
    return _without_comments(statement, tokens)[len(PREFIX) :]


def _without_comments(statement: str, tokens: list[pg.Token]) -> str:
    """Comments as spaces, as Postgres reads them (offsets unchanged, for error
    locations); sqlglot would keep them in its tree."""
    comments = [t for t in tokens if t.name in _COMMENTS]
    if not comments:
        return statement
    text = list(statement)
    for tok in comments:
        for i in range(tok.start, tok.end + 1):
            if text[i] != "\n":
                text[i] = " "
    return "".join(text)


def _electric_location(wrapped: str, e: pg.ParseError) -> int:
    """Electric's ``cursorpos - 1``. pglast gives that index, or None where it is outside
    the text: at the end of the input, or 0 - 1 when Postgres reports no position."""
    index = e.args[1] if len(e.args) > 1 else None
    if isinstance(index, int):
        return index
    return len(wrapped) if "at end of input" in str(e.args[0]) else -1


def _check_tokens(statement: str, tokens: list[pg.Token]) -> None:
    body = tokens[3:]  # SELECT 1 WHERE
    if len(body) > MAX_TOKENS:
        raise WhereError(over_limit("number of tokens", MAX_TOKENS))
    # per open bracket: the levels it adds (itself and its prefixes), and whether it
    # follows a type name
    stack: list[tuple[int, bool]] = []
    level = 0
    type_calls = 0
    run = 0  # prefix operators since the last operand, at the current bracket level
    after_operand = False
    previous: pg.Token | None = None
    for i, tok in enumerate(body):
        name = tok.name
        if name in _OPEN:
            levels = run + 1 + (previous is not None and previous.name in _QUANTIFIERS)
            typed = (
                name != "CASE"
                and previous is not None
                and (previous.name == "IDENT" or previous.kind != "NO_KEYWORD")
                and statement[previous.start : previous.end + 1].upper() in _TYPE_WORDS
            )
            stack.append((levels, typed))
            level += levels
            type_calls += typed
            run = 0
            after_operand = False
            if level > MAX_NESTING:
                raise _too_deep(tok)
            if type_calls > MAX_TYPE_CALL_NESTING:
                raise WhereError(
                    over_limit(
                        "nesting of ARRAY constructors and type-named calls", MAX_TYPE_CALL_NESTING
                    ),
                    tok.start - len(PREFIX),
                )
        elif name in _CLOSE:
            if stack:
                levels, typed = stack.pop()
                level -= levels
                type_calls -= typed
            run = 0
            after_operand = True
        elif name in _PREFIX_OPERATORS and not after_operand:
            run += 1
            if level + run > MAX_NESTING:
                raise _too_deep(tok)
        elif name in _OPERANDS or (tok.kind != "NO_KEYWORD" and name not in _OPERATOR_KEYWORDS):
            if not stack and (
                name in _CLAUSE_KEYWORDS
                or (name == "GROUP_P" and i + 1 < len(body) and body[i + 1].name == "BY")
            ):
                raise WhereError("malformed query ending with SQL clauses")
            run = 0
            after_operand = True
        else:
            after_operand = False
        previous = tok


def _too_deep(tok: pg.Token) -> WhereError:
    return WhereError(
        over_limit("nesting of brackets and prefix operators", MAX_NESTING), tok.start - len(PREFIX)
    )
