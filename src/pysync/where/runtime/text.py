"""Text: LIKE / ILIKE patterns and the case mappings of lower(), upper() and ILIKE (the
registry's collated entries: what they compute depends on the collation's case mapping)."""

from __future__ import annotations

import re
from collections.abc import Callable

from pysync.postgres.types import strings

from .._ir import WhereRuntimeError


def like_matcher(
    pattern: str, escape: str | None, lower: Callable[[str], str] | None
) -> Callable[[str], bool]:
    """A LIKE pattern (``%``, ``_``, escape character, default backslash) as a test of a
    whole string, in time linear in the string times the pattern.

    A regular expression with one ``.*`` per ``%`` backtracks polynomially (exponentially
    for ``%%%%``) when it fails. Instead the pattern is split at ``%`` into fixed-length
    segments: the first is matched at the start, the last at the end, and each one
    between at its leftmost place after the one before, which leaves the most room for
    the rest (the standard greedy algorithm, exact for fixed-length segments).
    """
    if lower is not None:  # ILIKE: the lowered string matches the lowered pattern
        pattern = lower(pattern)
    segments: list[list[str]] = [[]]  # each item matches exactly one character
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if escape is not None and c == escape:
            i += 1
            if i >= n:
                raise WhereRuntimeError("LIKE pattern must not end with escape character")
            segments[-1].append(re.escape(pattern[i]))
        elif c == "%":
            segments.append([])
        elif c == "_":
            segments[-1].append(".")
        else:
            segments[-1].append(re.escape(c))
        i += 1
    compiled = [(re.compile("".join(seg), re.DOTALL), len(seg)) for seg in segments]
    if len(compiled) == 1:
        whole = compiled[0][0].fullmatch
        return lambda s: whole(s) is not None
    (first, first_len), *middle, (last, last_len) = compiled
    middle = [(rx, size) for rx, size in middle if size]
    minimum = first_len + last_len + sum(size for _, size in middle)

    def match(s: str) -> bool:
        end = len(s) - last_len
        if len(s) < minimum or first.match(s, 0, first_len) is None:
            return False
        pos = first_len
        for rx, _ in middle:
            found = rx.search(s, pos, end)
            if found is None:
                return False
            pos = found.end()
        return last.fullmatch(s, end) is not None

    return match


def like_escape(value: str) -> str | None:
    if value == "":
        return None
    if len(value) != 1:
        raise WhereRuntimeError("invalid escape string")
    return value


CASE_MAPS: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "unicode": (strings.unicode_lower, strings.unicode_upper),
    "builtin": (strings.builtin_lower, strings.builtin_upper),
    "ascii": (strings.ascii_lower, strings.ascii_upper),
}
"""(lower, upper) by the ctype's kind (see ``_check.case_mapping``)."""


class LikeOperator:
    """``~~`` (LIKE) or, under a case mapping, ``~~*`` (ILIKE): ``s LIKE pattern [ESCAPE
    e]`` on non-NULL values. Each pattern is compiled once (up to a bound) per operator
    of a clause; ``matcher`` gives the test of a constant one."""

    __slots__ = ("_lower", "_matchers")

    def __init__(self, case: str | None) -> None:
        self._lower = None if case is None else CASE_MAPS[case][0]
        self._matchers: dict[tuple[str, str], Callable[[str], bool]] = {}

    def matcher(self, pattern: str, escape: str = "\\") -> Callable[[str], bool]:
        """``s LIKE pattern ESCAPE escape`` as a test of ``s`` (raises WhereRuntimeError
        for a pattern or escape Postgres refuses)."""
        lower = self._lower
        match = like_matcher(pattern, like_escape(escape), lower)
        if lower is None:
            return match
        return lambda s: match(lower(s))  # ILIKE: the lowered string, lowered pattern

    def __call__(self, s: str, pattern: str, escape: str = "\\") -> bool:
        key = (pattern, escape)
        match = self._matchers.get(key)
        if match is None:
            match = self.matcher(pattern, escape)
            if len(self._matchers) < 256:
                self._matchers[key] = match
        return match(s)
