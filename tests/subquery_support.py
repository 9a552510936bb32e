"""Test helpers for shapes with ``IN (SELECT ...)``: a client that applies tags and
move-in / move-out events as TanStack DB's Electric collection and Electric's Elixir
``TagTracker`` do, strictly (an insert of a row it holds, or an update or delete of one
it does not, is an error), and the expected rows straight from Postgres."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Entry = dict[str, Any]


class TaggedClient:
    """Rows of one shape, by key, kept as a client applies the log: tags as Electric's
    Elixir ``TagTracker`` tracks them, a set of ``(position, hash)`` per row."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.rows: dict[str, dict[str, Any]] = {}
        self.entries: dict[str, set[tuple[int, str]]] = {}
        self.active: dict[str, list[bool]] = {}
        self.index: dict[tuple[int, str], set[str]] = {}
        self.disjuncts: list[list[int]] | None = None
        self.events = 0

    def apply_all(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.apply(entry)

    def apply(self, entry: Entry) -> None:
        headers = entry.get("headers", {})
        if "key" in entry:
            self._change(entry)
        elif headers.get("event") == "move-out":
            self.events += 1
            self._move_out(headers["patterns"])
        elif headers.get("event") == "move-in":
            self.events += 1
            for pattern in headers["patterns"]:
                for key in self.index.get((pattern["pos"], pattern["value"]), ()):
                    active = self.active.get(key)
                    if active is not None:
                        active[pattern["pos"]] = True
        elif headers.get("control") == "must-refetch":
            self.__init__(self.strict)  # type: ignore[misc]

    def _change(self, entry: Entry) -> None:
        key = entry["key"]
        headers = entry["headers"]
        op = headers["operation"]
        if op == "delete":
            if self.strict:
                assert key in self.rows, f"delete of a row the client does not have: {entry}"
            self.rows.pop(key, None)
            self._forget(key)
            return
        if op == "insert":
            if self.strict:
                assert key not in self.rows, f"insert of a row the client has: {entry}"
            self.rows[key] = dict(entry["value"])
        else:
            if self.strict:
                assert key in self.rows, f"update of a row the client does not have: {entry}"
            self.rows.setdefault(key, {}).update(entry["value"])
        tags = headers.get("tags") or []
        if self.disjuncts is None and tags:
            self.disjuncts = [[i for i, v in enumerate(t.split("/")) if v] for t in tags]
        current = self.entries.get(key, set())
        updated = (current - _entries(headers.get("removed_tags") or [])) | _entries(tags)
        for entry_ in current - updated:
            self.index.get(entry_, set()).discard(key)
        for entry_ in updated - current:
            self.index.setdefault(entry_, set()).add(key)
        self.entries[key] = updated
        active = headers.get("active_conditions")
        if active:
            self.active[key] = list(active)

    def _forget(self, key: str) -> None:
        for entry in self.entries.pop(key, set()):
            self.index.get(entry, set()).discard(key)
        self.active.pop(key, None)

    def _move_out(self, patterns: Sequence[dict[str, Any]]) -> None:
        matched: dict[str, set[tuple[int, str]]] = {}
        for pattern in patterns:
            found = (pattern["pos"], pattern["value"])
            for key in self.index.get(found, ()):
                matched.setdefault(key, set()).add(found)
        for key, removed in matched.items():
            active = self.active.get(key)
            if active is not None and self.disjuncts is not None:
                for pos, _ in removed:
                    active[pos] = False
                if not any(all(active[p] for p in d) for d in self.disjuncts):
                    self.rows.pop(key, None)
                    self._forget(key)
            else:
                remaining = self.entries.get(key, set()) - removed
                for entry in removed:
                    self.index.get(entry, set()).discard(key)
                self.entries[key] = remaining
                if not remaining:
                    self.rows.pop(key, None)
                    self._forget(key)


def _entries(tags: Iterable[str]) -> set[tuple[int, str]]:
    return {(pos, value) for tag in tags for pos, value in enumerate(tag.split("/")) if value}
