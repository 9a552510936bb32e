"""What the subscribers should have received: the run's changes, decoded by Postgres.

A ``test_decoding`` slot is created right before the load (nothing writes between the
subscribers' first up-to-date and its creation), and read once after the run with
``pg_logical_slot_peek_changes`` (not while it runs: an unread slot costs nothing but
kept WAL). For each change and each subscribed shape it applies the protocol's rules
(insert / delete when the row matches; an update is an update when old and new rows
match and a column changed, a delete when only the old one matches, an insert when only
the new one does) to count the change messages the shape must deliver. The same pass
gives, for every commit, its LSN and the row changes up to it: how many row changes a
consumer has ingested when its slot has confirmed a given LSN.
"""

from __future__ import annotations

import bisect
import re
from array import array
from dataclasses import dataclass, field

import psycopg

from pysync.bench.shapes import Matcher

_CHANGE = re.compile(r"table ([^:]+): (INSERT|UPDATE|DELETE|TRUNCATE):(.*)", re.DOTALL)
_COLUMN = re.compile(r"(\S+?)\[[^\]]+\]:('(?:[^']|'')*'|\S+)")


def _row(text: str) -> dict[str, str | None]:
    row: dict[str, str | None] = {}
    for name, value in _COLUMN.findall(text):
        if value == "null":
            row[name] = None
        elif value.startswith("'"):
            row[name] = value[1:-1].replace("''", "'")
        else:
            row[name] = value
    return row


@dataclass
class Expected:
    per_shape: dict[int, int] = field(default_factory=dict)
    """Change messages each shape must deliver."""
    commit_lsns: array[int] = field(default_factory=lambda: array("q"))
    changes_upto: array[int] = field(default_factory=lambda: array("q"))
    """Row changes committed up to and including ``commit_lsns[i]``."""
    row_changes: int = 0
    transactions: int = 0
    truncated: set[str] = field(default_factory=set)
    """Tables truncated meanwhile (their shapes were invalidated: counts do not apply)."""

    def changes_at(self, lsn: int) -> int:
        """Row changes committed at or before ``lsn``."""
        i = bisect.bisect_right(self.commit_lsns, lsn)
        return self.changes_upto[i - 1] if i else 0


def count(url: str, slot: str, matcher: Matcher, tables: set[str]) -> Expected:
    """Read ``slot`` (test_decoding) and count; ``tables`` are those whose row changes
    the consumer ingests (its publication)."""
    result = Expected()
    per_shape = result.per_shape
    wanted = matcher.tables()
    changes = 0
    with psycopg.connect(url) as conn, conn.cursor(name="pysync_bench_peek") as cur:
        cur.itersize = 20_000
        cur.execute(
            "SELECT (lsn - '0/0'::pg_lsn)::bigint, data FROM pg_logical_slot_peek_changes("
            "%s, NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')",
            (slot,),
        )
        for lsn, data in cur:
            if data.startswith("COMMIT"):
                result.commit_lsns.append(lsn)
                result.changes_upto.append(changes)
                result.transactions += 1
                continue
            match = _CHANGE.match(data)
            if match is None:
                continue
            name, operation, rest = match.groups()
            table = name.removeprefix("public.")
            if operation == "TRUNCATE":
                result.truncated.add(table)
                continue
            if table in tables:
                changes += 1
            if table not in wanted:
                continue
            if operation == "UPDATE":
                old_text, _, new_text = rest.partition(" new-tuple:")
                if not new_text:  # no old row logged (not REPLICA IDENTITY FULL)
                    old_text, new_text = rest, rest
                new = _row(new_text)
                # test_decoding leaves NULL columns out of the old tuple.
                logged = _row(old_text.replace(" old-key:", "", 1))
                old = {name: logged.get(name) for name in new}
                before = set(matcher.matching(table, old))
                after = set(matcher.matching(table, new))
                touched = before ^ after
                if old != new:
                    touched |= before & after
                for shape in touched:
                    per_shape[shape] = per_shape.get(shape, 0) + 1
            else:
                for shape in matcher.matching(table, _row(rest)):
                    per_shape[shape] = per_shape.get(shape, 0) + 1
    result.row_changes = changes
    return result
