"""Waiting live requests and the interrupt registry.

A waiting long-poll costs one future and one registry entry: no thread, no polling task.
``interrupt(...)`` releases the waiting requests whose shape matches, with the matching
rules of Phoenix.Sync's ``interrupt/2``. As there, only requests whose shape an app
function defines (they carry a ``recheck``) are interrupted: the function runs again, a
request whose shape did not change goes on waiting, one whose shape changed gets a 409.
A request for a fixed shape has nothing to re-evaluate, so an interrupt leaves it alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pysync.postgres.identifiers import IdentifierError, parse_relation
from pysync.shapes.definition import ShapeDefinition, normalize_params

Recheck = Callable[[], Awaitable[ShapeDefinition]]
"""Re-evaluates an app-defined shape; returns its current definition."""

ShapeMatcher = str | ShapeDefinition | Callable[[dict[str, Any]], bool]


class Waiter:
    __slots__ = ("definition", "released", "recheck", "_again")

    def __init__(self, definition: ShapeDefinition, recheck: Recheck | None) -> None:
        self.definition = definition
        self.released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.recheck = recheck
        self._again = False

    def release(self) -> None:
        if not self.released.done():
            self.released.set_result(None)
        else:
            # Interrupted while re-checking: the re-check may have read the state from
            # before this interrupt's change, so it runs once more.
            self._again = True

    def rearm(self) -> None:
        """Wait again after an interrupt (the re-checked shape did not change)."""
        self.released = asyncio.get_running_loop().create_future()
        if self._again:
            self._again = False
            self.released.set_result(None)


def normalized_shape(definition: ShapeDefinition) -> dict[str, Any]:
    """What a callable matcher receives."""
    return {
        "table": definition.table,
        "namespace": definition.schema,
        "where": definition.where,
        "params": {str(i + 1): v for i, v in enumerate(definition.params)},
        "columns": list(definition.columns) if definition.columns is not None else None,
    }


def _comparable(definition: ShapeDefinition) -> ShapeDefinition:
    """``replica`` (and the log mode) are ignored when matching."""
    return ShapeDefinition(
        table=definition.table,
        schema=definition.schema,
        where=definition.where,
        params=definition.params,
        columns=tuple(sorted(definition.columns)) if definition.columns is not None else None,
    )


def make_matcher(
    shape: ShapeMatcher | None = None,
    *,
    table: str | None = None,
    namespace: str | None = None,
    where: str | None = None,
    params: Sequence[object] | Mapping[int | str, object] | None = None,
    columns: Sequence[str] | None = None,
    replica: str | None = None,  # noqa: ARG001 - accepted and ignored, as Phoenix.Sync does
) -> Callable[[ShapeDefinition], bool]:
    if callable(shape) and not isinstance(shape, ShapeDefinition):
        fn = shape
        return lambda d: bool(fn(normalized_shape(d)))
    if isinstance(shape, ShapeDefinition):
        target = _comparable(shape)
        return lambda d: _comparable(d) == target
    if shape is not None:
        if table is not None:
            raise TypeError("give the table either as the first argument or as table=, not both")
        table = shape
    if table is None:
        raise TypeError("interrupt() needs a table name, a shape definition or a callable")
    if namespace is None and "." in table:
        try:
            namespace, table = parse_relation(table)
        except IdentifierError as exc:
            raise ValueError(f"invalid table {table!r}: {exc}") from None
    wanted_params = normalize_params(params) if params is not None else None
    wanted_columns = sorted(columns) if columns is not None else None

    def matches(d: ShapeDefinition) -> bool:
        if d.table != table:
            return False
        if namespace is not None and d.schema != namespace:
            return False
        if where is not None and d.where != where:
            return False
        if wanted_params is not None and d.params != wanted_params:
            return False
        return not (
            wanted_columns is not None
            and (d.columns is None or sorted(d.columns) != wanted_columns)
        )

    return matches


class InterruptRegistry:
    def __init__(self) -> None:
        self._waiters: set[Waiter] = set()

    def __len__(self) -> int:
        return len(self._waiters)

    @contextmanager
    def waiting(
        self, definition: ShapeDefinition, recheck: Recheck | None = None
    ) -> Iterator[Waiter]:
        waiter = Waiter(definition, recheck)
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)

    def release_all(self) -> None:
        for waiter in list(self._waiters):
            waiter.release()

    def interrupt(self, shape: ShapeMatcher | None = None, **options: Any) -> int:
        """Interrupt every waiting app-defined request whose shape matches; returns how many."""
        matches = make_matcher(shape, **options)
        released = 0
        for waiter in list(self._waiters):
            if waiter.recheck is not None and matches(waiter.definition):
                waiter.release()
                released += 1
        return released
