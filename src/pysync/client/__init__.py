"""A Python client of Electric's HTTP Shape API: works against pysync and Electric."""

from pysync.client.backoff import Backoff
from pysync.client.client import Client
from pysync.client.errors import (
    ClientError,
    MalformedResponse,
    OffsetWentBack,
    ResponseTimeout,
    ResponseTooLarge,
    ServerLoop,
)
from pysync.client.limits import Limits
from pysync.client.messages import (
    ChangeMessage,
    ControlMessage,
    EventMessage,
    Headers,
    Message,
    MovePattern,
)
from pysync.client.shape import FellBehind, RowChange, Shape, ShapeUpdate
from pysync.client.stream import ShapeStream
from pysync.client.sync import BlockingClient, BlockingShape

__all__ = [
    "Backoff",
    "BlockingClient",
    "BlockingShape",
    "ChangeMessage",
    "Client",
    "ClientError",
    "ControlMessage",
    "EventMessage",
    "FellBehind",
    "Headers",
    "Limits",
    "MalformedResponse",
    "Message",
    "MovePattern",
    "OffsetWentBack",
    "ResponseTimeout",
    "ResponseTooLarge",
    "RowChange",
    "ServerLoop",
    "Shape",
    "ShapeStream",
    "ShapeUpdate",
]
