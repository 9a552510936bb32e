"""Enum values as the evaluator holds them: their label, ordered as Postgres orders them.

Postgres compares two values of an enum by their labels' ``pg_enum.enumsortorder``, which
``ALTER TYPE ... ADD VALUE ... BEFORE/AFTER`` sets anywhere: not by the labels' text, nor
by the order they were added in. An ``EnumValue`` is its label (a ``str``: equal to and
hashed as the label, printed as it) that compares by its place in the labels the catalog
listed when the clause was compiled (``EnumType``).

A row's label that list lacks was added since (a renamed one ends the shape first:
``shapes/drift.py``): it equals no label the clause knows, so equality needs no order, but
its place is unknown, so ordering it raises WhereRuntimeError, which invalidates the shape (its
refetch compiles the clause with the catalog as it is now). Adding a label never reorders
the others, so every value the list has keeps its answer, and a shape that only tests
equality (``status = 'active'``, the common case) lives on through an ``ADD VALUE``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._ir import WhereRuntimeError


class EnumValue(str):
    """A label of ``enum``, ordered by ``rank`` (its place in ``enum.labels``)."""

    # A str subclass cannot have __slots__; there is one object per label of a type.
    rank: int
    enum: EnumType

    def _ranks(self, other: object) -> tuple[int, int]:
        if not (isinstance(other, EnumValue) and other.enum.name == self.enum.name):
            # the checker compares enums of one type only: anything else is a bug, never
            # text order
            raise TypeError(f"cannot order {self.enum.name} against {other!r}")
        for value in (self, other):
            if value.rank < 0:
                raise WhereRuntimeError(
                    f"the order of {value.enum.name.removeprefix('enum:')} label "
                    f'"{value}" is not known here (added since the shape was made)'
                )
        return self.rank, other.rank

    def __lt__(self, other: object) -> bool:
        a, b = self._ranks(other)
        return a < b

    def __le__(self, other: object) -> bool:
        a, b = self._ranks(other)
        return a <= b

    def __gt__(self, other: object) -> bool:
        a, b = self._ranks(other)
        return a > b

    def __ge__(self, other: object) -> bool:
        a, b = self._ranks(other)
        return a >= b

    # Equality and hashing stay str's (by label): only ordering is defined here.


class EnumType:
    """An enum type as the catalog had it: its SQL name and labels in their order."""

    def __init__(self, name: str, sql: str, labels: Sequence[str]) -> None:
        self.name = name
        """As the checker types it: ``enum:<typname>``."""
        self.sql = sql
        """Schema-qualified and quoted, to write constants and casts back as SQL."""
        self.labels = tuple(labels)
        self._values: dict[str, EnumValue] = {}
        for rank, label in enumerate(self.labels):
            value = EnumValue(label)
            value.rank = rank
            value.enum = self
            self._values[label] = value

    def value(self, label: str) -> EnumValue:
        """The value of ``label``; ValueError if the type had no such label when the catalog
        was read (Postgres' message for an unknown one)."""
        found = self._values.get(label)
        if found is None:
            raise ValueError(
                f'invalid input value for enum {self.name.removeprefix("enum:")}: "{label}"'
            )
        return found

    def cast(self, text: str) -> EnumValue:
        """``text::enum`` (Postgres' I/O conversion: the label's input function): ``value``,
        with an unknown label as the row's error (a label added since the clause was
        compiled too: the shape's refetch compiles it with the labels as they are now)."""
        try:
            return self.value(text)
        except ValueError as e:
            raise WhereRuntimeError(str(e)) from None

    def read(self, label: str) -> EnumValue:
        """A row's value: ``value``, or for a label added since the catalog was read, a
        value that equals only itself and refuses to be ordered."""
        found = self._values.get(label)
        if found is None:
            found = EnumValue(label)
            found.rank = -1
            found.enum = self
        return found

    def __repr__(self) -> str:
        return f"EnumType({self.sql}, {self.labels})"
