"""A Python client of Electric's HTTP Shape API: works against pysync and Electric."""

from pysync.client.client import Client
from pysync.client.errors import ClientError
from pysync.client.messages import (
    ChangeMessage,
    ControlMessage,
    EventMessage,
    Headers,
    Message,
    MovePattern,
)
from pysync.client.shape import RowChange, Shape, ShapeUpdate
from pysync.client.stream import Backoff, ShapeStream
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
    "Headers",
    "Message",
    "MovePattern",
    "RowChange",
    "Shape",
    "ShapeStream",
    "ShapeUpdate",
]
