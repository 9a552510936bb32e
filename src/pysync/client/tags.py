"""Tags of the rows of a shape with ``IN (SELECT ...)``, as Electric's Elixir client
(``TagTracker``) keeps them: which rows a ``move-out`` drops and a ``move-in`` revives.

A change's ``tags`` (one per disjunct of the shape's clause, ``hash/hash/...``) become a
set of ``(position, hash)`` per row; ``removed_tags`` leave it. A move-out pattern
``(position, hash)`` turns that position of the matching rows inactive and drops each row
none of whose disjuncts is still all active (rows without ``active_conditions``: when no
tag is left); a move-in pattern turns it active again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pysync.client.messages import ChangeMessage, MovePattern

Entry = tuple[int, str]


def _entries(tags: Iterable[str]) -> set[Entry]:
    return {(pos, value) for tag in tags for pos, value in enumerate(tag.split("/")) if value}


class TagTracker:
    def __init__(self) -> None:
        self.entries: dict[str, set[Entry]] = {}
        self.active: dict[str, list[bool]] = {}
        self.index: dict[Entry, set[str]] = {}
        self.disjuncts: list[list[int]] | None = None

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def change(self, message: ChangeMessage) -> None:
        key = message.key
        headers = message.headers
        if headers.operation == "delete":
            self.forget(key)
            return
        tags = headers.tags or ()
        if tags and self.disjuncts is None:
            self.disjuncts = [[i for i, v in enumerate(t.split("/")) if v] for t in tags]
        if not tags and not headers.removed_tags and key not in self.entries:
            return
        current = self.entries.get(key, set())
        updated = (current - _entries(headers.removed_tags or ())) | _entries(tags)
        for entry in current - updated:
            self._unindex(entry, key)
        for entry in updated - current:
            self.index.setdefault(entry, set()).add(key)
        self.entries[key] = updated
        if headers.active_conditions:
            self.active[key] = list(headers.active_conditions)

    def forget(self, key: str) -> None:
        for entry in self.entries.pop(key, set()):
            self._unindex(entry, key)
        self.active.pop(key, None)

    def move_out(self, patterns: Sequence[MovePattern]) -> list[str]:
        """The keys of the rows the patterns drop (forgotten here already)."""
        matched: dict[str, set[Entry]] = {}
        for pattern in patterns:
            entry = (pattern.pos, pattern.value)
            for key in self.index.get(entry, ()):
                matched.setdefault(key, set()).add(entry)
        dropped = []
        for key, removed in matched.items():
            active = self.active.get(key)
            if active is not None and self.disjuncts is not None:
                for pos, _ in removed:
                    if pos < len(active):
                        active[pos] = False
                if any(all(p < len(active) and active[p] for p in d) for d in self.disjuncts):
                    continue
            else:
                remaining = self.entries.get(key, set()) - removed
                for entry in removed:
                    self._unindex(entry, key)
                self.entries[key] = remaining
                if remaining:
                    continue
            self.forget(key)
            dropped.append(key)
        return dropped

    def move_in(self, patterns: Sequence[MovePattern]) -> None:
        for pattern in patterns:
            for key in self.index.get((pattern.pos, pattern.value), ()):
                active = self.active.get(key)
                if active is not None and pattern.pos < len(active):
                    active[pattern.pos] = True

    def _unindex(self, entry: Entry, key: str) -> None:
        group = self.index.get(entry)
        if group is not None:
            group.discard(key)
            if not group:
                del self.index[entry]
