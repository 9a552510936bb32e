"""pysync's logs inside an app: through the standard ``logging`` tree (logger ``pysync``).

An app that configured logging (a handler on the root logger, as ``logging.basicConfig``
or ``dictConfig`` set up) gets pysync's records there, at the level asked for. Under
uvicorn, which configures only its own ``uvicorn.*`` loggers, the root has no handler and
Python would show only warnings: then pysync's logger gets a handler of its own, in
uvicorn's format, so INFO lines show beside uvicorn's.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("pysync")
_FORMAT = "%(levelname)s:     %(name)s: %(message)s"


def configure(level: str) -> None:
    if LOGGER.level == logging.NOTSET:
        LOGGER.setLevel(level.upper())
    if LOGGER.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    LOGGER.addHandler(handler)
