"""Bounds on every WHERE input, checked before the work they bound.

Electric documents no limits; these are pysync's, chosen far above what an application
writes by hand or generates (an ``IN`` list of ten thousand ids works) and low enough that
the worst accepted clause compiles in well under a second and never exhausts the Python
stack. A clause over a limit is a ``WhereError`` (HTTP 400) that names the limit.
"""

from __future__ import annotations

MAX_CLAUSE_LENGTH = 512 * 1024
"""Characters of the clause text: 10,000 quoted uuids in an IN list fit (about 410 KB)."""

MAX_PARAMS = 10_000
"""``$n`` parameters provided with a clause."""

MAX_PARAMS_LENGTH = 512 * 1024
"""Characters of all parameter values together (a '{...}' array param of many ids fits)."""

MAX_TOKENS = 30_000
"""Lexical tokens of the clause: what the parsing and checking work grows with (some tens
of microseconds a token; an IN list of 10,000 items is about 20,000 tokens)."""

MAX_NESTING = 30
"""Open brackets (parentheses, ``[``, ``CASE``) plus prefix operators (``NOT``, unary
``-``) enclosing any token. sqlglot's recursive-descent parser spends about 25 Python
frames per level; 30 levels stay well inside the interpreter's default limit of 1,000
frames with room for the caller's own stack."""

MAX_TYPE_CALL_NESTING = 2
"""``ARRAY[...]`` constructors and calls named like a type (``int4(...)``, ``text(...)``)
nested in one another. sqlglot first tries each of them as a type, gives up and parses it
again as an expression: every level doubles the work on what it encloses, and mixed
``int4(ARRAY[`` pairs worse (three pairs around 28,000 tokens took 19 s). Two levels cost at
most about three times the plain parse; ``int4(text(x))`` and ``ARRAY[int4(x)]`` pass."""

MAX_DEPTH = 64
"""Depth of the parsed expression, not counting parentheses and with each AND / OR chain
flattened into one level: ``1 + 1 + ... + 1`` nests one level per ``+``."""

MAX_TERMS = 5_000
"""Terms of one AND / OR chain (``id = 1 OR ...`` takes four tokens a term)."""

MAX_LIST_ITEMS = 10_000
"""Items of one ``IN (...)`` list or ``ARRAY[...]`` constructor."""

MAX_NODES = 100_000
"""Nodes of the checked expression, counting a sub-expression once for every place it is
evaluated: ``x BETWEEN SYMMETRIC a AND b`` uses ``x`` four times, ``x IN (col1, col2)``
once per item, and nesting such forms would multiply the work of the evaluator and the
SQL renderer without bound."""


def over_limit(what: str, limit: int) -> str:
    """The reason of a WhereError for input over one of the limits above."""
    return f"{what} exceeds the limit of {limit:,}"
