"""``pysync.django.Writer``: pysync's Writer on Django models and Django's transaction.

    writer = pysync.django.Writer().allow(Todo, check=lambda m: ...)
    txid = writer.apply(mutations)          # in one transaction.atomic, through Django's connection
    path("api/write/", writer.view)         # a view: POST JSON, CSRF as Django checks it

A model's mutations are validated by the model: ``Model(**row)`` then ``full_clean()``
(field types, choices, validators, unique and constraints), and the cleaned values are
written. The rules are the Writer's: update and delete rules judge the row loaded from
the database (locked), never the client's ``original``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.models import Model
from django.http import HttpRequest, JsonResponse

from pysync.app.mutation import OPERATIONS, MutationError, MutationInvalid, Operation
from pysync.app.writer import MAX_BODY, Callback, WriteContext
from pysync.app.writer import Writer as BaseWriter
from pysync.postgres.identifiers import quote_identifier


class Writer(BaseWriter):
    """A Writer that writes through Django's connection ``using`` (default ``default``)."""

    def __init__(self, *, using: str = "default", **options: Any) -> None:
        super().__init__(**options)
        self.using = using

    def allow(
        self,
        table: str | type,
        *,
        accept: Collection[Operation] = OPERATIONS,
        validate: Callback | type | None = None,
        **rules: Any,
    ) -> Writer:
        """As ``pysync.Writer.allow``; ``table`` may be a Django model, whose ``full_clean``
        validates unless ``validate=`` is given."""
        if isinstance(table, type) and issubclass(table, Model):
            model: Any = table
            if validate is None:
                validate = full_clean_validator(model)
            table = f"{quote_identifier('public')}.{quote_identifier(model._meta.db_table)}"
        super().allow(table, accept=accept, validate=validate, **rules)
        return self

    def apply(self, payload: Any, connection: Any = None) -> int:
        """Apply the batch in one ``transaction.atomic`` on Django's connection (a
        savepoint inside an atomic block already open); its transaction id. With a
        psycopg connection or SQLAlchemy session, as ``pysync.Writer.apply``."""
        if connection is not None:
            return super().apply(payload, connection)
        django_connection = connections[self.using]
        with transaction.atomic(using=self.using):
            # A statement first: the transaction is open, so the Writer's block is a
            # savepoint in Django's and Django commits (its on_commit hooks run).
            with django_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return super().apply(payload, django_connection.connection)

    def view(self, request: HttpRequest) -> JsonResponse:
        """A Django view: POST the batch as ``application/json``, get ``{"txid": n}``; or
        400/403/404/422 with ``{"message", "mutation", "reason"}``. A plain (sync) view:
        Django's middleware runs first, CSRF included (send the ``X-CSRFToken`` header)."""
        if request.method != "POST":
            return JsonResponse({"message": "Method not allowed, POST the mutations"}, status=405)
        if request.content_type != "application/json":
            return JsonResponse(
                {"message": "Unsupported media type: POST the mutations as application/json"},
                status=415,
            )
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return JsonResponse(
                {"message": f"Request body too large (max {MAX_BODY} bytes)"}, status=413
            )
        try:
            txid = self.apply(request.body)
        except MutationError as exc:
            return JsonResponse(exc.body(), status=exc.status)
        return JsonResponse({"txid": txid})


def full_clean_validator(model: type[Model]) -> Callback:
    """Validate with ``model(**row).full_clean()`` (the stored row merged in for
    updates); the values written are the cleaned ones of the mutation's columns, and for
    an insert the model's defaults of the others (Django applies them, not Postgres)."""
    fields = {field.column: field for field in model._meta.concrete_fields}

    def validate(ctx: WriteContext) -> dict[str, Any]:
        unknown = [name for name in ctx.values if name not in fields]
        if unknown:
            raise MutationInvalid(f"no column {unknown[0]!r} in {model._meta.label}")
        values = {**(ctx.row or {}), **ctx.values}
        instance = model(**{fields[name].attname: value for name, value in values.items()})
        instance._state.adding = ctx.operation == "insert"
        try:
            instance.full_clean()
        except ValidationError as exc:
            raise MutationInvalid(_describe(exc)) from None
        written = set(ctx.values)
        if ctx.operation == "insert":  # the model's defaults too, as Model.save() writes them
            written |= {name for name, field in fields.items() if field.has_default()}
        return {name: getattr(instance, fields[name].attname) for name in fields if name in written}

    return validate


def _describe(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()
        )
    return " ".join(error.messages)
