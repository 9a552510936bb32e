"""Test helpers for shapes with ``IN (SELECT ...)``: a client that applies tags and
move-in / move-out events as TanStack DB's Electric collection and Electric's Elixir
``TagTracker`` do, strictly (an insert of a row it holds, or an update or delete of one
it does not, is an error), and the expected rows straight from Postgres."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Entry = dict[str, Any]


class TaggedClient:
    """Rows of one shape, by key, kept as a client applies the log."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.rows: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, set[str]] = {}
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
        tags = headers.get("tags")
        if tags is not None:
            mine = self.tags.setdefault(key, set())
            for tag in tags:
                mine.add(tag)
                self._index(key, tag, add=True)
            if self.disjuncts is None and tags:
                self.disjuncts = [[i for i, v in enumerate(t.split("/")) if v] for t in tags]
            for tag in headers.get("removed_tags") or ():
                if tag in mine:
                    mine.discard(tag)
                    self._index(key, tag, add=False)
        active = headers.get("active_conditions")
        if active:
            self.active[key] = list(active)

    def _index(self, key: str, tag: str, *, add: bool) -> None:
        for pos, value in enumerate(tag.split("/")):
            if not value:
                continue
            group = self.index.setdefault((pos, value), set())
            if add:
                group.add(key)
            else:
                group.discard(key)

    def _forget(self, key: str) -> None:
        for tag in self.tags.pop(key, set()):
            self._index(key, tag, add=False)
        self.active.pop(key, None)

    def _move_out(self, patterns: Sequence[dict[str, Any]]) -> None:
        for pattern in patterns:
            pos, value = pattern["pos"], pattern["value"]
            for key in list(self.index.get((pos, value), ())):
                active = self.active.get(key)
                if active is not None and self.disjuncts is not None:
                    active[pos] = False
                    if not any(all(active[p] for p in d) for d in self.disjuncts):
                        self.rows.pop(key, None)
                        self._forget(key)
                else:
                    mine = self.tags.get(key, set())
                    for tag in [t for t in mine if t.split("/")[pos] == value]:
                        mine.discard(tag)
                        self._index(key, tag, add=False)
                    if not mine:
                        self.rows.pop(key, None)
                        self._forget(key)
