"""pysync: an embedded Postgres sync engine, wire-compatible with Electric's Shape API."""

# First: chooses the compiled or pure-Python hot modules before anything imports them.
from pysync._compiled import implementation
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
    "implementation",
    "interrupt",
    "shape",
    "__version__",
]
