"""pysync: an embedded Postgres sync engine, wire-compatible with Electric's Shape API."""

__version__ = "0.1.0"

from pysync.app.cors import CORS, PreflightMiddleware  # noqa: E402
from pysync.app.mutation import (  # noqa: E402
    Format,
    Mutation,
    MutationError,
    MutationForbidden,
    MutationInvalid,
    MutationNotFound,
)
from pysync.app.shapes import shape  # noqa: E402
from pysync.app.sync import Sync, interrupt  # noqa: E402
from pysync.app.tanstack import TanstackDB  # noqa: E402
from pysync.app.writer import WriteContext, Writer  # noqa: E402
from pysync.client import BlockingClient, Client, ClientError  # noqa: E402
from pysync.engine import Engine  # noqa: E402
from pysync.shapes.definition import ShapeDefinition, ShapeError  # noqa: E402

__all__ = [
    "CORS",
    "BlockingClient",
    "Client",
    "ClientError",
    "Engine",
    "Format",
    "Mutation",
    "MutationError",
    "MutationForbidden",
    "MutationInvalid",
    "MutationNotFound",
    "PreflightMiddleware",
    "ShapeDefinition",
    "ShapeError",
    "Sync",
    "TanstackDB",
    "WriteContext",
    "Writer",
    "interrupt",
    "shape",
    "__version__",
]
