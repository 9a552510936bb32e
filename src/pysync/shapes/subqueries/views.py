"""What a shape sees of one of its dependencies' values: a *view*.

A dependency (``dependency.Dependency``) keeps its current values as counts of keys: a
key is a column's text (``str | None``), or a tuple of texts for ``(a, b) IN (SELECT x, y
...)``. A dependent shape does not follow every change at once: it applies a dependency's
changes when it can (a move-out at the end of the transaction, a move-in once its query is
spliced into the log). Until then its view keeps the values it had: ``diff`` holds, for
the keys where the view and the dependency differ, the view's own presence. Views of the
same dependency share its counts, so a large dependency costs its memory once.

``member(key)`` is ``key IN (values)`` with SQL's three-valued result: TRUE on a match,
NULL when a NULL could be equal (a NULL key, or a NULL among the values), else FALSE, and
FALSE for no values at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

Key = str | None | tuple[str | None, ...]


class Source(Protocol):
    counts: dict[Key, int]
    null_keys: int
    """How many of the keys are NULL or hold a NULL."""


class Owner(Protocol):
    def dependency_changed(self, view: View, xid: int) -> None:
        """The dependency behind ``view`` changed (its ``diff`` now says how)."""


class View:
    __slots__ = ("source", "diff", "owner", "number", "width")

    def __init__(self, source: Source, owner: Owner, number: int, width: int) -> None:
        self.source = source
        self.diff: dict[Key, bool] = {}
        self.owner = owner
        self.number = number
        """Which dependency of the owner this is."""
        self.width = width
        """1 for a column, n for a row of n columns."""

    def contains(self, key: Key) -> bool:
        diff = self.diff
        if diff:
            present = diff.get(key)
            if present is not None:
                return present
        return key in self.source.counts

    def member(self, key: Key) -> bool | None:
        if self.width == 1:
            if key is None:
                return None if self.nonempty() else False
            if self.contains(key):
                return True
            return None if self.contains(None) else False
        assert isinstance(key, tuple)
        if None not in key:
            if self.contains(key):
                return True
            if not self.has_null_keys():
                return False
        return None if any(_compatible(key, k) for k in self.keys()) else False

    def keys(self) -> Iterator[Key]:
        diff = self.diff
        if not diff:
            yield from self.source.counts
            return
        for key in self.source.counts:
            if key not in diff:
                yield key
        for key, present in diff.items():
            if present:
                yield key

    def texts(self) -> list[Key]:
        return list(self.keys())

    def nonempty(self) -> bool:
        return next(iter(self.keys()), _NOTHING) is not _NOTHING

    def has_null_keys(self) -> bool:
        if not self.diff:
            return self.source.null_keys > 0
        return any(_has_null(k) for k in self.keys())

    # -- following the dependency ------------------------------------------------------

    def changed(self, flips: dict[Key, bool], xid: int) -> None:
        """The dependency's presence of ``flips``' keys changed (the values are what they
        were): the view keeps them as they were until its owner applies them."""
        diff = self.diff
        counts = self.source.counts
        for key, was in flips.items():
            mine = diff.setdefault(key, was)
            if mine == (key in counts):
                del diff[key]  # back to what this view has
        self.owner.dependency_changed(self, xid)

    def pending(self) -> tuple[dict[Key, bool], dict[Key, bool]]:
        """(added, removed): keys the dependency gained / lost that this view has not
        applied yet; the values are the view's presence (False / True)."""
        added: dict[Key, bool] = {}
        removed: dict[Key, bool] = {}
        counts = self.source.counts
        for key, mine in self.diff.items():
            theirs = key in counts
            if theirs and not mine:
                added[key] = mine
            elif mine and not theirs:
                removed[key] = mine
        return added, removed

    def apply(self, keys: dict[Key, bool]) -> None:
        """Follow the dependency for ``keys`` from now on."""
        diff = self.diff
        for key in keys:
            diff.pop(key, None)

    def follow(self) -> None:
        """Follow the dependency for every key from now on (a snapshot starts)."""
        self.diff.clear()


class Reverted:
    """``view`` as it was before a move: ``old`` holds the presence of the moved keys."""

    __slots__ = ("view", "old", "width")

    def __init__(self, view: View, old: dict[Key, bool]) -> None:
        self.view = view
        self.old = old
        self.width = view.width

    def contains(self, key: Key) -> bool:
        present = self.old.get(key)
        return self.view.contains(key) if present is None else present

    def keys(self) -> Iterator[Key]:
        old = self.old
        for key in self.view.keys():  # noqa: SIM118 - View.keys is not a mapping's
            if key not in old:
                yield key
        for key, present in old.items():
            if present:
                yield key

    def texts(self) -> list[Key]:
        return list(self.keys())

    def member(self, key: Key) -> bool | None:
        if self.width == 1:
            if key is None:
                return None if next(iter(self.keys()), _NOTHING) is not _NOTHING else False
            if self.contains(key):
                return True
            return None if self.contains(None) else False
        assert isinstance(key, tuple)
        if None not in key and self.contains(key):
            return True
        return None if any(_compatible(key, k) for k in self.keys()) else False


_NOTHING = object()


def _has_null(key: Key) -> bool:
    return key is None or (isinstance(key, tuple) and None in key)


def _compatible(row: tuple[str | None, ...], key: Key) -> bool:
    """Could ``row = key`` be NULL or TRUE (no pair of non-NULL values differs)?"""
    assert isinstance(key, tuple)
    return all(a is None or b is None or a == b for a, b in zip(row, key, strict=True))
