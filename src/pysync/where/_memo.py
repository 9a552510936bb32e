"""A thread-safe LRU cache bounded by the size of what it holds, not only by count.

The WHERE caches keep parse trees, which take about a hundred times the memory of their
clause text: a cache bounded by count alone would keep a few huge clauses alive for good.
Here the cost of an entry is the length of its text; entries above ``max_entry_cost`` are
not kept at all and the total is bounded, so the memory of a huge clause returns as soon
as its request is done.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SizedCache(Generic[K, V]):
    def __init__(self, max_entries: int, max_total_cost: int, max_entry_cost: int) -> None:
        self.max_entries = max_entries
        self.max_total_cost = max_total_cost
        self.max_entry_cost = max_entry_cost
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: K, value: V, cost: int) -> None:
        if cost > self.max_entry_cost:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._total -= old[1]
            self._entries[key] = (value, cost)
            self._total += cost
            while len(self._entries) > self.max_entries or self._total > self.max_total_cost:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._total -= evicted

    @property
    def total_cost(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._entries)
