"""A transaction's key changes, folded so that a client applying its entries in order
ends where Postgres did.

A key change reaches clients as a delete of the old key and an insert of the new one.
Under a DEFERRABLE key two rows may share a key until the commit: ``UPDATE t SET id =
id + 1`` on 1..3 inserts 2 while the old 2 is still there, then deletes 2 (the old row,
moving on to 3), and a client applying that in order deletes the row it just got.
A client holds one row per key, so for such a transaction the shape gets, per key, the
net change instead: the row the key held before against the one it holds at the
commit, converted as one delete, insert or update.

Rows are followed through the transaction by their values (whole rows, as REPLICA
IDENTITY FULL sends them): a change's old row is the row it changed. Two rows with
equal values are interchangeable, so picking either gives the same end.

A partitioned table's row that moves to another partition (its partition key changed)
is a delete from one partition and an insert into the other in the WAL, not an update.
Postgres makes every unique key of a partitioned table hold its partition key, so the
move changes the row's key: to a shape on the partitioned table it is a key change, a
delete and an insert (as for an update of the key), folded here like the others when
rows share a key within the transaction (a DEFERRABLE key).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pysync.postgres.transactions import Change, Truncation
from pysync.shapes.changes import Converter, Entry, Row

Changes = Iterable[Change | Truncation]
"""A transaction's changes (of the table, and maybe others)."""


def keys_changed(changes: Changes, table: tuple[str, str], pk_idx: Sequence[int]) -> bool:
    """Did an update among ``changes`` change the key of a row of ``table`` (or of one
    of its partitions)?"""
    for change in changes:
        if type(change) is not Change or change.op != "update" or change.old is None:
            continue
        relation = change.relation
        if (relation.namespace, relation.name) == table or table in relation.ancestors:
            old, new = change.old, change.new
            assert new is not None
            if any(old[i] != new[i] for i in pk_idx):
                return True
    return False


def needs_fold(entries: Sequence[Entry]) -> bool:
    """Does a key occur twice among one shape's entries (only then can their order
    matter)?"""
    keys = [entry["key"] for entry in entries if "key" in entry]
    return len(set(keys)) != len(keys)


def fold(
    converter: Converter,
    changes: Changes,
    table: tuple[str, str],
    entries: list[Entry],
    headers_base: dict[str, Any],
) -> list[Entry] | None:
    """The net entries of a transaction (``changes``; ``headers_base`` its lsn and
    txids) for a shape whose entries (``entries``) name a key twice; None when the entries in order are right (no two rows ever held one key) or
    the net cannot be worked out (the table's layout changed within the transaction, it
    is not REPLICA IDENTITY FULL): the entries stay as they are."""
    pk_idx = converter.projection.pk_idx
    layout = None
    before: dict[tuple[Any, ...], Row] = {}
    """Per key, the row it held before the transaction (of the keys changed)."""
    now: dict[tuple[Any, ...], list[Row]] = {}
    """Per key, the rows it holds now (more than one while a deferred key is violated)."""
    shared = False
    """Did two rows hold one key at some point?"""
    for change in changes:
        if type(change) is not Change:
            continue
        relation = change.relation
        if (relation.namespace, relation.name) != table and table not in relation.ancestors:
            continue
        if relation.replica_identity != "f":
            return None  # rows cannot be told apart without their old values
        if layout is None:
            layout = relation.column_names
        elif relation.column_names != layout:
            return None
        old, new = change.old, change.new
        if old is not None:
            key = tuple(old[i] for i in pk_idx)
            rows = now.get(key)
            if rows is not None and old in rows:
                rows.remove(old)
            elif key not in before:
                # A row from before, there until now: a row put here before shared it.
                before[key] = old
                shared = shared or rows is not None
        if new is not None:
            rows = now.setdefault(tuple(new[i] for i in pk_idx), [])
            shared = shared or bool(rows)
            rows.append(new)
    if not shared:
        return None  # one row per key at every step: the entries in order are right
    positions = sorted(entry["headers"]["op_position"] for entry in entries)
    deletes: list[Entry] = []
    others: list[Entry] = []
    for key in {**before, **now}:
        was = before.get(key)
        rows = now.get(key)
        new_row = rows[-1] if rows else None
        headers = {**headers_base, "op_position": 0}
        if was is not None and new_row is not None:
            found = converter.convert("update", new_row, was, headers)
        elif was is not None:
            found = converter.convert("delete", None, was, headers)
        elif new_row is not None:
            found = converter.convert("insert", new_row, None, headers)
        else:
            continue
        for entry in found:
            (deletes if entry["headers"]["operation"] == "delete" else others).append(entry)
    folded = deletes + others
    if len(folded) > len(positions):
        return None  # not expected: at most one entry per key that had one
    for entry, position in zip(folded, positions, strict=False):  # the offsets they had
        entry["headers"]["op_position"] = position
    return folded
