"""One implementation's shape logs, for tests/test_compiled.py (run as a script).

``python impl_runner.py URL SLOT PUBLICATION SPEC_JSON OUT_DIR`` starts an engine (in-memory
logs, no compaction: its timing would make two runs' bytes differ), creates the shapes of
``SPEC_JSON`` (``ShapeDefinition.create`` keyword arguments), waits for their snapshots and
prints ``ready <implementation> <file of pysync.postgres.pgoutput>``. It then reads one line
from stdin, an LSN, waits until the engine has processed everything up to it and writes
``OUT_DIR/<n>.log``: the bytes of shape n's log after its snapshot, entry by entry as a
client reads them. Then it prints ``done`` and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pysync
from engine_runner import poll, ready
from pysync.engine import Engine
from pysync.log.offset import LogOffset
from pysync.postgres import pgoutput
from pysync.shapes.definition import ShapeDefinition


async def _run(
    url: str, slot: str, publication: str, spec: list[dict[str, Any]], out: Path
) -> None:
    engine = Engine(url, slot=slot, publication=publication, compaction=False, flush_interval=0.02)
    await engine.start()
    shapes = [await engine.shape(ShapeDefinition.create(**s)) for s in spec]
    starts: list[LogOffset] = []
    for live in shapes:
        await ready(engine, live, 60)
        starts.append(live.log.last_offset)
    print("ready", pysync.implementation(), pgoutput.__file__, flush=True)
    target = int(await asyncio.to_thread(sys.stdin.readline))
    await poll(lambda: engine.last_seen_lsn >= target, 120, "replication to catch up")
    if engine.crashed is not None:
        raise engine.crashed
    for n, (live, offset) in enumerate(zip(shapes, starts, strict=True)):
        with (out / f"{n}.log").open("wb") as f:
            while True:
                payloads, offset, reached = live.log.read(offset)
                for payload in payloads:
                    f.write(payload + b"\n")
                if reached:
                    break
                assert payloads, f"shape {n}: its log read made no progress at {offset}"
    await engine.stop()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(
        _run(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), Path(sys.argv[5]))
    )
