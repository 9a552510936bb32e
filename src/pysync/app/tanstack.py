"""TanStack DB's mutation list (``transaction.mutations`` of a collection handler), as
``Phoenix.Sync.Writer.Format.TanstackDB`` reads it::

    [{"type": "insert" | "update" | "delete", "modified": {...}, "original": {...},
      "changes": {...}, "syncMetadata": {"relation": ["public", "todos"]}, ...}]

Inserts write ``modified``; updates write ``changes`` to the row ``original`` identifies;
deletes remove the row ``original`` identifies. The list may also come wrapped as
``{"mutations": [...]}`` or ``{"transaction": [...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from pysync.app.mutation import OPERATIONS, Mutation, MutationError
from pysync.http.json_input import JSONTooDeep, decode_json

MAX_MUTATIONS = 1000


class TanstackDB:
    """The default format of ``pysync.Writer``."""

    def __init__(self, max_mutations: int = MAX_MUTATIONS) -> None:
        self.max_mutations = max_mutations

    def parse(self, payload: Any) -> list[Mutation]:
        if isinstance(payload, (bytes, bytearray, memoryview, str)):
            try:
                payload = decode_json(payload)
            except JSONTooDeep as exc:
                raise MutationError(str(exc)) from None
            except msgspec.DecodeError as exc:
                raise MutationError(f"the body is not JSON: {exc}") from None
        if isinstance(payload, Mapping):
            payload = payload.get("mutations", payload.get("transaction"))
        if not isinstance(payload, list):
            raise MutationError("expected a list of mutations")
        if not payload:
            raise MutationError("empty transaction")
        if len(payload) > self.max_mutations:
            raise MutationError(f"too many mutations (at most {self.max_mutations} in one batch)")
        return [_mutation(index, item) for index, item in enumerate(payload)]


def _mutation(index: int, item: Any) -> Mutation:
    if not isinstance(item, Mapping):
        raise MutationError("expected an object", index)
    operation = item.get("type")
    if operation not in OPERATIONS:
        raise MutationError(
            f"type must be one of insert, update, delete; got {str(operation)[:40]!r}", index
        )
    metadata = item.get("syncMetadata")
    relation = metadata.get("relation") if isinstance(metadata, Mapping) else None
    if (
        isinstance(relation, list)
        and len(relation) == 2
        and all(isinstance(p, str) for p in relation)
    ):
        relation = (relation[0], relation[1])
    elif not isinstance(relation, str):
        raise MutationError('syncMetadata.relation must be ["schema", "table"]', index)
    data: Any
    changes: Any
    if operation == "insert":
        data, changes = {}, item.get("modified")
    elif operation == "update":
        data, changes = item.get("original"), item.get("changes")
    else:
        data, changes = item.get("original"), {}
    for name, value in (
        ("original", data),
        ("changes" if operation == "update" else "modified", changes),
    ):
        if not isinstance(value, Mapping):
            raise MutationError(f"{name} must be an object", index)
    assert isinstance(data, Mapping) and isinstance(changes, Mapping)
    return Mutation(index, operation, relation, data, changes)
