"""``value IN (SELECT ...)`` sublinks: found in a clause Postgres accepted, checked against
Electric's rules, and cut out so that the rest of the clause parses as before.

Electric accepts one sublink form, ``testexpr IN (SELECT col, ... FROM table [WHERE ...])``
(also under NOT); every other one (``EXISTS``, ``= ANY (SELECT``, a scalar subquery,
``ARRAY(SELECT``) is refused with ``only `value IN (SELECT ...)` sublinks are supported
right now``. The subquery itself must be a plain select of columns from one table.

Everything here works on Postgres' own tokens (``pglast.parser.scan``) of the statement
the syntax check accepted: no parse tree is built, so a deep inner expression costs no
recursion here (the inner WHERE is compiled as a clause of its own, with the same bounds).

Each sublink's parenthesised subquery is replaced, in the text handed to sqlglot, by a
quoted marker identifier of the same length (newlines kept), so every other position in
the clause stays where it was: ``x IN (SELECT id FROM t)`` becomes ``x IN ("\\x01s0"     )``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import parser as pg

from ._ir import WhereError
from ._syntax import PREFIX

SUBLINK_MESSAGE = "only `value IN (SELECT ...)` sublinks are supported right now"
CLAUSES_MESSAGE = "SELECT statement must not contain any clauses"
MARKER_PREFIX = "\x01s"
"""Start of a marker identifier; no column of a real table is named like this (a control
character), and a marker is only taken for one at the position the sublink was cut from."""

_OPEN, _CLOSE, _COMMA, _DOT = "ASCII_40", "ASCII_41", "ASCII_44", "ASCII_46"
# Keywords after which a subquery's SELECT list or FROM list ends, or that start a clause
# Electric refuses in a subquery.
_CLAUSE_WORDS = frozenset(
    {
        "GROUP_P",
        "HAVING",
        "WINDOW",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "FETCH",
        "FOR",
        "UNION",
        "INTERSECT",
        "EXCEPT",
        "INTO",
        "DISTINCT",
        "WITH",
        "WITH_LA",
        "VALUES",
        "TABLE",
    }
)
_NAME_KINDS = frozenset({"UNRESERVED_KEYWORD", "COL_NAME_KEYWORD", "TYPE_FUNC_NAME_KEYWORD"})
_QUANTIFIERS = frozenset({"ANY", "ALL", "SOME"})


@dataclass(frozen=True)
class SublinkSpec:
    """One ``IN (SELECT ...)`` of a clause. Positions are offsets in the clause."""

    index: int
    """Its number in the clause, in textual order."""
    location: int
    """Where Postgres places the sublink: its ``IN`` (or the ``NOT`` of ``NOT IN``)."""
    start: int
    end: int
    """The parenthesised subquery is ``clause[start:end]``."""
    schema: str
    table: str
    columns: tuple[str, ...]
    where: str | None
    """The subquery's WHERE, as written (None without one)."""
    where_offset: int
    """Offset of ``where`` in the clause, for the locations of errors in it."""

    @property
    def marker(self) -> str:
        return MARKER_PREFIX + str(self.index)


def has_sublink(text: str) -> bool:
    """Cheap test before tokenising: any sublink needs the word SELECT."""
    return "select" in text.lower()


def cut_sublinks(text: str) -> tuple[str, list[SublinkSpec]]:
    """``text`` (a clause Postgres accepted) with its top-level sublinks replaced by
    markers, and the sublinks; raises WhereError with Electric's messages."""
    if not has_sublink(text):
        return text, []
    wrapped = PREFIX + text
    tokens = [t for t in pg.scan(wrapped) if t.name not in ("SQL_COMMENT", "C_COMMENT")][3:]
    match = _matching(tokens)
    specs: list[SublinkSpec] = []
    pieces: list[str] = []
    done = 0  # text consumed into pieces
    i = 0
    while i < len(tokens):
        if tokens[i].name != "SELECT":
            i += 1
            continue
        spec, last = _sublink(wrapped, tokens, match, i, len(specs))
        specs.append(spec)
        pieces.append(text[done : spec.start])
        pieces.append(_marker_text(text[spec.start : spec.end], spec.marker))
        done = spec.end
        i = last + 1
    pieces.append(text[done:])
    return "".join(pieces), specs


def _matching(tokens: list[pg.Token]) -> dict[int, int]:
    """Index of the closing parenthesis of each opening one (Postgres balanced them)."""
    stack: list[int] = []
    match: dict[int, int] = {}
    for i, tok in enumerate(tokens):
        if tok.name == _OPEN:
            stack.append(i)
        elif tok.name == _CLOSE and stack:
            match[stack.pop()] = i
    return match


def _marker_text(original: str, marker: str) -> str:
    padding = "".join("\n" if c == "\n" else " " for c in original[len(marker) + 4 :])
    return '("' + marker + '"' + padding + ")"


