"""pysync: an embedded Postgres sync engine, wire-compatible with Electric's Shape API."""

from pysync._version import __version__
from pysync.app.cors import CORS, PreflightMiddleware
from pysync.app.mutation import (
    Format,
    Mutation,
    MutationError,
    MutationForbidden,
    MutationInvalid,
    MutationNotFound,
)
from pysync.app.shapes import shape
from pysync.app.sync import Sync, interrupt
from pysync.app.tanstack import TanstackDB
from pysync.app.writer import WriteContext, Writer
from pysync.client import BlockingClient, Client, ClientError
from pysync.engine import Engine
from pysync.shapes.definition import ShapeDefinition, ShapeError

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
