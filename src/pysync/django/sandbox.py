"""The sandbox: shapes of a test that runs inside one transaction (Django's ``TestCase``,
pytest-django's default ``django_db``), whose writes logical replication never sees
because the transaction is rolled back. In the spirit of Phoenix.Sync.Sandbox.

A shape is read with a SELECT inside the test's own transaction, on its connection; after
each statement that may write through that connection, the open shapes are read again
and the difference becomes their changes: inserts, updates and deletes, with the test
transaction's txid. So the rows a shape serves are always the rows the same SELECT
returns in the test's transaction, whatever wrote them (``save()``,
``QuerySet.update()``, ``bulk_create``, raw SQL through Django's cursor,
``pysync.django.Writer``, a rolled-back savepoint). After an ``INSERT``, ``UPDATE`` or
``DELETE`` only the shapes reading a table the transaction wrote are read (Postgres
counts each table's written rows per transaction, triggers' and cascades' too); after
any other statement but a SELECT or a savepoint's, all of them. A write on the raw
psycopg connection is seen at the next shape request (which reads every shape again
first).

A shape with subqueries (``IN (SELECT ...)``) follows the engine's semantics
(``sandbox_subqueries.py``): its rows' changes first, read with its subqueries' values
as they were, then the move-outs and move-ins of the values that changed.

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

from pysync.django.sandbox_subqueries import Moves, Values
from pysync.log.offset import LogOffset
from pysync.postgres.catalog import Table
from pysync.postgres.snapshot import SnapshotInfo
from pysync.shapes.definition import Shape, ShapeDefinition, ShapeError, Subquery, validate
from pysync.shapes.querying import row_json_query
from pysync.shapes.schema import schema_header
from pysync.shapes.snapshotter import snapshot_end
from pysync.shapes.subqueries.shape import SubqueryShape

_decode = msgspec.json.decode
_encode = msgspec.json.encode

SNAPSHOT_END = LogOffset(0, 0)
"""Where every sandbox shape's snapshot ends: its changes come after."""

_SAVEPOINT = "pysync_sandbox"

Rows = dict[str, tuple[dict[str, Any], Any]]
"""A shape's rows by key: the value and, for a shape with subqueries, (tags, active
conditions)."""


class SandboxShape:
    """One shape of the test: its rows now, and its log (snapshot, then changes)."""

    def __init__(self, handle: str, shape: Shape, schema: str) -> None:
        self.handle = handle
        self.shape = shape
        self.rows: Rows = {}
        """The rows as the shape's SELECT returned them last (and its clients have)."""
        self.snapshot: list[bytes] = []
        self.changes: list[tuple[LogOffset, bytes]] = []
        self._pending: list[tuple[LogOffset, bytes]] = []
        self.schema = schema
        self.gone: str | None = None
        """Why the shape cannot be served any more (its SELECT failed): clients refetch."""
        self.subquery: SubqueryShape | None = None
        """The engine's subquery shape, for a shape with ``IN (SELECT ...)``."""
        self.values: list[Values] = []
        """Every subquery's values it depends on (nested ones too)."""
        self.tables: tuple[Table, ...] = (shape.table,)
        """Every table its rows depend on."""

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

    def append(self, sequence: int, entries: list[bytes]) -> None:
        """``entries`` after the log, in step ``sequence``: published with the rest of
        the step (``publish``)."""
        pending = self._pending
        last = pending[-1][0] if pending else self.last_offset
        op = last.op + 1 if last.tx == sequence else 0
        pending.extend((LogOffset(sequence, p), entry) for p, entry in enumerate(entries, op))

    def publish(self) -> None:
        """The step's entries join the log at once: a request served meanwhile (in the
        client's event loop, on another thread) sees all of them or none, as a
        transaction's."""
        if self._pending:
            pending, self._pending = self._pending, []
            self.changes.extend(pending)


