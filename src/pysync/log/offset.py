"""Log offsets: positions in a shape log, ``<tx>_<op>`` on the wire (as Electric's LogOffset)."""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

OP_INF = 1 << 64
"""``op`` of an ``<tx>_inf`` offset: above every real op, which are 64-bit on disk."""

_MAX_U64 = (1 << 64) - 1
MAX_OFFSET_LENGTH = 128
"""Characters of an offset: two 64-bit numbers (20 digits each) with room for leading zeros,
which Electric accepts; anything longer is refused before it is parsed."""
# Parts are read as Elixir's Integer.parse reads them in Electric: optional sign, ASCII
# digits, leading zeros allowed.
_OFFSET = re.compile(r"([+-]?[0-9]+)_([+-]?[0-9]+|inf)")


class OffsetError(ValueError):
    pass


class LogOffset(NamedTuple):
    """``(tx, op)``; a tuple so that ordering and hashing are the C-level tuple ones.

    ``tx`` is -1 (before all), 0 (the initial snapshot: ``op`` is the chunk number) or a
    transaction's commit LSN (``op`` is the change's position in the transaction).
    """

    tx: int
    op: int

    @classmethod
    def parse(cls, text: str) -> LogOffset:
        """The offset written as ``text``; ``now`` is not an offset (see ``parse_offset_param``)."""
        if text == "-1":
            return BEFORE_ALL
        if len(text) > MAX_OFFSET_LENGTH:
            raise OffsetError("has invalid format")
        match = _OFFSET.fullmatch(text)
        if match is None:
            raise OffsetError("has invalid format")
        tx_text, op_text = match.groups()
        tx = int(tx_text)
        op = OP_INF if op_text == "inf" else int(op_text)
        if (tx, op) == BEFORE_ALL:
            return BEFORE_ALL
        if not (0 <= tx <= _MAX_U64 and (op_text == "inf" or 0 <= op <= _MAX_U64)):
            raise OffsetError("has invalid format")
        return cls(tx, op)

    @classmethod
    def snapshot_chunk(cls, n: int) -> LogOffset:
        """The end of initial-snapshot chunk ``n``."""
        return cls(0, n)

    @property
    def is_snapshot(self) -> bool:
        return self.tx == 0

    def __str__(self) -> str:
        if self.tx == -1:
            return "-1"
        if self.op == OP_INF:
            return f"{self.tx}_inf"
        return f"{self.tx}_{self.op}"


BEFORE_ALL = LogOffset(-1, 0)
LAST_BEFORE_REAL = LogOffset(0, OP_INF)
"""After the complete initial snapshot, before any replicated transaction: ``0_inf``."""


def parse_offset_param(text: str) -> LogOffset | Literal["now"]:
    """The ``offset`` request param, which may also be ``now``."""
    return "now" if text == "now" else LogOffset.parse(text)
