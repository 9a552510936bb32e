"""A consumer process for the crash test: records each transaction durably, then
acknowledges it. Usage: python replication_consumer.py URL OUTFILE"""

from __future__ import annotations

import asyncio
import os
import sys

from pysync.postgres.replication import ReplicationStream
from pysync.postgres.transactions import Change, Transaction


async def main(url: str, path: str) -> None:
    start = 0
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                start = max(start, int(line.split()[0]))
    stream = ReplicationStream(url, start_lsn=start)
    with open(path, "a") as out:
        async for txn in stream.transactions():
            if not isinstance(txn, Transaction):
                continue
            ids = [
                str(c.new[0]) for c in txn.changes if isinstance(c, Change) and c.new is not None
            ]
            out.write(f"{txn.end_lsn} {' '.join(ids)}\n")
            out.flush()
            os.fsync(out.fileno())
            stream.acknowledge(txn.end_lsn)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
