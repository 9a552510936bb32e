"""One run of a catalog check answers every caller that asked before it started.

A burst of new shapes on one table (an app opening a view per user, thousands at a
deploy) asks the same questions of Postgres: what does the table look like, is it
published. Asked one by one through a few catalog sessions, the last callers wait out
their timeouts behind the others. Joining whatever run is in progress would answer
them with a result older than their question (a table dropped and created again since
it started); so a caller joins the next run, one that starts after it asked: at most one
run per key is in progress, and one more waits for everyone who came during it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

Abandoned = Callable[[], bool]
"""Says that a caller no longer waits for the answer."""


def never() -> bool:
    return False


class _Run(Generic[T]):
    __slots__ = ("future", "askers")

    def __init__(self) -> None:
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.askers: list[Abandoned] = []

    def abandoned(self) -> bool:
        """Every caller of this run has given up (the work may stop early)."""
        return all(gone() for gone in self.askers)


class SharedRuns(Generic[K, T]):
    """``work(key, abandoned)`` run for callers of the same key together (see above).

    ``abandoned`` tells the work that all of its callers gave up. The work runs in a
    task of its own: a caller cancelled meanwhile leaves it running for the others.
    """

    def __init__(self, work: Callable[[K, Abandoned], Awaitable[T]]) -> None:
        self._work = work
        self._current: dict[K, _Run[T]] = {}
        self._next: dict[K, _Run[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __call__(self, key: K, abandoned: Abandoned = never) -> T:
        run = self._next.get(key)
        if run is None:
            if self._closed:
                raise RuntimeError("closed: the engine is stopping")
            run = _Run()
            if key in self._current:
                self._next[key] = run
            else:
                self._start(key, run)
        run.askers.append(abandoned)
        return await asyncio.shield(run.future)

    def _start(self, key: K, run: _Run[T]) -> None:
        self._current[key] = run
        task = asyncio.create_task(self._run(key, run), name=f"pysync-shared-run-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, run: _Run[T]) -> None:
        try:
            run.future.set_result(await self._work(key, run.abandoned))
        except asyncio.CancelledError:
            run.future.cancel()
            raise
        except BaseException as exc:  # noqa: BLE001 - every caller receives it
            run.future.set_exception(exc)
            run.future.exception()  # retrieved: every caller may have gone
        finally:
            del self._current[key]
            queued = self._next.pop(key, None)
            if queued is not None and self._closed:
                queued.future.cancel()
            elif queued is not None:
                self._start(key, queued)

    async def close(self) -> None:
        """Cancel the runs in progress and queued (their callers receive CancelledError)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
