#!/usr/bin/env python
"""Transaction assembly benchmark: ``TransactionAssembler.feed`` per decoded message.

Run from the repository root::

    python benchmarks/assembler.py [--rounds 30] [--against OLD/transactions.py]

Feeds 500 transactions of 50 inserts, 50 updates and 50 deletes each (decoded pgoutput
messages, no Postgres) through a new assembler per round, and prints the CPU time per
message (best and median of the rounds). ``--against`` loads another copy of
``postgres/transactions.py`` (``git show <commit>:src/pysync/postgres/transactions.py``)
and alternates the two in this process, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import gc
import importlib.machinery
import importlib.util
import statistics
import time
from types import ModuleType

from hot_path import hot_path
from pysync.postgres import pgoutput as pg
from pysync.postgres import transactions


def messages() -> list[pg.PgOutputMessage]:
    columns = tuple(pg.RelationColumn(1, f"c{i}", 25, -1) for i in range(4))
    row = ("1", "a", "b", "c")
    out: list[pg.PgOutputMessage] = [pg.Relation(None, 16384, "public", "t", "f", columns)]
    for t in range(500):
        out.append(pg.Begin(0, 0, 1000 + t))
        for _ in range(50):
            out.append(pg.Insert(None, 16384, row))
            out.append(pg.Update(None, 16384, "O", row, ("1", "x", "b", "c")))
            out.append(pg.Delete(None, 16384, "O", row))
        out.append(pg.Commit(0, t, t + 1, 0))
    return out


def load(path: str) -> ModuleType:
    # A source loader whatever the file's name (--against <(git show ...) is /dev/fd/N).
    loader = importlib.machinery.SourceFileLoader("transactions_against", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def round_ns(module: ModuleType, stream: list[pg.PgOutputMessage]) -> float:
    feed = module.TransactionAssembler().feed
    started = time.process_time()
    for msg in stream:
        feed(msg)
    return (time.process_time() - started) / len(stream) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--against", help="another transactions.py, run alternately")
    args = parser.parse_args()
    print(hot_path(), flush=True)
    stream = messages()
    modules = {"this tree": transactions}
    if args.against:
        modules[args.against] = load(args.against)
    times: dict[str, list[float]] = {name: [] for name in modules}
    gc.disable()  # no collection inside a round: rounds compare
    for _ in range(args.rounds):
        for name, module in modules.items():
            times[name].append(round_ns(module, stream))
    for name, values in times.items():
        print(
            f"assembler {name}: best {min(values):.0f} ns/message, "
            f"median {statistics.median(values):.0f} ns/message"
        )


if __name__ == "__main__":
    main()
