"""The configured secret: the one credential pysync itself checks (an embedding app adds
its own auth in front of its routes)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import Request

from pysync.http.errors import UNAUTHORIZED


def secret_ok(query: Mapping[str, str], secret: str | None) -> bool:
    """Does the query carry ``secret`` as ``secret=`` (or the deprecated ``api_secret``)?
    Always, without one."""
    if not secret:
        return True
    given = query.get("secret") or query.get("api_secret") or ""
    return hmac.compare_digest(given.encode(), secret.encode())


def authorise(query: Mapping[str, str], secret: str | None) -> None:
    """Raise 401 unless the query carries ``secret``."""
    if not secret_ok(query, secret):
        # As Electric: sent before CORS and content-type are added.
        raise UNAUTHORIZED


def check_secret(request: Request, secret: str | None) -> None:
    """Raise 401 unless the request carries ``secret``."""
    authorise(request.query_params, secret)
