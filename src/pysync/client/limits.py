"""How much a server may make the client read, wait for, and loop."""

from __future__ import annotations

import msgspec


class Limits(msgspec.Struct, frozen=True):
    """Bounds against a broken or hostile server (``Client(limits=Limits(...))``).

    ``max_response_bytes``: the largest body (after content decoding), or SSE event, read;
    a larger one raises ``ResponseTooLarge`` (a declared ``content-length`` over it before
    any of it is read). Electric and pysync cut shape logs into chunks of about 10 MB, so
    only a single row larger than this is refused.

    ``request_timeout``: seconds from sending a request to the last byte of its body (for
    SSE: to the end of each event); longer raises ``ResponseTimeout``. It bounds a server
    that trickles bytes, which the read timeout (``Client(timeout=...)``, the longest
    silence) does not; keep it above that and the server's long-poll (20 s).

    ``max_loops``: how many answers in a row may get the stream nowhere: 409s (or a shape
    handle other than the one asked for) before an up-to-date, or catch-up responses that
    leave the offset where it was. The first is followed at once, each further one after
    a back-off delay; one more raises ``ServerLoop``. So many HTTP protocol errors in a
    row (a server that does not speak HTTP) raise ``MalformedResponse``.

    Live answers that come back at once with nothing new (a server that does not hold
    long-polls, SSE connections closed at once) are not limited, but from the second in a
    row each waits a back-off delay.
    """

    max_response_bytes: int = 128 * 1024 * 1024
    request_timeout: float = 120.0
    max_loops: int = 10
