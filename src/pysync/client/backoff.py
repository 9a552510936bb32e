"""How long the client waits before asking again: Electric's TypeScript client's back-off
(``BackoffDefaults`` of ``@electric-sql/client`` 1.5: 1 s, doubling, at most 32 s, full
jitter), with the server's ``retry-after`` as a lower bound that is itself capped."""

from __future__ import annotations

import math
import random
import time
from email.utils import parsedate_to_datetime

import httpx
import msgspec


class Backoff(msgspec.Struct, frozen=True):
    """Full-jitter exponential back-off: the n-th retry waits a random time below
    ``min(maximum, initial * multiplier**n)``, and at least the server's ``retry-after``,
    of which at most ``max_retry_after`` seconds are honoured (a server asking for a day,
    or ``inf``, gets that). ``max_retries`` None retries 429, 5xx and network errors
    forever (as the TypeScript client: clients go offline and come back)."""

    initial: float = 1.0
    maximum: float = 32.0
    multiplier: float = 2.0
    max_retries: int | None = None
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        floor = min(retry_after or 0.0, self.max_retry_after)
        return max(random.uniform(0, ceiling), floor)


class Loop:
    """Answers in a row that got a stream nowhere (409s, stalled offsets, empty live
    answers): the first is followed at once, each further one after a back-off delay,
    and past ``limit`` (None: no limit) they raise ``error``."""

    def __init__(self, backoff: Backoff, limit: int | None) -> None:
        self._backoff = backoff
        self._limit = limit
        self.count = 0

    def again(self, error: type[Exception], what: str) -> float:
        """The delay before the next request; raises ``error(what)`` past the limit."""
        self.count += 1
        if self._limit is not None and self.count > self._limit:
            raise error(f"{what}: {self.count} in a row, more than Limits.max_loops={self._limit}")
        return 0.0 if self.count == 1 else self._backoff.delay(self.count - 2, None)

    def reset(self) -> None:
        self.count = 0


def retry_after(response: httpx.Response | None) -> float | None:
    """``retry-after`` in seconds (delta-seconds, or an HTTP date); None when absent or
    unreadable. Not capped here: ``Backoff.delay`` caps it."""
    value = None if response is None else response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return None if math.isnan(seconds) else max(0.0, seconds)