def _sublink(
    wrapped: str, tokens: list[pg.Token], match: dict[int, int], select: int, index: int
) -> tuple[SublinkSpec, int]:
    """The sublink whose subquery starts with the SELECT at ``tokens[select]``, and the
    index of its last token."""
    offset = len(PREFIX)
    if select == 0 or tokens[select - 1].name != _OPEN:
        # not reached: Postgres parses a SELECT in an expression only in parentheses
        raise WhereError(SUBLINK_MESSAGE, max(tokens[select].start - offset, 0))
    inner = select - 1
    # ((SELECT ...)) is one parenthesised select: take the outermost parenthesis
    first = inner
    while (
        first > 0 and tokens[first - 1].name == _OPEN and match.get(first - 1) == match[first] + 1
    ):
        first -= 1
    close = match[first]
    before = tokens[first - 1] if first > 0 else None
    kind_ok = before is not None and before.name == "IN_P"
    if kind_ok:
        not_in = first >= 2 and tokens[first - 2].name == "NOT"
        location = tokens[first - 2 if not_in else first - 1].start - offset
    else:
        location = _sublink_location(tokens, first) - offset
    columns, table, where, where_start = _subquery(wrapped, tokens, select, match[inner])
    if not kind_ok:
        raise WhereError(SUBLINK_MESSAGE, location)
    schema, name = table
    spec = SublinkSpec(
        index=index,
        location=location,
        start=tokens[first].start - offset,
        end=tokens[close].start + 1 - offset,
        schema=schema,
        table=name,
        columns=columns,
        where=where,
        where_offset=where_start - offset if where is not None else 0,
    )
    return spec, close


def _sublink_location(tokens: list[pg.Token], first: int) -> int:
    """Where Postgres would place a refused sublink: EXISTS/ARRAY, the operator of
    ``op ANY/ALL (SELECT``, or the parenthesis of a scalar subquery."""
    before = tokens[first - 1] if first > 0 else None
    if before is None:
        return tokens[first].start
    if before.name in ("EXISTS", "ARRAY"):
        return before.start
    if before.name in _QUANTIFIERS and first >= 2:
        return tokens[first - 2].start
    return tokens[first].start


def _subquery(
    wrapped: str, tokens: list[pg.Token], select: int, close: int
) -> tuple[tuple[str, ...], tuple[str, str], str | None, int]:
    """(columns, (schema, table), WHERE text, WHERE start) of the subquery
    ``tokens[select:close]``, checked in Electric's order: columns, table, clauses."""
    body = list(range(select + 1, close))
    depth = 0
    top: list[int] = []  # tokens of the subquery at its own bracket level
    for i in body:
        name = tokens[i].name
        if name == _OPEN:
            if depth == 0:
                top.append(i)
            depth += 1
        elif name == _CLOSE:
            depth -= 1
            if depth == 0:
                top.append(i)
        elif depth == 0:
            top.append(i)
    names = [tokens[i].name for i in top]
    distinct = bool(names) and names[0] == "DISTINCT"
    if names and names[0] in ("DISTINCT", "ALL"):
        top, names = top[1:], names[1:]
    from_at = names.index("FROM") if "FROM" in names else len(names)
    where_at = names.index("WHERE") if "WHERE" in names else len(names)
    clause_at = next((k for k, n in enumerate(names) if n in _CLAUSE_WORDS), len(names))
    targets_end = min(from_at, where_at, clause_at)
    if any(n in ("UNION", "INTERSECT", "EXCEPT") for n in names):
        raise WhereError("Expected a single table reference")
    columns = _targets(wrapped, tokens, top[:targets_end], select)
    from_end = min(where_at, clause_at)
    table = _from(wrapped, tokens, top[from_at + 1 : from_end] if from_at < len(names) else None)
    if distinct or clause_at < len(names) or (where_at < len(names) and where_at < from_at):
        raise WhereError(CLAUSES_MESSAGE)
    if where_at == len(names):
        return columns, table, None, 0
    where_token = tokens[top[where_at]]
    where_start = where_token.end + 1
    return columns, table, wrapped[where_start : tokens[close].start], where_start


def _targets(wrapped: str, tokens: list[pg.Token], top: list[int], select: int) -> tuple[str, ...]:
    groups: list[list[int]] = [[]]
    for i in top:
        if tokens[i].name == _COMMA:
            groups.append([])
        else:
            groups[-1].append(i)
    if groups == [[]]:
        return ()
    columns = []
    for group in groups:
        if not group:
            raise WhereError(
                f"At location {tokens[select].end + 1}: Expected a plain column reference"
            )
        head = tokens[group[0]]
        # "col", "col AS alias", "col alias": an alias is ignored, as Electric does
        alias_ok = (
            len(group) == 1
            or (len(group) == 3 and tokens[group[1]].name == "AS" and _is_name(tokens[group[2]]))
            or (len(group) == 2 and _is_name(tokens[group[1]]))
        )
        if not (_is_name(head) and alias_ok):
            raise WhereError(f"At location {head.start}: Expected a plain column reference")
        columns.append(_name(wrapped, head))
    return tuple(columns)


def _from(wrapped: str, tokens: list[pg.Token], top: list[int] | None) -> tuple[str, str]:
    error = WhereError("Expected a single table reference")
    if not top:
        raise error
    names = [tokens[i] for i in top]
    if names[0].name == "ONLY":
        names = names[1:]
    # name | schema . name, then an optional [AS] alias
    if len(names) >= 3 and names[1].name == _DOT and _is_name(names[0]) and _is_name(names[2]):
        schema, table, rest = _name(wrapped, names[0]), _name(wrapped, names[2]), names[3:]
    elif names and _is_name(names[0]):
        schema, table, rest = "public", _name(wrapped, names[0]), names[1:]
    else:
        raise error
    if rest and rest[0].name == "AS":
        rest = rest[1:]
    if len(rest) > 1 or (rest and not _is_name(rest[0])):
        raise error
    return schema, table


def _is_name(tok: pg.Token) -> bool:
    return tok.name == "IDENT" or tok.kind in _NAME_KINDS


def _name(wrapped: str, tok: pg.Token) -> str:
    text = wrapped[tok.start : tok.end + 1]
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)
