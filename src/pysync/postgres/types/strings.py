"""Postgres values represented as ``str``: text/varchar/enum, bpchar and uuid.

bpchar is kept as stored (padded; comparisons and casts to text ignore trailing spaces);
uuid is canonical lower-case.
"""

from __future__ import annotations

import re


def parse_text(text: str) -> str:
    return text


def parse_bpchar(text: str) -> str:
    # kept padded: LIKE and output see the spaces, comparisons and casts to text strip them
    return text


_UUID_RE = re.compile(r"\{?([0-9a-fA-F]{4}-?){7}[0-9a-fA-F]{4}\}?\Z")


def parse_uuid(text: str) -> str:
    if _UUID_RE.match(text) is None or (text.startswith("{") != text.endswith("}")):
        raise ValueError(text)
    h = text.strip("{}").replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
