"""Mutations as a writer sees them, the errors that reject a batch, and the format protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

Operation = Literal["insert", "update", "delete"]
OPERATIONS: tuple[Operation, ...] = ("insert", "update", "delete")


class Mutation(msgspec.Struct, frozen=True):
    """One client write (Phoenix.Sync's ``Writer.Operation``).

    ``relation`` is ``(schema, table)`` exactly as named (a change message's
    ``headers.relation``) or a table name in SQL identifier syntax (``todos``,
    ``app."Todos"``). ``changes``: the values to write (insert, update). ``data``: as
    parsed, the row as the client says it had it (TanStack DB's ``original``), of which
    only the primary key is used, to find the row of an update or delete; the rules
    (``check``, and ``ctx.mutation`` in the callbacks) see ``data`` replaced by the row as
    stored, read and locked in the batch's transaction (``{}`` for an insert)."""

    index: int
    operation: Operation
    relation: tuple[str, str] | str
    data: Mapping[str, Any]
    changes: Mapping[str, Any]


class MutationError(Exception):
    """A batch rejected; nothing of it was applied. ``index`` is the failing mutation's
    position in the batch (None when the batch itself is unusable), ``reason`` says why.
    HTTP status: 400 malformed input, 403 not allowed, 404 no such row, 422 invalid
    values."""

    status = 400

    def __init__(self, reason: str, index: int | None = None) -> None:
        where = f"mutation {index}: " if index is not None else ""
        super().__init__(where + reason)
        self.reason = reason
        self.index = index

    def at(self, index: int) -> MutationError:
        """This error, attributed to mutation ``index`` (when it has no index yet)."""
        return self if self.index is not None else type(self)(self.reason, index)

    def body(self) -> dict[str, Any]:
        """The JSON error body of ``Writer.handle``."""
        return {"message": str(self), "mutation": self.index, "reason": self.reason}


class MutationForbidden(MutationError):
    """Not allowed: a table no ``allow`` names, an operation it does not accept, or a
    ``check`` (or any callback raising this) that refused the mutation."""

    status = 403


class MutationInvalid(MutationError):
    """Not valid: values that do not fit the columns, a ``validate`` that refused them,
    no row with the given key, or a constraint Postgres enforced."""

    status = 422


class MutationNotFound(MutationInvalid):
    """The row an update or delete names does not exist (or ``load`` found none)."""

    status = 404


class Format(Protocol):
    """Turns a client's payload (decoded JSON, or its bytes) into mutations; raises
    MutationError (400) for input it cannot read. See ``TanstackDB``."""

    def parse(self, payload: Any) -> list[Mutation]: ...
