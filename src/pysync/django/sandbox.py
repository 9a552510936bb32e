"""The sandbox: shapes of a test that runs inside one transaction (Django's ``TestCase``,
pytest-django's default ``django_db``), whose writes logical replication never sees
because the transaction is rolled back. In the spirit of Phoenix.Sync.Sandbox.

A shape is read with a SELECT inside the test's own transaction, on its connection; after
each statement that may write (anything but a SELECT) through that connection, every
open shape is read again and the difference becomes its changes: inserts, updates and
deletes, with the test transaction's txid. So the rows a shape serves are always the
rows the same SELECT returns in the test's transaction, whatever wrote them
(``save()``, ``QuerySet.update()``, ``bulk_create``, raw SQL through Django's cursor,
``pysync.django.Writer``, a rolled-back savepoint). A write on the raw psycopg connection
is seen at the next shape request (which reads every shape again first).

Everything here runs on the test's thread (Django's connection is per thread): the
shape requests reach it through ``sync_to_async``, as Django's async views reach the ORM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg
from django.db import connections
from psycopg.types.json import JsonbLoader, JsonLoader

from pysync.log.offset import LogOffset
from pysync.shapes.definition import Shape, ShapeDefinition, ShapeError, validate
from pysync.shapes.querying import row_json_query
from pysync.shapes.schema import schema_header

_decode = msgspec.json.decode
_encode = msgspec.json.encode

SNAPSHOT_END = LogOffset(0, 0)
"""Where every sandbox shape's snapshot ends: its changes come after."""

_SAVEPOINT = "pysync_sandbox"


class SandboxShape:
    """One shape of the test: its rows now, and its log (snapshot, then changes)."""

    def __init__(self, handle: str, shape: Shape, snapshot: list[bytes], schema: str) -> None:
        self.handle = handle
        self.shape = shape
        self.values: dict[str, dict[str, Any]] = {}
        """The rows as the shape's SELECT returned them last, by key."""
        self.snapshot = snapshot
        self.changes: list[tuple[LogOffset, bytes]] = []
        self.schema = schema
        self.gone: str | None = None
        """Why the shape cannot be served any more (its SELECT failed): clients refetch."""

    @property
    def last_offset(self) -> LogOffset:
        return self.changes[-1][0] if self.changes else SNAPSHOT_END

    def after(self, offset: LogOffset) -> tuple[list[bytes], LogOffset]:
        """The log's entries after ``offset`` and the offset of the last one (read
        together: the test's thread may append meanwhile)."""
        changes = list(self.changes)
        end = changes[-1][0] if changes else SNAPSHOT_END
        if offset < SNAPSHOT_END:
            return [*self.snapshot, *(entry for _, entry in changes)], end
        return [entry for at, entry in changes if at > offset], end


