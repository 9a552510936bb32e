"""Subset snapshots: an ad-hoc filtered, ordered, paginated slice of a shape.

Requested with ``subset__*`` query params (GET) or a JSON body (POST); errors nest under
``subset`` as Electric's do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from pysync.postgres.catalog import Table
from pysync.postgres.identifiers import IdentifierError, parse_identifier
from pysync.shapes.querying import OrderBy
from pysync.shapes.where import WhereError, compile_where

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
            fields["params"] = msgspec.json.decode(raw_params)
        except msgspec.DecodeError:
            raise SubsetError({"params": ["params must be valid JSON"]}) from None
    return fields


def parse_subset(fields: Mapping[str, object], table: Table) -> Subset:
    errors: dict[str, list[str]] = {}
    limit = _integer(fields.get("limit"), "limit", 1, "must be greater than 0", errors)
    offset = _integer(fields.get("offset"), "offset", 0, "must be greater than or equal to 0", errors)
    raw_params = fields.get("params") or {}
    params: dict[int, str] = {}
    if not isinstance(raw_params, dict):
        errors["params"] = ["params must be a JSON object"]
    else:
        for key, value in raw_params.items():
            try:
                params[int(key)] = value if isinstance(value, str) else msgspec.json.encode(value).decode()
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
        elif "select" in raw_where.lower() and re.search(r"\(\s*select\b", raw_where, re.IGNORECASE):
            errors["where"] = ["Subqueries are not allowed in subsets"]
        else:
            try:
                where = compile_where(raw_where, table, params)
            except WhereError as exc:
                errors["where"] = [exc.message]
    if errors:
        raise SubsetError(errors)
    return Subset(where, order_by, limit, offset)


def parse_order_by(text: str, table: Table) -> tuple[OrderBy, ...]:
    terms = []
    for part in _split_commas(text):
        if "$" in part:
            match = re.search(r"\$\d+", part)
            raise ValueError(f"parameter {match.group(0) if match else '$'} is not supported in ORDER BY clauses")
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
        terms.append(OrderBy(
            name, descending=(direction or "").upper() == "DESC",
            nulls_first=None if nulls is None else nulls.upper() == "FIRST",
        ))
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


def _integer(value: object, field: str, minimum: int, message: str, errors: dict[str, list[str]]) -> int | None:
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
    return number
