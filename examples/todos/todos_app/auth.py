"""Who is asking: a user name in a cookie signed with the app's key (a stand-in for the
app's real auth: sessions, OAuth, whatever sets ``request.state.user``)."""

from __future__ import annotations

import hashlib
import hmac
import re

from fastapi import HTTPException, Request

COOKIE = "todos_user"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}\Z")


class Signer:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def sign(self, user: str) -> str:
        if not _NAME.match(user):
            raise HTTPException(400, "a user name is lower-case letters, digits and _")
        return f"{user}.{self._mac(user)}"

    def user(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        user, mac = cookie.rsplit(".", 1)
        return user if hmac.compare_digest(mac, self._mac(user)) else None

    def _mac(self, user: str) -> str:
        return hmac.new(self.key, user.encode(), hashlib.sha256).hexdigest()[:32]


def current_user(request: Request) -> str:
    """A FastAPI dependency: the signed-in user, or 401."""
    signer: Signer = request.app.state.signer
    user = signer.user(request.cookies.get(COOKIE))
    if user is None:
        raise HTTPException(401, "sign in first")
    return user
