#!/usr/bin/env python
"""Instructions per routed change, for valgrind: what ``routing.py`` measures in CPU time,
made countable on a loaded machine (a count does not change with the load).

Run from the repository root, twice with different ``--changes``; the difference of the
two counts over the difference of the changes is the instructions per change::

    PYTHONHASHSEED=0 PYTHONPATH=src valgrind --tool=cachegrind --cache-sim=no \\
        python3 benchmarks/routing_instructions.py --shapes 100 --changes 2000
    PYTHONHASHSEED=0 PYTHONPATH=src valgrind --tool=cachegrind --cache-sim=no \\
        python3 benchmarks/routing_instructions.py --shapes 100 --changes 12000

(``python3`` must be the interpreter itself, not a shim that starts it: valgrind follows
no child process.) As ``routing.py``: a private Postgres only to validate the shapes
``user_id = $1``, an ``Engine`` that is never started; a cold pass of 2,000 changes (the
first touch of each shape), then one warm pass of ``--changes``. The count includes
building the synthetic transactions, alike in every tree compared.
"""

from __future__ import annotations

import argparse

import psycopg

from hot_path import hot_path
from pysync.postgres.cluster import temporary_cluster
from routing import Bench, _user_of, relation_of, user_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=int, default=100)
    parser.add_argument("--changes", type=int, default=2_000, help="changes of the warm pass")
    parser.add_argument("--txn-size", type=int, default=1, help="changes per transaction")
    args = parser.parse_args()
    print(hot_path(), flush=True)
    with temporary_cluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE todos (id int PRIMARY KEY, user_id int, title text, done bool)"
            )
            relation = relation_of(conn)
            shapes = [user_shape(conn, u) for u in range(args.shapes)]
        bench = Bench(
            url, relation, shapes, 2_000, args.txn_size, _user_of(args.shapes), "instructions"
        )
        bench.cold_pass()
        bench.changes = args.changes
        bench.warm_pass()
    print(f"{args.changes} changes applied to {args.shapes} shapes")


if __name__ == "__main__":
    main()
