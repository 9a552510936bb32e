"""Enum values as the evaluator holds them: their label, ordered as Postgres orders them.

Postgres compares two values of an enum by their labels' ``pg_enum.enumsortorder``, which
``ALTER TYPE ... ADD VALUE ... BEFORE/AFTER`` sets anywhere: not by the labels' text, nor
by the order they were added in. An ``EnumValue`` is its label (a ``str``: equal to and
hashed as the label, printed as it) that compares by its place in the labels the catalog
listed when the clause was compiled (``EnumType``).

A label that list lacks was added (or renamed) since: its place is unknown, so reading it
raises ValueError, which the evaluator reports as ``WhereRuntimeError`` and the shape is
invalidated (its refetch compiles the clause with the catalog as it is now). Adding a
label never reorders the others, so every value the list has keeps its answer.
"""

from __future__ import annotations

from collections.abc import Sequence


class EnumValue(str):
    """A label of ``enum``, ordered by ``rank`` (its place in ``enum.labels``)."""

    # A str subclass cannot have __slots__; there is one object per label of a type.
    rank: int
    enum: EnumType

    def _rank_of(self, other: object) -> int:
        if isinstance(other, EnumValue) and other.enum.name == self.enum.name:
            return other.rank
        # the checker compares enums of one type only: anything else is a bug, never text order
        raise TypeError(f"cannot order {self.enum.name} against {other!r}")

    def __lt__(self, other: object) -> bool:
        return self.rank < self._rank_of(other)

    def __le__(self, other: object) -> bool:
        return self.rank <= self._rank_of(other)

    def __gt__(self, other: object) -> bool:
        return self.rank > self._rank_of(other)

    def __ge__(self, other: object) -> bool:
        return self.rank >= self._rank_of(other)


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

    def __repr__(self) -> str:
        return f"EnumType({self.sql}, {self.labels})"
