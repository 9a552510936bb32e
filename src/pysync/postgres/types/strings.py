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


# ---------------------------------------------------------------- case mapping
#
# Postgres' lower()/upper() (and ILIKE, which lowers both sides) map each character to one
# character: with a libc C.UTF-8 ctype through towlower/towupper, with the builtin
# provider's C.UTF-8 through Unicode's simple case mapping. Python's str.lower() applies
# the full mapping ('İ' -> 'i̇', 'ß'.upper() -> 'SS') and a final-sigma rule ('AΣ' ->
# 'aς'), so characters are mapped one at a time, and where Python's mapping of a lone
# character is not one character, from these tables (Postgres' answers, checked for every
# code point by tests/test_where_locale.py).

_LOWER_SIMPLE = {
    0x0130: 0x0069,
}
_UPPER_SIMPLE = {
    0x00DF: 0x00DF,
    0x0149: 0x0149,
    0x01F0: 0x01F0,
    0x0390: 0x0390,
    0x03B0: 0x03B0,
    0x0587: 0x0587,
    0x1E96: 0x1E96,
    0x1E97: 0x1E97,
    0x1E98: 0x1E98,
    0x1E99: 0x1E99,
    0x1E9A: 0x1E9A,
    0x1F50: 0x1F50,
    0x1F52: 0x1F52,
    0x1F54: 0x1F54,
    0x1F56: 0x1F56,
    0x1F80: 0x1F88,
    0x1F81: 0x1F89,
    0x1F82: 0x1F8A,
    0x1F83: 0x1F8B,
    0x1F84: 0x1F8C,
    0x1F85: 0x1F8D,
    0x1F86: 0x1F8E,
    0x1F87: 0x1F8F,
    0x1F88: 0x1F88,
    0x1F89: 0x1F89,
    0x1F8A: 0x1F8A,
    0x1F8B: 0x1F8B,
    0x1F8C: 0x1F8C,
    0x1F8D: 0x1F8D,
    0x1F8E: 0x1F8E,
    0x1F8F: 0x1F8F,
    0x1F90: 0x1F98,
    0x1F91: 0x1F99,
    0x1F92: 0x1F9A,
    0x1F93: 0x1F9B,
    0x1F94: 0x1F9C,
    0x1F95: 0x1F9D,
    0x1F96: 0x1F9E,
    0x1F97: 0x1F9F,
    0x1F98: 0x1F98,
    0x1F99: 0x1F99,
    0x1F9A: 0x1F9A,
    0x1F9B: 0x1F9B,
    0x1F9C: 0x1F9C,
    0x1F9D: 0x1F9D,
    0x1F9E: 0x1F9E,
    0x1F9F: 0x1F9F,
    0x1FA0: 0x1FA8,
    0x1FA1: 0x1FA9,
    0x1FA2: 0x1FAA,
    0x1FA3: 0x1FAB,
    0x1FA4: 0x1FAC,
    0x1FA5: 0x1FAD,
    0x1FA6: 0x1FAE,
    0x1FA7: 0x1FAF,
    0x1FA8: 0x1FA8,
    0x1FA9: 0x1FA9,
    0x1FAA: 0x1FAA,
    0x1FAB: 0x1FAB,
    0x1FAC: 0x1FAC,
    0x1FAD: 0x1FAD,
    0x1FAE: 0x1FAE,
    0x1FAF: 0x1FAF,
    0x1FB2: 0x1FB2,
    0x1FB3: 0x1FBC,
    0x1FB4: 0x1FB4,
    0x1FB6: 0x1FB6,
    0x1FB7: 0x1FB7,
    0x1FBC: 0x1FBC,
    0x1FC2: 0x1FC2,
    0x1FC3: 0x1FCC,
    0x1FC4: 0x1FC4,
    0x1FC6: 0x1FC6,
    0x1FC7: 0x1FC7,
    0x1FCC: 0x1FCC,
    0x1FD2: 0x1FD2,
    0x1FD3: 0x1FD3,
    0x1FD6: 0x1FD6,
    0x1FD7: 0x1FD7,
    0x1FE2: 0x1FE2,
    0x1FE3: 0x1FE3,
    0x1FE4: 0x1FE4,
    0x1FE6: 0x1FE6,
    0x1FE7: 0x1FE7,
    0x1FF2: 0x1FF2,
    0x1FF3: 0x1FFC,
    0x1FF4: 0x1FF4,
    0x1FF6: 0x1FF6,
    0x1FF7: 0x1FF7,
    0x1FFC: 0x1FFC,
    0xFB00: 0xFB00,
    0xFB01: 0xFB01,
    0xFB02: 0xFB02,
    0xFB03: 0xFB03,
    0xFB04: 0xFB04,
    0xFB05: 0xFB05,
    0xFB06: 0xFB06,
    0xFB13: 0xFB13,
    0xFB14: 0xFB14,
    0xFB15: 0xFB15,
    0xFB16: 0xFB16,
    0xFB17: 0xFB17,
}
_LOWER = {chr(k): chr(v) for k, v in _LOWER_SIMPLE.items()}
_UPPER = {chr(k): chr(v) for k, v in _UPPER_SIMPLE.items()}


