"""Snapshot/stream consistency under a concurrent write load, and crash recovery:
every shape's log, replayed as a client does, equals the table."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine_runner import (
    Conn,
    check_offsets,
    materialise,
    poll,
    quiesce,
    read_all,
    ready,
    table_state,
)
from pysync.engine import Engine
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.definition import ShapeDefinition
from workload import COLUMNS, WHERES, Writers, create_table


def check_shape(conn: Conn, live: ShapeConsumer) -> None:
    assert not live.gone, f"shape {live.handle} is gone"
    check_offsets(live.log)
    definition = live.definition
    columns = list(definition.columns or COLUMNS)
    expected = table_state(conn, "public", "t", columns, ["id"], definition.where)
    entries = read_all(live.log)
    try:
        got = materialise(entries)
    except AssertionError as exc:
        key = str(exc).split("'key': '")[1].split("'")[0]
        history = [e for e in entries if e.get("key") == key]
        pytest.fail(
            f"shape {definition.where!r}: {exc}\nhistory: {history}\nsnapshot: {live.snapshot}"
        )
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        wrong = [(k, got[k], expected[k]) for k in expected if k in got and got[k] != expected[k]][
            :5
        ]
        pytest.fail(
            f"shape {definition.where!r} {definition.replica} diverged: missing {missing}, "
            f"extra {extra}, wrong {wrong}"
        )


@pytest.mark.slow
async def test_shapes_created_under_load_match_the_table(database_url: str, conn: Conn) -> None:
    create_table(conn, 2000)
    engine = Engine(database_url, flush_interval=0.02, snapshot_connections=3)
    await engine.start()
    writers = Writers(database_url, 2, 2000)
    try:
        writers.start()
        shapes: list[ShapeConsumer] = []
        definitions = [ShapeDefinition.create("t", where=w) for w in WHERES] + [
            ShapeDefinition.create("t", where="v < 50", replica="full"),
            ShapeDefinition.create("t", where="grp = 2", columns=["id", "title"]),
            ShapeDefinition.create("t", columns=["id", "v"], replica="full"),
        ]
        for definition in definitions:
            # Spread creation over the load (the load itself needs no synchronisation).
            await asyncio.sleep(0.15)
            shapes.append(await engine.shape(definition))
        for live in shapes:
            await ready(engine, live)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(writers.join)
        assert writers.transactions > 100
        await quiesce(engine, conn)
        for live in shapes:
            check_shape(conn, live)
    finally:
        writers.stop.set()
        await asyncio.to_thread(writers.join)
        await engine.stop()


def start_runner(
    url: str, storage: Path, slot: str, spec: list[dict[str, Any]], stderr: Path
) -> subprocess.Popen[str]:
    script = str(Path(__file__).with_name("engine_runner.py"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with stderr.open("a") as err:
        return subprocess.Popen(
            [sys.executable, script, url, str(storage), slot, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )


async def wait_ready(proc: subprocess.Popen[str], stderr: Path, timeout: float = 60) -> list[str]:
    """Handles the runner printed before ``ready``."""

    def read() -> list[str]:
        handles: list[str] = []
        assert proc.stdout is not None
        while (line := proc.stdout.readline().strip()) != "ready":
            assert line, "engine runner exited:\n" + stderr.read_text()
            handles.append(line)
        return handles

    try:
        return await asyncio.wait_for(asyncio.to_thread(read), timeout)
    except TimeoutError:
        proc.send_signal(signal.SIGUSR1)  # the runner dumps its stacks to stderr
        await asyncio.sleep(1)
        proc.kill()  # unblocks the reading thread
        raise AssertionError("engine runner not ready in time:\n" + stderr.read_text()) from None


@pytest.mark.slow
async def test_crash_under_load_recovers_every_shape(
    database_url: str, conn: Conn, tmp_path: Path
) -> None:
    create_table(conn, 1000)
    storage = tmp_path / "storage"
    spec = [{"table": "t", "where": w} for w in ("v < 50", "grp = 2", None)]
    writers = Writers(database_url, 2, 1000, seed=7)
    writers.start()
    try:
        handles: list[str] = []
        for round_ in range(2):
            proc = start_runner(database_url, storage, "crash", spec, tmp_path / "stderr")
            try:
                got = await wait_ready(proc, tmp_path / "stderr")
                if round_:
                    assert got == handles, "recovered shapes have new handles"
                handles = got
                # Let the load run into the engine, then kill it mid-stream.
                seen = writers.transactions
                await poll(lambda s=seen: writers.transactions > s + 100, 30, "writes")  # type: ignore[misc]
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()
    finally:
        await asyncio.to_thread(writers.join)
    # Recover in this process and let it catch up with everything written.
    engine = Engine(database_url, storage_dir=storage, slot="crash", flush_interval=0.02)
    await engine.start()
    try:
        recovered = [engine.get(h) for h in handles]
        assert all(live is not None for live in recovered), "a shape was not recovered"
        await quiesce(engine, conn)
        for live in recovered:
            assert live is not None and live.recorded
            check_shape(conn, live)
        # The same definitions map to the recovered shapes.
        for handle, item in zip(handles, spec, strict=True):
            live = await engine.shape(ShapeDefinition.create("t", where=item["where"]))
            assert live.handle == handle
    finally:
        await engine.stop()
