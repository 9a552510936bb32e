"""Compaction of a shape log's history: updates to the same row merge into one.

The rules are those of Electric's compaction (its ``experimental_compaction``), which
keep every client able to resume from any offset it holds:

- inserts and deletes are never dropped, and nothing moves across them: an update
  merges only with updates of the same key since that key's last insert or delete;
- a merged update takes the place (the offset) of the *last* update it merges, so a
  client that had read some of them still receives the rest (an update it has seen may
  come again, merged; an insert or a delete never does);
- the relative order of the operations on one row is kept;
- the live tail is not compacted (``ShapeLog`` compacts sealed blocks only).

A merged update carries the later values over the earlier ones (``value``), the
earliest old value of each column (``old_value``, ``replica=full``), and, as Electric's
compacted entries, only the ``operation`` and ``relation`` headers.

Only plain change messages are compacted; a log with anything else after its snapshot
(a subquery shape's move-in and move-out events, tags) is left as it is.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pysync.log.offset import LogOffset

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

Entries = list[tuple[LogOffset, bytes]]


class NotCompactable(Exception):
    """The log holds entries compaction does not merge (subquery events, tags)."""


def compact(entries: Entries) -> Entries:
    """``entries`` (change messages in log order) with each key's consecutive updates
    merged; raises NotCompactable for entries it must not touch."""
    # Merged entries: None where an update was merged into a later one.
    out: list[tuple[LogOffset, bytes, dict[str, Any] | None] | None] = []
    open_update: dict[str, int] = {}  # key -> index in ``out`` of its mergeable update
    for offset, payload in entries:
        message = _decode(payload)
        if not isinstance(message, dict):
            raise NotCompactable("not a message")
        headers = message.get("headers")
        key = message.get("key")
        if not isinstance(headers, dict) or not isinstance(key, str):
            raise NotCompactable("not a change message")
        if "tags" in headers or "removed_tags" in headers or "active_conditions" in headers:
            raise NotCompactable("subquery tags")
        operation = headers.get("operation")
        if operation == "update":
            earlier = open_update.get(key)
            if earlier is not None:
                previous = out[earlier]
                assert previous is not None
                message = _merge(previous[2] or _decode(previous[1]), message)
                out[earlier] = None
            open_update[key] = len(out)
            out.append((offset, payload, message if earlier is not None else None))
        elif operation in ("insert", "delete"):
            open_update.pop(key, None)
            out.append((offset, payload, None))
        else:
            raise NotCompactable(f"operation {operation!r}")
    return [
        (offset, payload if merged is None else _encode(merged))
        for offset, payload, merged in filter(None, out)
    ]


def _merge(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {"key": later["key"], "value": {**earlier["value"], **later["value"]}}
    if "old_value" in later or "old_value" in earlier:
        merged["old_value"] = {**later.get("old_value", {}), **earlier.get("old_value", {})}
    headers = later["headers"]
    merged["headers"] = {"operation": "update", "relation": headers["relation"]}
    return merged