def unicode_lower(s: str) -> str:
    """lower() under a C.UTF-8 ctype: per character, simple case mapping."""
    if s.isascii():
        return s.lower()
    get = _LOWER.get
    return "".join([get(c) or c.lower() for c in s])


def unicode_upper(s: str) -> str:
    """upper() under a C.UTF-8 ctype: per character, simple case mapping."""
    if s.isascii():
        return s.upper()
    get = _UPPER.get
    return "".join([get(c) or c.upper() for c in s])


# The builtin provider's C.UTF-8 (Postgres 17+) maps by Postgres' own Unicode tables (16.0
# in Postgres 18): these characters are newer than the Unicode of Python 3.11 (14.0).
_BUILTIN_LOWER = _LOWER | {chr(k): chr(v) for k, v in {
    0x1C89: 0x1C8A, 0xA7CB: 0x0264, 0xA7CC: 0xA7CD, 0xA7DA: 0xA7DB, 0xA7DC: 0x019B,
    0x10D50: 0x10D70, 0x10D51: 0x10D71, 0x10D52: 0x10D72, 0x10D53: 0x10D73,
    0x10D54: 0x10D74, 0x10D55: 0x10D75, 0x10D56: 0x10D76, 0x10D57: 0x10D77,
    0x10D58: 0x10D78, 0x10D59: 0x10D79, 0x10D5A: 0x10D7A, 0x10D5B: 0x10D7B,
    0x10D5C: 0x10D7C, 0x10D5D: 0x10D7D, 0x10D5E: 0x10D7E, 0x10D5F: 0x10D7F,
    0x10D60: 0x10D80, 0x10D61: 0x10D81, 0x10D62: 0x10D82, 0x10D63: 0x10D83,
    0x10D64: 0x10D84, 0x10D65: 0x10D85,
}.items()}  # fmt: skip
_BUILTIN_UPPER = _UPPER | {chr(k): chr(v) for k, v in {
    0x019B: 0xA7DC, 0x0264: 0xA7CB, 0x1C8A: 0x1C89, 0xA7CD: 0xA7CC, 0xA7DB: 0xA7DA,
    0x10D70: 0x10D50, 0x10D71: 0x10D51, 0x10D72: 0x10D52, 0x10D73: 0x10D53,
    0x10D74: 0x10D54, 0x10D75: 0x10D55, 0x10D76: 0x10D56, 0x10D77: 0x10D57,
    0x10D78: 0x10D58, 0x10D79: 0x10D59, 0x10D7A: 0x10D5A, 0x10D7B: 0x10D5B,
    0x10D7C: 0x10D5C, 0x10D7D: 0x10D5D, 0x10D7E: 0x10D5E, 0x10D7F: 0x10D5F,
    0x10D80: 0x10D60, 0x10D81: 0x10D61, 0x10D82: 0x10D62, 0x10D83: 0x10D63,
    0x10D84: 0x10D64, 0x10D85: 0x10D65,
}.items()}  # fmt: skip


def builtin_lower(s: str) -> str:
    """lower() under the builtin provider's C.UTF-8."""
    if s.isascii():
        return s.lower()
    get = _BUILTIN_LOWER.get
    return "".join([get(c) or c.lower() for c in s])


def builtin_upper(s: str) -> str:
    """upper() under the builtin provider's C.UTF-8."""
    if s.isascii():
        return s.upper()
    get = _BUILTIN_UPPER.get
    return "".join([get(c) or c.upper() for c in s])


def ascii_lower(s: str) -> str:
    """lower() under the C (POSIX) ctype: A-Z only."""
    if s.isascii():
        return s.lower()
    return "".join([c.lower() if c < "\x80" else c for c in s])


def ascii_upper(s: str) -> str:
    """upper() under the C (POSIX) ctype: a-z only."""
    if s.isascii():
        return s.upper()
    return "".join([c.upper() if c < "\x80" else c for c in s])
