"""SharedRuns: a run answers the callers that asked before it started, never earlier ones."""

from __future__ import annotations

import asyncio

import pytest

from pysync.shared_runs import Abandoned, SharedRuns


class Work:
    """Runs that block until released, numbered in the order they start."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None
        self.abandoned: list[Abandoned] = []

    async def __call__(self, key: str, abandoned: Abandoned) -> int:
        self.started += 1
        run = self.started
        self.abandoned.append(abandoned)
        await self.release.wait()
        self.release.clear()
        if self.fail is not None:
            raise self.fail
        return run


async def turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_during_a_run_share_the_next_one() -> None:
    work = Work()
    runs: SharedRuns[str, int] = SharedRuns(work)
    first = asyncio.ensure_future(runs("t"))
    await turn()
    later = [asyncio.ensure_future(runs("t")) for _ in range(100)]
    await turn()
    assert work.started == 1  # the others wait for a run that starts after they asked
    work.release.set()
    assert await first == 1
    await turn()
    assert work.started == 2
    work.release.set()
    assert set(await asyncio.gather(*later)) == {2}


async def test_keys_run_apart() -> None:
    work = Work()
    runs: SharedRuns[str, int] = SharedRuns(work)
    a = asyncio.ensure_future(runs("a"))
    b = asyncio.ensure_future(runs("b"))
    await turn()
    assert work.started == 2
    work.release.set()
    await turn()
    work.release.set()
    assert sorted(await asyncio.gather(a, b)) == [1, 2]


async def test_a_failure_reaches_its_callers_only() -> None:
    work = Work()
    runs: SharedRuns[str, int] = SharedRuns(work)
    work.fail = ValueError("no such table")
    first = asyncio.ensure_future(runs("t"))
    await turn()
    second = asyncio.ensure_future(runs("t"))
    await turn()
    work.release.set()
    with pytest.raises(ValueError, match="no such table"):
        await first
    work.fail = None
    await turn()
    work.release.set()
    assert await second == 2


async def test_a_cancelled_caller_leaves_the_run_to_the_others() -> None:
    work = Work()
    runs: SharedRuns[str, int] = SharedRuns(work)
    first = asyncio.ensure_future(runs("t"))
    await turn()
    gone = asyncio.ensure_future(runs("t"))
    stays = asyncio.ensure_future(runs("t"))
    await turn()
    gone.cancel()
    work.release.set()
    assert await first == 1
    await turn()
    work.release.set()
    assert await stays == 2
    assert gone.cancelled()


async def test_abandoned_when_every_caller_gave_up() -> None:
    work = Work()
    runs: SharedRuns[str, int] = SharedRuns(work)
    first = asyncio.ensure_future(runs("t"))
    await turn()
    waiting = {"a": True, "b": True}
    a = asyncio.ensure_future(runs("t", lambda: not waiting["a"]))
    b = asyncio.ensure_future(runs("t", lambda: not waiting["b"]))
    work.release.set()
    assert await first == 1
    await turn()
    abandoned = work.abandoned[1]
    assert not abandoned()
    waiting["a"] = False
    assert not abandoned()  # b still waits
    waiting["b"] = False
    assert abandoned()
    work.release.set()
    assert list(await asyncio.gather(a, b)) == [2, 2]


async def test_close_cancels_running_and_queued_runs() -> None:
    work = Work()
    runs: SharedRuns[str, int] = SharedRuns(work)
    running = asyncio.ensure_future(runs("t"))
    await turn()
    queued = asyncio.ensure_future(runs("t"))
    await turn()
    await runs.close()
    for caller in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await caller
    assert work.started == 1
    with pytest.raises(RuntimeError, match="closed"):
        await runs("t")
