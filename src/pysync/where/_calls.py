"""Function calls by the name the clause spells, as Postgres looks them up.

sqlglot reads some other dialects' names as one of the language's functions or operators:
``ifnull(a, b)`` and ``nvl(a, b)`` as ``coalesce``, ``lcase(s)`` as ``lower``,
``array_has_all(a, b)`` as ``a @> b``, ``date_to_date_str(d)`` as a cast, and a quoted
``"coalesce"(a, b)`` as the COALESCE expression. Postgres has none of these functions
(``function ifnull(integer, integer) does not exist``), so a call is accepted only under
a name Postgres resolves to the same function. A call's name is the word before its
``(`` in Postgres' own tokens: keyword syntax (``COALESCE (``, ``CAST (``) is not a call.
"""

from __future__ import annotations

from collections.abc import Container

from pglast import parser as pg
from sqlglot import exp

from ._ir import WhereError

# What Postgres calls each node sqlglot builds from a call; a call whose node is not here,
# or under another name, is not the function Postgres would call.
_NAMES: dict[type[exp.Expr], frozenset[str]] = {
    exp.Lower: frozenset({"lower"}),
    exp.Upper: frozenset({"upper"}),
    exp.Concat: frozenset({"concat"}),
    exp.ArrayConcat: frozenset({"array_cat"}),
    exp.ArrayAppend: frozenset({"array_append"}),
    exp.ArrayPrepend: frozenset({"array_prepend"}),
    exp.JustifyDays: frozenset({"justify_days"}),
    exp.JustifyHours: frozenset({"justify_hours"}),
    exp.JustifyInterval: frozenset({"justify_interval"}),
    exp.Abs: frozenset({"abs"}),
    exp.Sqrt: frozenset({"sqrt"}),
    exp.Pow: frozenset({"pow", "power"}),
    exp.Cast: frozenset({"uuid"}),  # a type's name called on text: its input function
}
_NAME_TOKENS = frozenset({"NO_KEYWORD", "UNRESERVED_KEYWORD"})


def check_call_names(tree: exp.Expr, text: str, served: Container[type[exp.Expr]]) -> None:
    """Raise WhereError for a call in ``tree`` (parsed from ``text``, source offsets in
    its nodes' meta) that sqlglot read as a ``served`` node under a name Postgres does
    not have (the checker refuses other nodes in its own words)."""
    calls = [
        n
        for n in tree.walk()
        if type(n) in served
        and isinstance(n, exp.Func)
        and not isinstance(n, exp.Anonymous)
        and n._meta
        and "start" in n.meta
    ]
    if not calls:
        return  # the common case: no second scan
    tokens = list(pg.scan(text))
    names: dict[int, tuple[str, int]] = {}  # name and arity, by each offset of a name
    for i in range(len(tokens) - 1):
        tok = tokens[i]
        if tokens[i + 1].name == "ASCII_40" and tok.kind in _NAME_TOKENS:
            word = text[tok.start : tok.end + 1]
            name = word[1:-1].replace('""', '"') if word.startswith('"') else word.lower()
            call = (name, _arity(tokens, i + 2))
            names.update(dict.fromkeys(range(tok.start, tok.end + 1), call))
    for node in calls:
        start = int(node.meta["start"])
        found = names.get(start)
        if found is not None and found[0] not in _NAMES.get(type(node), frozenset()):
            raise WhereError(
                f"unknown or unsupported function {found[0]}/{found[1]}",
                min(t.start for t in tokens if t.end >= start),
            )


def _arity(tokens: list[pg.Token], i: int) -> int:
    """The number of arguments of a call whose first argument is at token ``i``."""
    depth = 0
    count = 0
    for tok in tokens[i:]:
        if tok.name in ("ASCII_40", "ASCII_91"):
            depth += 1
        elif tok.name in ("ASCII_41", "ASCII_93"):
            if depth == 0:
                return count + (tok is not tokens[i])
            depth -= 1
        elif tok.name == "ASCII_44" and depth == 0:
            count += 1
    return count + 1
