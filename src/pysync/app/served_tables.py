"""The tables a mount of Electric's API may serve (``sync.mount(..., tables=[...])``).

Electric's ``/v1/shape`` takes the shape from the client: any table, any WHERE, any
columns. Mounted in an app without ``tables=``, whoever reaches it reads every table the
publication can hold. With ``tables=`` a request naming another table is a 403, and so is
one whose WHERE (or subset WHERE) reads another table in a subquery: an ``IN (SELECT ...)``
filter reveals the rows of the table it selects from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec
from starlette.requests import Request

from pysync.app.shapes import shape
from pysync.http.bodies import read_body
from pysync.http.errors import ShapeAPIError, invalid
from pysync.http.json_input import JSONTooDeep, decode_json
from pysync.postgres.identifiers import IdentifierError, parse_relation
from pysync.where import WhereError, sublinks

Relation = tuple[str, str]


class ServedTables:
    """``tables``: names (``todos``, ``app."Todos"``), SQLAlchemy Tables or ORM classes."""

    def __init__(self, tables: Iterable[object]) -> None:
        if isinstance(tables, str):
            raise TypeError("tables= takes a list of tables, not one name")
        self.relations = frozenset((s.schema, s.table) for s in map(shape, tables))
        if not self.relations:
            raise ValueError("tables= names no table: serve at least one, or mount nothing")

    async def refusal(self, request: Request) -> ShapeAPIError | None:
        """Why the request may not be served here (403, or 400 for a clause that cannot
        be checked), or None. A missing or malformed ``table`` is left to the API's own
        400."""
        try:
            relation = parse_relation(request.query_params.get("table") or "")
        except IdentifierError:
            return None
        if relation not in self.relations:
            return _forbidden("table", relation)
        try:
            clauses = await _clauses(request)
        except ShapeAPIError as exc:  # a body over the limit, or cut off
            return exc
        for field, clause in clauses:
            try:
                for read in _tables_read(clause):
                    if read not in self.relations:
                        return _forbidden(field, read)
            except WhereError as exc:
                return invalid({field: [str(exc)]})
        return None


def _forbidden(field: str, relation: Relation) -> ShapeAPIError:
    name = ".".join('"' + part.replace('"', '""') + '"' for part in relation)
    message = f"table {name} is not served here"
    return ShapeAPIError(403, {"message": message, "errors": {field: [message]}})


async def _clauses(request: Request) -> list[tuple[str, str]]:
    """The request's WHERE clauses, with the field each came in: ``where`` and
    ``subset__where`` of the query, ``where`` and ``subset.where`` of a POST body."""
    found = [
        (field, clause)
        for field in ("where", "subset__where")
        if (clause := request.query_params.get(field))
    ]
    if request.method == "POST":
        try:  # read_body keeps the body: the API reads it again
            body = decode_json(await read_body(request) or b"{}")
        except (msgspec.DecodeError, JSONTooDeep):
            body = None  # the API answers its own 400
        if isinstance(body, dict):
            nested = body.get("subset")
            for field, clause in (
                ("where", body.get("where")),
                ("subset", nested.get("where") if isinstance(nested, dict) else None),
            ):
                if isinstance(clause, str) and clause:
                    found.append((field, clause))
    return found


def _tables_read(clause: str) -> Iterator[Relation]:
    """The tables the subqueries of ``clause`` select from, nested ones too."""
    for sublink in sublinks(clause):
        yield (sublink.schema, sublink.table)
        if sublink.where:
            yield from _tables_read(sublink.where)