class Sandbox:
    """The shapes of one test, read in its transaction on Django's connection ``alias``.

    ``start()`` (on the test's thread, inside its transaction) hooks the connection;
    ``stop()`` unhooks it. ``on_change`` is called (on the test's thread) after changes
    were appended to a shape's log."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self.on_change: Callable[[], None] = lambda: None
        self._connection: Any = None
        self._thread: int | None = None
        self._by_definition: dict[ShapeDefinition, SandboxShape] = {}
        self._by_key: dict[str, SandboxShape] = {}
        self._handles = 0
        self._sequence = 0
        self._reading = False

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        connection = connections[self.alias]
        if not connection.in_atomic_block:
            raise RuntimeError(
                "the pysync sandbox serves the test's transaction: start it inside one "
                "(Django's TestCase); a TransactionTestCase commits, use SyncTestCase"
            )
        self._connection = connection
        self._thread = threading.get_ident()
        connection.execute_wrappers.append(self._after_statement)

    def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._after_statement in connection.execute_wrappers:
            connection.execute_wrappers.remove(self._after_statement)

    # -- shapes ---------------------------------------------------------------------

    def shape(self, definition: ShapeDefinition) -> SandboxShape:
        """The test's shape for ``definition`` (read now if it is new); every open shape
        is read again first. ShapeError names what cannot be a shape."""
        self._check_thread()
        self.refresh()
        known = self._by_definition.get(definition)
        if known is not None and known.gone is None:
            return known
        conn = self._raw()
        compiled = self._in_savepoint(lambda: validate(conn, definition))  # type: ignore[arg-type]
        if compiled.dependencies:
            raise ShapeError(
                "where",
                "the pysync sandbox (a test inside a transaction) serves shapes without "
                "subqueries (IN (SELECT ...)): test this one in a SyncTestCase "
                "(or django_db(transaction=True)), with real replication",
            )
        same = self._by_key.get(compiled.key)
        if same is None or same.gone is not None:
            same = self._snapshot(compiled)
            self._by_key[compiled.key] = same
        self._by_definition[definition] = same
        return same

    def _snapshot(self, shape: Shape) -> SandboxShape:
        query, params = row_json_query(shape)
        conn = self._raw()

        def read() -> tuple[list[Any], Any]:
            rows = conn.execute(query, params).fetchall()
            visible = conn.execute(_SNAPSHOT_QUERY).fetchone()
            return rows, visible

        rows, (xmin, xmax, xip, own) = self._in_savepoint(read)
        if own is not None and int(own) >= int(xmax):
            # Postgres' xmax is the last completed xid + 1: the test's own transaction,
            # whose rows the snapshot holds, may be at or above it. The snapshot-end
            # says it is visible; the xids between were running, so they are not.
            xip = [*xip, *(str(x) for x in range(int(xmax), int(own)))]
            xmax = str(int(own) + 1)
        self._handles += 1
        handle = f"sandbox-{self._handles}-{shape.key[:12]}"
        schema = _encode(schema_header(shape.table, shape.columns)).decode()
        entries: list[bytes] = []
        sandboxed = SandboxShape(handle, shape, entries, schema)
        changes_only = shape.definition.log_mode == "changes_only"
        for (text,) in rows:
            message = _decode(text)
            sandboxed.values[message["key"]] = message["value"]
            if not changes_only:
                entries.append(text.encode())
        # The test's own transaction is visible to the snapshot (its rows are in it):
        # a client's wait_for_txid of it resolves on this, as on Electric's snapshot-end.
        control = {"control": "snapshot-end", "xmin": xmin, "xmax": xmax, "xip_list": xip}
        entries.append(_encode({"headers": control}))
        return sandboxed

    def refresh(self) -> None:
        """Read every open shape again; append the differences to their logs."""
        if self._reading or self._connection is None:
            return
        shapes = [s for s in self._by_key.values() if s.gone is None]
        if not shapes:
            return
        conn = self._raw()
        read: list[tuple[SandboxShape, dict[str, dict[str, Any]]]] = []
        for sandboxed in shapes:
            query, params = row_json_query(sandboxed.shape)

            def select(query: Any = query, params: list[object] = params) -> list[Any]:
                return conn.execute(query, params).fetchall()

            try:
                rows = self._in_savepoint(select)
            except Exception as exc:  # noqa: BLE001 - its table was dropped or altered
                sandboxed.gone = f"its SELECT failed: {exc}"
                continue
            now = {}
            for (text,) in rows:
                message = _decode(text)
                now[message["key"]] = message["value"]
            read.append((sandboxed, now))
        changed = [(s, now) for s, now in read if now != s.values]
        gone = len(read) < len(shapes)
        if changed:
            row = self._in_savepoint(
                lambda: conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()
            )
            txid = int(row[0])
            self._sequence += 1
            for sandboxed, now in changed:
                self._append(sandboxed, now, txid)
        if changed or gone:
            self.on_change()

    def _append(self, sandboxed: SandboxShape, now: dict[str, dict[str, Any]], txid: int) -> None:
        shape = sandboxed.shape
        relation = [shape.table.schema, shape.table.name]
        full = shape.definition.replica == "full"
        pk = shape.pk
        before = sandboxed.values
        messages: list[dict[str, Any]] = []
        for key, value in now.items():
            old = before.get(key)
            if old is None:
                messages.append({"key": key, "value": value, "operation": "insert"})
            elif old != value:
                changed = {name: v for name, v in value.items() if old.get(name) != v}
                message: dict[str, Any] = {"key": key, "operation": "update"}
                if full:
                    message["value"] = value
                    message["old_value"] = {name: old.get(name) for name in changed}
                else:
                    message["value"] = {**{name: value[name] for name in pk}, **changed}
                messages.append(message)
        for key, old in before.items():
            if key not in now:
                value = old if full else {name: old[name] for name in pk}
                messages.append({"key": key, "value": value, "operation": "delete"})
        sandboxed.values = now
        for position, message in enumerate(messages):
            headers: dict[str, Any] = {
                "operation": message.pop("operation"),
                "relation": relation,
                "lsn": str(self._sequence),
                "op_position": position,
                "txids": [txid],
            }
            if position == len(messages) - 1:
                headers["last"] = True
            message["headers"] = headers
            offset = LogOffset(self._sequence, position)
            sandboxed.changes.append((offset, _encode(message)))

    # -- the connection -------------------------------------------------------------

    def _after_statement(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        """Django's execute wrapper: after a statement that may have written, the shapes
        are read again (a SELECT does not write; anything else may, a ROLLBACK TO
        SAVEPOINT too)."""
        result = execute(sql, params, many, context)
        if not self._reading and sql.lstrip()[:6].upper() != "SELECT":
            self.refresh()
        return result

    def _check_thread(self) -> None:
        if self._connection is None:
            raise RuntimeError("the pysync sandbox is not started (or its test has ended)")
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "a sandboxed shape was asked for outside the test's thread, which holds its "
                "transaction: make requests with the test's client (self.client, "
                "self.async_client), whose views run the ORM on the test's thread"
            )

    def _raw(self) -> _Plain:
        """The psycopg connection under Django's (its statements skip the wrapper)."""
        self._connection.ensure_connection()
        return _Plain(self._connection.connection)

    def _in_savepoint(self, read: Callable[[], Any]) -> Any:
        """``read()`` in a savepoint: a failing read must not abort the test's transaction."""
        conn = self._raw()
        self._reading = True
        try:
            conn.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                result = read()
            except BaseException:
                conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
                raise
            conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            return result
        finally:
            self._reading = False


class _Plain:
    """Statements on Django's psycopg connection with psycopg's own adapters: Django's
    (client-side binding, JSON left as text) are for its ORM, not for the catalog and
    snapshot queries pysync runs."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor[Any]:
        cursor = psycopg.Cursor(self.connection)
        cursor.adapters.register_loader("json", JsonLoader)
        cursor.adapters.register_loader("jsonb", JsonbLoader)
        return cursor.execute(query, params)


_SNAPSHOT_QUERY = (
    "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, "
    "ARRAY(SELECT pg_snapshot_xip(s)::text), pg_current_xact_id_if_assigned()::text "
    "FROM pg_current_snapshot() s"
)
