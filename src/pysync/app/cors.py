"""CORS and ``vary`` for the app's shape routes.

Electric answers any origin and lets a preflight allow only ``if-none-match`` and
``traceparent``: auth headers are meant to be added by a proxy. An app's own routes are
that proxy, so here the app says which origins may read them, whether credentials
(cookies, ``Authorization``) may be sent, and which extra request headers a preflight
allows. The ``electric-*`` headers are always exposed.

Shape routes of an app answer per user from one URL (``/shapes/todos?offset=-1``), and
their responses are cacheable (``public, max-age=...``): ``vary`` names the request
headers a cached copy depends on, so that neither a browser nor a CDN hands one user's
shape to another.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pysync.http.responses import EXPOSED_HEADERS, PREFLIGHT_HEADERS, SHAPE_METHODS

DEFAULT_VARY = ("authorization", "cookie")


class CORS(msgspec.Struct, frozen=True, kw_only=True):
    """``origins``: ``"*"`` (any origin, echoed back) or the allowed origins
    (``"https://app.example"``). ``credentials``: send ``Access-Control-Allow-Credentials``
    (the origin is then always echoed, never ``*``). ``headers``: request headers a
    preflight allows besides ``if-none-match`` and ``traceparent`` (e.g.
    ``["authorization"]``). ``vary``: request headers responses vary by."""

    origins: str | tuple[str, ...] = "*"
    credentials: bool = False
    headers: tuple[str, ...] = ()
    vary: tuple[str, ...] = DEFAULT_VARY
    max_age: int = 86400

    @classmethod
    def of(
        cls,
        origins: str | Sequence[str] = "*",
        *,
        credentials: bool = False,
        headers: Sequence[str] = (),
        vary: Sequence[str] = DEFAULT_VARY,
        max_age: int = 86400,
    ) -> CORS:
        return cls(
            origins=origins if isinstance(origins, str) else tuple(origins),
            credentials=credentials,
            headers=tuple(h.lower() for h in headers),
            vary=tuple(h.lower() for h in vary),
            max_age=max_age,
        )

    def allowed_origin(self, origin: str | None) -> str | None:
        """The ``access-control-allow-origin`` value for a request from ``origin``."""
        if self.origins == "*":
            if origin:
                return origin
            return None if self.credentials else "*"
        return origin if origin in self.origins else None

    def apply(self, request: Request, response: Response) -> Response:
        """Set the CORS and vary headers of a shape response (replacing Electric's)."""
        headers = response.headers
        _set_origin(headers, self.allowed_origin(request.headers.get("origin")))
        if self.credentials:
            headers["access-control-allow-credentials"] = "true"
        headers["access-control-expose-headers"] = EXPOSED_HEADERS
        headers["access-control-allow-methods"] = SHAPE_METHODS
        _vary(headers, self.vary)
        return response

    def preflight(self, request: Request, methods: str = SHAPE_METHODS) -> Response:
        """The answer to ``OPTIONS``; ``methods``: those the route answers."""
        response = Response(
            b"", status_code=204, headers={"access-control-max-age": str(self.max_age)}
        )
        self.apply(request, response)
        response.headers["access-control-allow-methods"] = methods
        requested = request.headers.get("access-control-request-headers")
        if requested:
            allowed = set(PREFLIGHT_HEADERS) | set(self.headers)
            granted = [h.strip() for h in requested.split(",") if h.strip().lower() in allowed]
            if granted:
                response.headers["access-control-allow-headers"] = ",".join(granted)
        return response


def _set_origin(headers: MutableHeaders, origin: str | None) -> None:
    if origin is None:
        if "access-control-allow-origin" in headers:
            del headers["access-control-allow-origin"]
        return
    headers["access-control-allow-origin"] = origin


def _vary(headers: MutableHeaders, names: Sequence[str]) -> None:
    # The allowed origin is echoed, so the answer varies by Origin too.
    wanted = ["origin", *names]
    present = [v.strip().lower() for v in headers.get("vary", "").split(",") if v.strip()]
    merged = present + [n for n in wanted if n not in present]
    headers["vary"] = ", ".join(merged)


class PreflightMiddleware:
    """Answers CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``) with
    ``cors`` before the app's auth runs: a browser sends no credentials in a preflight,
    so an endpoint that authenticates before ``sync.render`` would refuse it. Put it
    first (outermost): ``Starlette(middleware=[Middleware(PreflightMiddleware, cors=...)])``
    or ``app.add_middleware(PreflightMiddleware, cors=sync.cors)``. ``paths``: only
    under these prefixes (default: every path)."""

    def __init__(self, app: ASGIApp, cors: CORS, paths: Sequence[str] | None = None) -> None:
        self.app = app
        self.cors = cors
        self.paths = tuple(paths) if paths is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "OPTIONS"
            and (self.paths is None or scope["path"].startswith(self.paths))
        ):
            request = Request(scope, receive)
            if "access-control-request-method" in request.headers:
                await self.cors.preflight(request)(scope, receive, send)
                return
        await self.app(scope, receive, send)
