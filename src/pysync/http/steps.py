"""The rules of a shape request, each in one place, as named steps (Electric's request
plug: validate -> load the shape -> determine the offset -> serve).

Both paths of a request run them: the ASGI app (``ShapeAPI._serve``), with awaits between
(loading a shape, waiting for its snapshot, holding a long-poll), and the live path of
``pysync serve`` (``parking.LivePolls``), which runs the steps that need no await and
hands a request to the app wherever a step raises or would await: the app then answers
it by the same steps. So the live path can only be faster, never answer otherwise.

1. ``authorise`` (the secret: 401), ``validate`` (the subset fields and the params: 400
   naming the problem).
2. admission (``admission.py``) and loading the shape (``ShapeSource.shape``; the live
   path takes only a shape it has at hand, ``ShapeSource.known``).
3. ``check_shape``: the loaded shape against the request (its handle; compaction).
4. ``next_step``: what a log read at the request's offset does: answer, hold (a live
   request with nothing new), or wait a while for a log it is ahead of.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from pysync.http.auth import authorise as authorise  # step 1, with the others here
from pysync.http.errors import MustRefetch, ShapeAPIError, invalid
from pysync.http.params import RequestError, ShapeRequest, parse_request
from pysync.http.subset import SubsetError, subset_fields_from_query
from pysync.log.log import LogSlice
from pysync.log.offset import BEFORE_ALL, LogOffset
from pysync.shapes.consumer import ShapeConsumer


def parse(query: Mapping[str, str], *, shape_from_params: bool = True) -> ShapeRequest:
    """The params, in Electric's stages (``params.py``); 400 with the first stage's errors."""
    try:
        return parse_request(query, shape_from_params=shape_from_params)
    except RequestError as exc:
        raise invalid(exc.errors) from None


def validate(query: Mapping[str, str]) -> tuple[ShapeRequest, dict[str, object] | None]:
    """A GET's query: its params and its ``subset__*`` fields (None: not a subset)."""
    try:
        subset = subset_fields_from_query(query)
    except SubsetError as exc:
        raise bad_subset(exc) from None
    return parse(query), subset


def bad_subset(exc: SubsetError) -> ShapeAPIError:
    """400 for subset fields (of the query or a POST's body), nested under ``subset``."""
    return invalid({"subset": exc.errors})


def check_shape(parsed: ShapeRequest, consumer: ShapeConsumer) -> None:
    """The shape loaded for the request against what it asks: 400 for compaction of a
    shape with subqueries, 409 (to the shape's handle) for a handle that is not its."""
    if parsed.compaction and consumer.shape.dependencies:
        raise invalid({"experimental_compaction": ["can't be enabled for shapes with subqueries"]})
    offset = parsed.offset
    if offset != "now" and offset != BEFORE_ALL and parsed.handle != consumer.handle:
        raise refetch(parsed, consumer.handle)


def refetch(parsed: ShapeRequest, handle: str | None) -> MustRefetch:
    """The 409 to ``parsed``: start again, from ``handle`` when one is known."""
    return MustRefetch(handle, parsed.offset, parsed.live, parsed.sse)


class Next(enum.Enum):
    ANSWER = "answer"
    """With what ``part`` holds (nothing new, for a request at the log's end)."""
    HOLD = "hold"
    """A live request with nothing new: wait for a change, up to the long-poll timeout."""
    AHEAD = "ahead"
    """A request beyond the end of the log (after a restart, a client may be slightly
    ahead): wait half a timeout for the log to get there, then a 400 (``out_of_bounds``)."""


def next_step(
    parsed: ShapeRequest, consumer: ShapeConsumer, offset: LogOffset, part: LogSlice
) -> Next:
    """What a log read after ``offset`` does, ``part`` being what the log has after it."""
    if part.spans:
        return Next.ANSWER
    # Live or not, as Electric: a live request beyond the end waiting a whole long-poll
    # would get a 200 up-to-date at an offset the log never reached, and come back to
    # the same place forever.
    if consumer.snapshot_done and offset > consumer.last_offset:
        return Next.AHEAD
    if parsed.live:
        return Next.HOLD
    return Next.ANSWER


def out_of_bounds(consumer: ShapeConsumer, offset: LogOffset, part: LogSlice) -> bool:
    """After waiting (``Next.AHEAD``), still nothing and still beyond the log's end."""
    return not part.spans and offset > consumer.last_offset


OUT_OF_BOUNDS = {"offset": ["out of bounds for this shape"]}
