"""Subset snapshots: an ad-hoc filtered, ordered, paginated slice of a shape.

Requested with ``subset__*`` query params (GET) or a JSON body (POST); errors nest under
``subset`` as Electric's do.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg
from starlette.requests import Request
from starlette.responses import Response

from pysync.http.bodies import read_body
from pysync.http.errors import ShapeAPIError, clause_fails, invalid, unavailable
from pysync.http.json_input import JSONTooDeep, decode_json
from pysync.http.responses import JSON, common
from pysync.http.source import EngineUnavailable, ShapeSource, SubsetReply
from pysync.postgres.catalog import Table
from pysync.postgres.identifiers import IdentifierError, parse_identifier
from pysync.postgres.sqlstate import error_class
from pysync.shapes.consumer import ShapeConsumer
from pysync.shapes.querying import OrderBy
from pysync.shapes.registry import COMPILE_INLINE_CHARS
from pysync.shapes.snapshotter import query_subset
from pysync.where import WhereError, compile_where, has_subquery

BIGINT_MAX = 2**63 - 1
SUBSET_FIELDS = ("where", "params", "limit", "offset", "order_by")

_TERM = re.compile(
    r'^\s*("(?:[^"]|"")+"|[^\s"]+)(?:\s+(ASC|DESC))?(?:\s+NULLS\s+(FIRST|LAST))?\s*$', re.IGNORECASE
)


class SubsetError(Exception):
    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


class Subset(msgspec.Struct):
    where: object | None
    order_by: tuple[OrderBy, ...]
    limit: int | None
    offset: int | None


def subset_fields_from_query(query: Mapping[str, str]) -> dict[str, object] | None:
    """The ``subset__*`` params, or None when the request is not a subset request."""
    if not any(key.startswith("subset__") for key in query):
        return None
    fields: dict[str, object] = {}
    for field in SUBSET_FIELDS:
        if f"subset__{field}" in query:
            fields[field] = query[f"subset__{field}"]
    raw_params = fields.get("params")
    if isinstance(raw_params, str):
        try:
            fields["params"] = decode_json(raw_params)
        except JSONTooDeep as exc:
            raise SubsetError({"params": [str(exc)]}) from None
        except msgspec.DecodeError:
            raise SubsetError({"params": ["params must be valid JSON"]}) from None
    return fields


async def subset_fields_from_body(request: Request, query: dict[str, str]) -> dict[str, object]:
    """Subset fields from a POST body; other body keys join the shape params."""
    body = await read_body(request)
    if not body.strip():
        return {}
    try:
        data = decode_json(body)
    except (msgspec.DecodeError, JSONTooDeep) as exc:
        raise ShapeAPIError(
            400, {"error": "Invalid JSON in request body", "details": str(exc)}
        ) from None
    if not isinstance(data, dict):
        raise ShapeAPIError(400, {"error": "Request body must be a JSON object"})
    nested = data.pop("subset", None)
    fields = dict(nested) if isinstance(nested, dict) else {}
    for key, value in data.items():
        if key in SUBSET_FIELDS:
            fields.setdefault(key, value)
        elif key not in ("where_expr", "order_by_expr") and isinstance(
            value, (str, int, float, bool)
        ):
            query.setdefault(key, str(value).lower() if isinstance(value, bool) else str(value))
    return fields


def parse_subset(fields: Mapping[str, object], table: Table) -> Subset:
    errors: dict[str, list[str]] = {}
    limit = _integer(fields.get("limit"), "limit", 1, "must be greater than 0", errors)
    offset = _integer(
        fields.get("offset"), "offset", 0, "must be greater than or equal to 0", errors
    )
    raw_params = fields.get("params") or {}
    params: dict[int, str] = {}
    if not isinstance(raw_params, dict):
        errors["params"] = ["params must be a JSON object"]
    else:
        for key, value in raw_params.items():
            try:
                params[int(key)] = (
                    value if isinstance(value, str) else msgspec.json.encode(value).decode()
                )
            except ValueError:
                errors["params"] = ["Parameters can only use numbers as keys"]
    order_by: tuple[OrderBy, ...] = ()
    raw_order = fields.get("order_by")
    if raw_order:
        try:
            order_by = parse_order_by(str(raw_order), table)
        except ValueError as exc:
            errors["order_by"] = [str(exc)]
    elif limit is not None or offset is not None:
        errors["order_by"] = ["order_by is required when limit or offset is present"]
    where = None
    raw_where = fields.get("where")
    if raw_where and "params" not in errors:
        if not isinstance(raw_where, str):
            errors["where"] = ["is invalid"]
        else:
            try:
                if has_subquery(raw_where):
                    raise WhereError("Subqueries are not allowed in subsets")
                where = compile_where(raw_where, table, params)
            except WhereError as exc:
                errors["where"] = [exc.message]
    if errors:
        raise SubsetError(errors)
    return Subset(where, order_by, limit, offset)


def _small(fields: Mapping[str, object]) -> bool:
    """Cheap enough to parse on the event loop (a few tens of microseconds)."""
    where = fields.get("where")
    return not isinstance(where, str) or len(where) <= COMPILE_INLINE_CHARS


def parse_order_by(text: str, table: Table) -> tuple[OrderBy, ...]:
    terms = []
    for part in _split_commas(text):
        if "$" in part:
            match = re.search(r"\$\d+", part)
            raise ValueError(
                f"parameter {match.group(0) if match else '$'} is not supported in ORDER BY clauses"
            )
        match = _TERM.match(part)
        if match is None or "(" in part:
            raise ValueError("FuncCall expressions are not allowed in ORDER BY clauses")
        name_text, direction, nulls = match.groups()
        try:
            name = parse_identifier(name_text)
        except IdentifierError as exc:
            raise ValueError(str(exc)) from None
        if table.column(name) is None:
            raise ValueError(f"unknown reference {name}")
        terms.append(
            OrderBy(
                name,
                descending=(direction or "").upper() == "DESC",
                nulls_first=None if nulls is None else nulls.upper() == "FIRST",
            )
        )
    return tuple(terms)


def _split_commas(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _integer(
    value: object, field: str, minimum: int, message: str, errors: dict[str, list[str]]
) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        errors[field] = ["is invalid"]
        return None
    if number < minimum:
        errors[field] = [message]
        return None
    if number > BIGINT_MAX:  # Postgres' LIMIT and OFFSET are bigints
        errors[field] = [f"must be less than or equal to {BIGINT_MAX}"]
        return None
    return number


async def serve_subset(
    request: Request,
    engine: ShapeSource,
    consumer: ShapeConsumer,
    fields: dict[str, object],
    schema: str,
) -> Response:
    """The subset response: ``{"metadata": ..., "data": [...]}`` at a recorded snapshot."""
    try:
        reply = await engine.subset_elsewhere(consumer, fields, schema)
    except EngineUnavailable as exc:
        raise unavailable(exc.reason, exc.retry_after) from None
    if reply is None:
        reply = await subset_reply(engine, consumer, fields, schema)
    return Response(reply.body, media_type=JSON, headers=common(reply.headers, request))


async def subset_reply(
    engine: ShapeSource, consumer: ShapeConsumer, fields: dict[str, object], schema: str
) -> SubsetReply:
    """The subset's body and headers; raises ShapeAPIError."""
    try:
        if _small(fields):
            subset = parse_subset(fields, consumer.shape.subset_table)
        else:
            subset = await engine.compute(parse_subset, fields, consumer.shape.subset_table)
    except SubsetError as exc:
        raise invalid({"subset": exc.errors}) from None
    except TimeoutError:
        raise invalid(
            {"subset": {"where": ["the clause takes too long to compile; simplify it"]}}
        ) from None
    # The offset the client continues from is taken before the query runs.
    offset = consumer.last_offset
    mark = secrets.randbelow(1 << 31)
    try:
        async with engine.connections.snapshot_session() as conn:
            info, rows = await query_subset(
                conn,
                consumer.shape,
                mark=mark,
                where=subset.where,
                order_by=subset.order_by,
                limit=subset.limit,
                offset=subset.offset,
                tagging=consumer.subquery.tagging if consumer.subquery is not None else None,
            )
    except psycopg.OperationalError:
        raise unavailable(
            "Cannot connect to the database to run the subset query. Please retry.", 1
        ) from None
    except psycopg.errors.DataError as exc:
        # Postgres refused a value the clause computes (division by zero, overflow...).
        raise invalid({"subset": {"where": [clause_fails(exc)]}}) from None
    except psycopg.Error as exc:
        raise unavailable(f"Unable to run the subset query: {error_class(exc)}", 1) from None
    metadata = msgspec.json.encode(
        {
            "xmin": str(info.xmin),
            "xmax": str(info.xmax),
            "xip_list": [str(x) for x in info.xip],
            "database_lsn": str(info.lsn),
            "snapshot_mark": mark,
        }
    )
    body = b'{"metadata":' + metadata + b',"data":[' + b",".join(rows) + b"]}"
    headers = {
        "cache-control": "no-cache",
        "electric-snapshot": "true",
        "electric-handle": consumer.handle,
        "electric-offset": str(offset),
        "electric-schema": schema,
    }
    return SubsetReply(body, headers)
