"""Query parameters of ``/v1/shape``, validated in Electric's stages and wording.

Unknown parameters are ignored (the TS client sends cursor, cache-buster, expired_handle,
custom params ...). A later stage runs only when every earlier one passed, so an error
body names the problems of the first failing stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgspec

from pysync.log.offset import LogOffset, OffsetError, parse_offset_param
from pysync.postgres.identifiers import IdentifierError, parse_column_list, parse_relation
from pysync.shapes.definition import ShapeDefinition, ShapeError

_PARAM_KEY = re.compile(r"^params\[([^\]]*)\]$")
MAX_HANDLE_LENGTH = 256
"""Characters of a ``handle`` kept for comparison (pysync's are about 30): a longer one is
cut to this length, which matches no shape, so the request gets a 409 as any unknown
handle does."""


class RequestError(Exception):
    """A 400 with Electric's body ``{"message": "Invalid request", "errors": {...}}``."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


class ShapeRequest(msgspec.Struct):
    definition: ShapeDefinition | None
    offset: LogOffset | Literal["now"]
    handle: str | None
    live: bool
    sse: bool
    cursor: str | None
    compaction: bool = False
    """``experimental_compaction``: ignored, but refused for shapes with subqueries."""


def _truthy(value: str | None) -> bool:
    """``live``: present with any value but the literal ``false`` means true."""
    return value is not None and value != "false"


def _ecto_bool(value: str, field: str, errors: dict[str, list[str]]) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    errors[field] = ["is invalid"]
    return False


def parse_request(query: Mapping[str, str], *, shape_from_params: bool = True) -> ShapeRequest:
    """Validate the request; ``shape_from_params=False`` when the server defines the shape."""
    errors: dict[str, list[str]] = {}
    # Stage 1: casting, "offset is required".
    raw_offset = query.get("offset")
    if raw_offset is None or raw_offset == "":
        errors["offset"] = ["can't be blank"]
    replica = query.get("replica", "default")
    if replica not in ("default", "full"):
        errors["replica"] = ["is invalid"]
    log_mode = query.get("log", "full")
    if log_mode not in ("full", "changes_only"):
        errors["log"] = ["is invalid"]
    live = _truthy(query.get("live"))
    if "live_sse" in query:
        sse = _truthy(query.get("live_sse"))
    elif "experimental_live_sse" in query:
        sse = _ecto_bool(query["experimental_live_sse"], "experimental_live_sse", errors)
    else:
        sse = False
    compaction = False
    if "experimental_compaction" in query:
        compaction = _ecto_bool(query["experimental_compaction"], "experimental_compaction", errors)
    params: dict[int | str, object] = {}
    for key, value in query.items():
        if key == "params":
            errors["params"] = ["is invalid"]
        match = _PARAM_KEY.match(key)
        if match:
            params[match.group(1)] = value
    columns: list[str] | None = None
    if "columns" in query:
        try:
            columns = parse_column_list(query["columns"])
        except IdentifierError as exc:
            errors["columns"] = [str(exc)]
    queryable: list[str] | None = None
    if "queryable_columns" in query:
        try:
            queryable = parse_column_list(query["queryable_columns"])
        except IdentifierError as exc:
            errors["queryable_columns"] = [str(exc)]
    if errors:
        raise RequestError(errors)
    # Stage 2: offset format.
    assert raw_offset is not None
    try:
        offset = parse_offset_param(raw_offset)
    except OffsetError:
        raise RequestError({"offset": ["has invalid format"]}) from None
    before_all = offset == "now" or offset == LogOffset(-1, 0)
    handle = query.get("handle") or None
    if handle is not None and len(handle) > MAX_HANDLE_LENGTH:
        handle = handle[:MAX_HANDLE_LENGTH]
    # Stage 3: handle.
    if not before_all and handle is None:
        raise RequestError({"handle": ["can't be blank when offset != -1"]})
    if before_all:
        handle = None
    # Stages 4-5: live.
    if live and offset == "now":
        raise RequestError({"live": ["can't be true when offset is 'now'"]})
    if live and offset == LogOffset(-1, 0):
        raise RequestError({"live": ["can't be true when offset == -1"]})
    if sse and not live:
        raise RequestError({"live_sse": ["can't be true unless live is also true"]})
    definition = None
    if shape_from_params:
        # Stage 6: table.
        table = query.get("table")
        if not table:
            raise RequestError({"table": ["can't be blank"]})
        try:
            schema, name = parse_relation(table)
        except IdentifierError as exc:
            raise RequestError({"table": [str(exc)]}) from None
        where = query.get("where")
        try:
            definition = ShapeDefinition.create(
                name,
                namespace=schema,
                where=where,
                params=params if where else None,
                columns=columns,
                replica=replica,
                log_mode=log_mode,
                queryable_columns=queryable,
            )
        except ShapeError as exc:
            raise RequestError({exc.field: [exc.message]}) from None
    cursor = query.get("cursor")
    return ShapeRequest(definition, offset, handle, live, sse, cursor, compaction)
