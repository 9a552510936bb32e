"""The cost of the largest WHERE inputs pysync accepts, and the memory a huge one leaves.

    PYTHONPATH=src python3 benchmarks/where_limits.py

Times are reported as a ratio to compiling ``id = 1`` uncached in the same run (the
machine is shared), with the absolute median. RSS is read from /proc before and after
compiling a ~2 MB IN list (rejected by the length limit) and the largest accepted IN list,
three times each. No Postgres needed: the table is described in memory.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import uuid
from collections.abc import Callable

from hot_path import hot_path
from pysync.postgres.catalog import Column, Table
from pysync.where import WhereError, compile_where
from pysync.where import _limits as limits


def _column(name: str, attnum: int, type_name: str, oid: int, category: str) -> Column:
    return Column(
        name=name,
        attnum=attnum,
        type_oid=oid,
        type_name=type_name,
        type_mod=-1,
        dims=0,
        not_null=False,
        type_kind="b",
        type_category=category,
    )


TABLE = Table(
    oid=1,
    schema="public",
    name="items",
    replica_identity="d",
    primary_key=("id",),
    columns=(
        _column("id", 1, "int4", 23, "N"),
        _column("uid", 2, "uuid", 2950, "U"),
        _column("title", 3, "text", 25, "S"),
        Column(
            name="nums",
            attnum=4,
            type_oid=1007,
            type_name="int4",
            type_mod=-1,
            dims=1,
            not_null=False,
            type_kind="b",
            type_category="N",
        ),
    ),
)


def _list_sizes(tokens: int, max_items: int) -> list[int]:
    """Sizes of IN lists that together take about ``tokens`` tokens (2 per item, 5 more
    per list with its OR)."""
    sizes = []
    while tokens > 10:
        items = min(max_items, (tokens - 5) // 2)
        sizes.append(items)
        tokens -= 2 * items + 5
    return sizes


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def median_s(fn: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compile_fresh(clause: str) -> Callable[[], object]:
    # a distinct clause each run (a trailing space) so that no cache answers
    counter = iter(range(10**9))
    return lambda: compile_where(clause + " " * next(counter), TABLE)


def compile_or_reject(clause: str) -> None:
    with contextlib.suppress(WhereError):
        compile_where(clause, TABLE)


def main() -> None:
    print(hot_path(), flush=True)
    n = limits.MAX_LIST_ITEMS
    cases = {
        f"IN list of {n:,} ints": "id IN (" + ", ".join(str(i) for i in range(n)) + ")",
        f"IN list of {n:,} uuids": "uid IN ("
        + ", ".join(f"'{uuid.uuid4()}'" for _ in range(n))
        + ")",
        f"OR chain of {limits.MAX_TERMS:,} terms": " OR ".join(
            f"id = {i}" for i in range(limits.MAX_TERMS)
        ),
        f"{limits.MAX_TOKENS:,} tokens": " OR ".join(
            "id IN (" + ", ".join("1" for _ in range(items)) + ")"
            for items in _list_sizes(limits.MAX_TOKENS, limits.MAX_LIST_ITEMS)
        ),
        f"nesting {limits.MAX_NESTING}": "lower(" * (limits.MAX_NESTING - 1)
        + "title"
        + ")" * (limits.MAX_NESTING - 1)
        + " = 'a'",
        f"depth {limits.MAX_DEPTH}": "id" + " + 1" * (limits.MAX_DEPTH - 2) + " = 1",
        f"{limits.MAX_TYPE_CALL_NESTING} type-named calls around {n:,} items": (
            "int4((ARRAY[" + ", ".join("1" for _ in range(n)) + "])[1]::text) = 1"
        ),
        f"{limits.MAX_TYPE_CALL_NESTING} type-named calls around 5,000 ORs": (
            "nums = ARRAY[int4((" + " OR ".join(f"id = {i}" for i in range(5000)) + ")::text)]"
        ),
        "string literal at the length": "title = '" + "x" * (limits.MAX_CLAUSE_LENGTH - 20) + "'",
        "numeric of 131,072 digits": "id < " + "9" * 131_072,
    }
    baseline = median_s(compile_fresh("id = 1"), runs=50)
    print(f"baseline: compile 'id = 1' uncached: {baseline * 1e3:.2f} ms")
    for name, clause in cases.items():
        t = median_s(compile_fresh(clause), runs=3)
        print(
            f"{name:<44} {len(clause):>8,} chars  {t * 1e3:8.1f} ms  ({t / baseline:,.0f}x baseline)"
        )

    huge = "id IN (" + ", ".join(str(i) for i in range(300_000)) + ")"
    largest = cases[f"IN list of {n:,} uuids"]
    gc.collect()
    before = rss_kib()
    for _ in range(3):
        compile_or_reject(huge)
    gc.collect()
    after_huge = rss_kib()
    for i in range(3):
        compile_or_reject(largest + " " * i)
    gc.collect()
    after_largest = rss_kib()
    print(
        f"RSS before: {before:,} KiB; after 3 x {len(huge) / 1e6:.1f} MB clause: {after_huge:,} KiB; "
        f"after 3 x largest accepted ({len(largest) / 1e3:.0f} KB): {after_largest:,} KiB"
    )


if __name__ == "__main__":
    main()