class Sandbox:
    """The shapes of one test, read in its transaction on Django's connection ``alias``.

    ``start()`` (on the test's thread, inside its transaction) hooks the connection;
    ``stop()`` unhooks it. Who ``watch``es it is called (on the test's thread) after
    changes were appended to a shape's log."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self._watchers: list[Callable[[], None]] = []
        self._connection: Any = None
        self._thread: int | None = None
        self._by_definition: dict[ShapeDefinition, SandboxShape] = {}
        self._by_key: dict[str, SandboxShape] = {}
        self._values: dict[str, Values] = {}
        self._moves = Moves(self._append, self._read_at_snapshot, self._invalidate, self._step)
        self._handles = 0
        self._sequence = 0
        self._stepped = False
        """Whether this refresh appended to a log yet (its step's sequence is taken)."""
        self._xid: int | None = None
        self._counts: dict[int, int] | None = None
        """Rows the transaction wrote per table (oid) when last looked at; None when
        Postgres does not count them (``track_counts`` off)."""
        self._reading = False

    # -- lifecycle ------------------------------------------------------------------

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` (on the test's thread) after each refresh that appended
        changes to a shape's log or ended a shape."""
        self._watchers.append(changed)

    def start(self) -> None:
        connection = connections[self.alias]
        if not connection.in_atomic_block:
            raise RuntimeError(
                "the pysync sandbox serves the test's transaction: start it inside one "
                "(Django's TestCase); a TransactionTestCase commits, use SyncTestCase"
            )
        self._connection = connection
        self._thread = threading.get_ident()
        counting = self._raw().execute("SHOW track_counts").fetchone()
        self._counts = {} if counting is not None and counting[0] == "on" else None
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
        same = self._by_key.get(compiled.key)
        if same is None or same.gone is not None:
            try:
                same = self._snapshot(compiled)
            except psycopg.DataError as exc:  # the clause fails on the test's rows
                raise ShapeError("where", f"its query failed on the rows: {exc}") from None
            self._by_key[compiled.key] = same
            # Every shape is as its tables are now (all were read again above): what
            # was written before is not news to the next INSERT, UPDATE or DELETE.
            self._written()
        self._by_definition[definition] = same
        return same

    def _snapshot(self, shape: Shape) -> SandboxShape:
        self._handles += 1
        handle = f"sandbox-{self._handles}-{shape.key[:12]}"
        schema = _encode(schema_header(shape.table, shape.columns)).decode()
        sandboxed = SandboxShape(handle, shape, schema)
        if shape.dependencies:
            # Values no open shape reads have not been read again since: not reused.
            live = {id(v) for s in self._by_key.values() if s.gone is None for v in s.values}
            self._values = {k: v for k, v in self._values.items() if id(v) in live}
            deps = [self._values_of(subquery) for subquery in shape.dependencies]
            sandboxed.values = _reachable(deps)
            sandboxed.tables = (shape.table, *(t for v in sandboxed.values for t in v.tables))
            sandboxed.subquery = self._moves.shape(sandboxed, deps)
        try:
            rows, info = self._read_at_snapshot(*self._rows_query(sandboxed))
        except BaseException:
            if sandboxed.subquery is not None:
                sandboxed.subquery.close()  # its views no longer follow the values
            raise
        changes_only = shape.definition.log_mode == "changes_only"
        for (text,) in rows:
            key, row = _row(_decode(text))
            sandboxed.rows[key] = row
            if not changes_only:
                sandboxed.snapshot.append(text.encode())
        # The test's own transaction is visible to the snapshot (its rows are in it):
        # a client's wait_for_txid of it resolves on this, as on Electric's snapshot-end.
        sandboxed.snapshot.append(snapshot_end(info))
        return sandboxed

    def _values_of(self, subquery: Subquery) -> Values:
        """The values of ``subquery`` (read now if no shape of the test had it yet)."""
        values = self._values.get(subquery.key)
        if values is None:
            inner = [self._values_of(s) for s in subquery.dependencies]
            values = Values(subquery, inner)
            query, params = values.query()
            rows = self._in_savepoint(lambda: self._raw().execute(query, params).fetchall())
            values.counts = values.counted(rows)
            self._values[subquery.key] = values
        return values

    def refresh(self, written: set[int] | None = None) -> None:
        """Read the open shapes again (those reading a table in ``written``, or all);
        append the differences to their logs."""
        if self._reading or self._connection is None:
            return
        shapes = [
            s
            for s in self._by_key.values()
            if s.gone is None and (written is None or any(t.oid in written for t in s.tables))
        ]
        if not shapes:
            return
        self._stepped = False
        gone = False
        # The shapes' own rows first, read with their subqueries' values as they were.
        for sandboxed in shapes:
            if written is not None and sandboxed.shape.table.oid not in written:
                continue
            now = self._read_rows(sandboxed)
            if now is None:
                gone = True
            elif now != sandboxed.rows:
                self._changed(sandboxed, now)
        # Then the values of their subqueries, innermost first: the views of the shapes
        # hear what came and went, and the shapes move rows out and in.
        values = {id(v): v for s in shapes if s.gone is None for v in s.values}
        for v in sorted(values.values(), key=lambda v: v.layer):
            if written is not None and not any(t.oid in written for t in v.tables):
                continue
            query, params = v.query()

            def select(query: Any = query, params: list[object] = params) -> list[Any]:
                return self._raw().execute(query, params).fetchall()

            try:
                counts = v.counted(self._in_savepoint(select))
            except Exception as exc:  # noqa: BLE001 - its table was dropped or altered
                for sandboxed in shapes:
                    if v in sandboxed.values and sandboxed.subquery is not None:
                        self._moves.invalidate(
                            sandboxed.subquery, f"a subquery's SELECT failed: {exc}"
                        )
                gone = True
                continue
            if v.differs(counts):
                v.take(counts, self._txid())
        for subquery in self._moves.drain():
            sandboxed = subquery.consumer  # type: ignore[assignment]
            if sandboxed.gone is None:
                # What its clients have now: the rows after the moves.
                now = self._read_rows(sandboxed)
                if now is not None:
                    sandboxed.rows = now
            gone = gone or sandboxed.gone is not None
        for sandboxed in shapes:
            sandboxed.publish()
        if self._stepped or gone:
            for changed in self._watchers:
                changed()

    def _read_rows(self, sandboxed: SandboxShape) -> Rows | None:
        """The shape's rows now; None when its SELECT failed (the shape is gone)."""
        query, params = self._rows_query(sandboxed)

        def select() -> list[Any]:
            return self._raw().execute(query, params).fetchall()

        try:
            rows = self._in_savepoint(select)
        except Exception as exc:  # noqa: BLE001 - its table was dropped or altered
            self._invalidate(sandboxed, f"its SELECT failed: {exc}")
            return None
        return dict(_row(_decode(text)) for (text,) in rows)

    @staticmethod
    def _rows_query(sandboxed: SandboxShape) -> tuple[Any, list[object]]:
        subquery = sandboxed.subquery
        return row_json_query(
            sandboxed.shape, tagging=subquery.tagging if subquery is not None else None
        )

    def _invalidate(self, sandboxed: SandboxShape, reason: str) -> None:
        sandboxed.gone = reason
        if sandboxed.subquery is not None:
            sandboxed.subquery.close()

    def _changed(self, sandboxed: SandboxShape, now: Rows) -> None:
        """The shape's rows are ``now``: inserts, updates and deletes to its log (a row
        of a shape with subqueries carries its tags and active conditions, as the
        engine's changes do)."""
        shape = sandboxed.shape
        full = shape.definition.replica == "full"
        pk = shape.pk
        before = sandboxed.rows
        changes: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        """(operation, message, its tag headers)"""
        for key, (value, meta) in now.items():
            old = before.get(key)
            if old is None:
                changes.append(("insert", {"key": key, "value": value}, _tag_headers(meta)))
                continue
            old_value, old_meta = old
            if old_value == value and old_meta == meta:
                continue
            changed = {name: v for name, v in value.items() if old_value.get(name) != v}
            message: dict[str, Any] = {"key": key}
            if full and changed:
                message["value"] = value
                message["old_value"] = {name: old_value.get(name) for name in changed}
            else:
                # Nothing selected changed, only why the row is in the shape (its tags):
                # the key alone, as the engine sends it.
                message["value"] = {**{name: value[name] for name in pk}, **changed}
                if full:
                    message["old_value"] = {}
            tags = _tag_headers(meta)
            if meta is not None:
                tags["removed_tags"] = [t for t in old_meta[0] if t not in meta[0]]
            changes.append(("update", message, tags))
        for key, (old_value, old_meta) in before.items():
            if key not in now:
                value = old_value if full else {name: old_value[name] for name in pk}
                changes.append(("delete", {"key": key, "value": value}, _tag_headers(old_meta)))
        sandboxed.rows = now
        relation = [shape.table.schema, shape.table.name]
        lsn = str(self._step())
        txids = [self._txid()]
        entries = []
        for position, (operation, message, tags) in enumerate(changes):
            message["headers"] = {
                "operation": operation,
                "relation": relation,
                "lsn": lsn,
                "op_position": position,
                "txids": txids,
                **tags,
            }
            if position == len(changes) - 1:
                message["headers"]["last"] = True
            entries.append(_encode(message))
        self._append(sandboxed, entries)

    def _append(self, sandboxed: SandboxShape, entries: list[bytes]) -> None:
        sandboxed.append(self._step(), entries)

    def _step(self) -> int:
        """The sequence of this refresh's changes (the first append takes a new one)."""
        if not self._stepped:
            self._stepped = True
            self._sequence += 1
        return self._sequence

    def _txid(self) -> int:
        """The test transaction's id (the same for all its writes)."""
        if self._xid is None:
            conn = self._raw()
            row = self._in_savepoint(
                lambda: conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()
            )
            self._xid = int(row[0])
        return self._xid

    def _read_at_snapshot(self, query: Any, params: list[object]) -> tuple[list[Any], SnapshotInfo]:
        """The rows of ``query`` and the snapshot they were read at, in which the test's
        own transaction is visible."""
        conn = self._raw()

        def read() -> tuple[list[Any], Any]:
            return conn.execute(query, params).fetchall(), conn.execute(_SNAPSHOT_QUERY).fetchone()

        rows, (xmin, xmax, xip, own) = self._in_savepoint(read)
        xip = [int(x) for x in xip]
        if own is not None and int(own) >= int(xmax):
            # Postgres' xmax is the last completed xid + 1: the test's own transaction,
            # whose rows the snapshot holds, may be at or above it. The snapshot-end
            # says it is visible; the xids between were running, so they are not.
            xip.extend(range(int(xmax), int(own)))
            xmax = int(own) + 1
        return rows, SnapshotInfo(int(xmin), int(xmax), tuple(xip), 0)

    # -- the connection -------------------------------------------------------------

    def _after_statement(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        """Django's execute wrapper: after a statement that may have written, the shapes
        it may have changed are read again. A SELECT or a savepoint's creation or
        release writes nothing; after an INSERT, UPDATE or DELETE the tables written are
        known; anything else (raw SQL, TRUNCATE, ROLLBACK TO SAVEPOINT) may have
        written any table."""
        result = execute(sql, params, many, context)
        if not self._reading:
            word = sql.lstrip()[:9].upper()
            if word.startswith(("INSERT", "UPDATE", "DELETE")):
                self.refresh(self._written())
            elif not word.startswith(("SELECT", "SAVEPOINT", "RELEASE")):
                self.refresh()
        return result

    def _written(self) -> set[int] | None:
        """The tables (oids) of the open shapes whose rows the transaction wrote since
        this was last asked (None: unknown, any may have been). Postgres' counts include
        rows written by triggers and cascades; a TRUNCATE is not counted (it is not an
        INSERT, UPDATE or DELETE statement, after which every shape is read)."""
        if self._counts is None:
            return None
        written: set[int] = set()
        counted: dict[int, int] = {}  # the oid counted -> the shape's table
        for table in {t.oid: t for s in self._by_key.values() for t in s.tables}.values():
            if table.has_children:
                written.add(table.oid)  # rows of tables inheriting from it: not counted
            elif table.partitioned:
                counted.update((oid, table.oid) for oid, _, _ in table.partitions)
            else:
                counted[table.oid] = table.oid
        if counted:
            rows = self._in_savepoint(
                lambda: self._raw().execute(_COUNTS, [list(counted)]).fetchall()
            )
            for oid, count in rows:
                if self._counts.get(oid) != count:
                    self._counts[oid] = count
                    written.add(counted[oid])
        return written

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


def _row(message: dict[str, Any]) -> tuple[str, tuple[dict[str, Any], Any]]:
    """A row as the shape's SELECT encodes it: its key, (value, tags and conditions)."""
    headers = message["headers"]
    tags = headers.get("tags")
    meta = None if tags is None else (tags, headers["active_conditions"])
    return message["key"], (message["value"], meta)


def _tag_headers(meta: Any) -> dict[str, Any]:
    """The headers of a row of a shape with subqueries: its tags and active conditions
    (``meta``); none for another shape's."""
    return {} if meta is None else {"tags": meta[0], "active_conditions": meta[1]}


def _reachable(values: list[Values]) -> list[Values]:
    """``values`` and every subquery's values they read, each once."""
    found: dict[int, Values] = {}
    stack = list(values)
    while stack:
        v = stack.pop()
        if id(v) not in found:
            found[id(v)] = v
            stack.extend(v.inner)
    return list(found.values())


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

_COUNTS = (
    "SELECT o::int8, pg_stat_get_xact_tuples_inserted(o) + pg_stat_get_xact_tuples_updated(o) "
    "+ pg_stat_get_xact_tuples_deleted(o) FROM unnest(%s::oid[]) o"
)
