"""URLs as pysync logs them: without a password.

A database URL (``postgresql://user:password@host/db``, ``...?password=...`` or libpq's
``host=... password=...``) and a sync service URL (``http://user:password@host``) are
logged with the password replaced by ``***``; everything else (who, where) stays.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"

_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def redacted(url: str) -> str:
    """``url`` with any password in it replaced by ``***``."""
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + HIDDEN, url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all (a bad port...): hide what may be one
        return re.sub(r"//[^@/]*@", f"//{HIDDEN}@", url)
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{HIDDEN}@{host}"
    query = parts.query
    if query and "password" in query.lower():
        query = urlencode(
            [
                (key, HIDDEN if key.lower() == "password" else value)
                for key, value in parse_qsl(query, keep_blank_values=True)
            ],
            safe="/:*",
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
