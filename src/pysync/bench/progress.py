"""What the bench shows while it runs: one line per step, a live bar per timed phase.

On a terminal the bar is redrawn a few times a second (rich); otherwise (a log, CI) the
same status line is printed every few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class Display:
    def __init__(self) -> None:
        self.console = Console(highlight=False)
        if not self.console.is_terminal:  # a log: no wrapping at 80 columns
            self.console = Console(highlight=False, width=120)
        self._progress: Progress | None = None
        self._task: int | None = None
        self._status: Callable[[], str] = str
        self._last_print = 0.0
        self._name = ""

    def note(self, text: str) -> None:
        self.console.print(text)

    @contextmanager
    def phase(self, name: str, seconds: float, status: Callable[[], str]) -> Iterator[None]:
        self._status, self._name = status, name
        self._last_print = time.monotonic()
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn(f"[bold]{name:<12}"),
                BarColumn(bar_width=24),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task("", total=seconds)
            self._progress.start()
        else:
            self.console.print(f"{name}: {seconds:g} s")
        try:
            yield
        finally:
            if self._progress is not None:
                self._progress.update(self._task, description=status())  # type: ignore[arg-type]
                self._progress.stop()
            elif text := status():  # the warm-up has nothing to say
                self.console.print(f"{name}: {text}")
            self._progress, self._task = None, None

    def tick(self, elapsed: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=elapsed, description=self._status())  # type: ignore[arg-type]
        elif time.monotonic() - self._last_print >= 5:
            self._last_print = time.monotonic()
            text = self._status()
            self.console.print(f"{self._name} {elapsed:.0f} s" + (f": {text}" if text else ""))


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    """A measure for a status line or a note; "n/a" when there is none yet."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"
