"""The ``electric-cursor`` of live responses (Electric's ``get_next_interval_timestamp``).

Clients echo the cursor as a query param, so it makes every live URL new: the cursor
only grows, hence a client can never be served its own cached previous response, while
clients polling within the same interval share one URL, which a CDN can collapse.
"""

from __future__ import annotations

import random
import re
import time
from datetime import UTC, datetime

EPOCH = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
_MAX_JITTER_S = 3600
# Elixir's Integer.parse with nothing left over: optional sign, ASCII digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_CURSOR_LENGTH = 32
"""Characters of a ``cursor`` param read as a number (real cursors are about 9 digits);
a longer one counts as 0, as a non-integer does, without converting it."""


def next_cursor(long_poll_timeout_ms: int, previous: str | None, now: float | None = None) -> str:
    """The cursor for a live response, given the request's ``cursor`` param.

    ``now`` is a Unix timestamp (default: the current time).
    """
    interval_s = long_poll_timeout_ms // 1000
    if interval_s == 0:
        return "0"
    elapsed_s = int((time.time() if now is None else now) - EPOCH)
    next_interval = -(-elapsed_s // interval_s) * interval_s
    prev = 0
    if previous is not None and len(previous) <= MAX_CURSOR_LENGTH and _INTEGER.fullmatch(previous):
        prev = int(previous)
    if next_interval > prev:
        return str(next_interval)
    # The client already holds this interval's cursor (it polled earlier in the same
    # interval, or its clock differs): jump ahead so its next URL is still unseen.
    return str(prev + random.randint(1, _MAX_JITTER_S))
