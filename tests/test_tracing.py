"""OpenTelemetry traces (``pysync[otel]``): a span per shape request and per committed
transaction, with Electric's names and attributes, exported over OTLP/HTTP when
configured; without configuration ``opentelemetry`` is never imported."""

from __future__ import annotations

import gzip
import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

import pysync
from http_support import until
from pysync.config import SettingsError, env_origins, from_env, make_settings
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.otel import FLUSH_MS, OtelTracer, traces_url
from pysync.postgres.cluster import free_port
from pysync.shapes.definition import ShapeDefinition
from serve_process import ServeProcess

TXN_SPAN = "pg_txn.replication_client.transaction_received"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class Traced:
    """An engine and its app, tracing into memory."""

    def __init__(self, engine: Engine, api: ShapeAPI, exporter: InMemorySpanExporter) -> None:
        self.engine = engine
        self.exporter = exporter
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://pysync.test"
        )

    def spans(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]

    def span(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        assert len(found) == 1, [span.name for span in self.exporter.get_finished_spans()]
        return found[0]


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[Traced]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 'one')")
        conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    engine = Engine(database_url, flush_interval=0.02, tracer=tracer)
    await engine.start()
    api = ShapeAPI(engine, long_poll_timeout=5.0, tracer=tracer)
    traced = Traced(engine, api, exporter)
    try:
        yield traced
    finally:
        await traced.http.aclose()
        await engine.stop()
        tracer.shutdown()


async def test_a_shape_request_is_a_server_span_under_the_callers_trace(traced: Traced) -> None:
    response = await traced.http.get(
        "/v1/shape",
        params={"table": "items", "offset": "-1", "where": "id > 0", "params[1]": "secret-ish"},
        headers={"traceparent": TRACEPARENT, "user-agent": "tracing-test"},
    )
    assert response.status_code == 200, response.text
    request = traced.span("Plug_shape_get")
    assert request.kind is SpanKind.SERVER
    # A child of the caller's span, in the caller's trace (W3C traceparent).
    assert request.parent is not None and request.parent.is_remote
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert format(request.context.trace_id, "032x") == TRACE_ID
    attributes = dict(request.attributes or {})
    assert attributes["shape.root_table"] == "items"
    assert attributes["shape.where"] == "id > 0"
    assert attributes["shape_req.offset"] == "-1"
    assert attributes["shape_req.is_live"] is False
    assert attributes["shape.handle"] == response.headers["electric-handle"]
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.request.method"] == "GET"
    assert attributes["user_agent.original"] == "tracing-test"
    assert attributes["shape_req.is_error"] is False
    assert attributes["http.response.body.size"] == len(response.content)
    # Nothing of the query string beyond the shape's own fields: no params, no secret.
    assert not any("secret-ish" in str(value) for value in attributes.values())
    # The new shape's snapshot ran under the request that made it; the body was sent in
    # chunk spans of the request. (The snapshot task ends after the data is served: it
    # records the shape then.)
    await until(lambda: bool(traced.spans("shape_snapshot.create_snapshot_task")), what="snapshot")
    snapshot = traced.span("shape_snapshot.create_snapshot_task")
    assert snapshot.parent is not None and snapshot.parent.span_id == request.context.span_id
    assert snapshot.context.trace_id == request.context.trace_id
    assert snapshot.attributes is not None
    assert snapshot.attributes["shape.handle"] == response.headers["electric-handle"]
    chunks = traced.spans("shape_get.plug.stream_chunk")
    assert chunks and all(
        chunk.parent is not None and chunk.parent.span_id == request.context.span_id
        for chunk in chunks
    )
    sizes = [dict(chunk.attributes or {})["chunk_size"] for chunk in chunks]
    assert sum(int(size) for size in sizes if isinstance(size, int)) == len(response.content)


async def test_without_or_with_a_bad_traceparent_a_request_starts_its_own_trace(
    traced: Traced,
) -> None:
    first = await traced.http.get("/v1/shape", params={"table": "items", "offset": "-1"})
    bad = await traced.http.get(
        "/v1/shape",
        params={"table": "items", "offset": "-1"},
        headers={"traceparent": "00-not-a-trace-01"},
    )
    assert (first.status_code, bad.status_code) == (200, 200)
    spans = traced.spans("Plug_shape_get")
    assert len(spans) == 2
    assert all(span.parent is None for span in spans)
    assert spans[0].context.trace_id != spans[1].context.trace_id


async def test_errors_are_spans_too_a_5xx_is_an_error_status(traced: Traced) -> None:
    missing = await traced.http.get("/v1/shape", params={"table": "nope", "offset": "-1"})
    assert missing.status_code == 400
    span = traced.span("Plug_shape_get")
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 400
    assert span.attributes["shape_req.is_error"] is True
    assert span.status.status_code is StatusCode.UNSET  # the client's error, not ours
    traced.exporter.clear()
    await traced.engine.stop()  # the database can no longer be asked: a 503
    refused = await traced.http.get("/v1/shape", params={"table": "other", "offset": "-1"})
    assert refused.status_code >= 500
    span = traced.span("Plug_shape_get")
    assert span.status.status_code is StatusCode.ERROR


async def test_a_committed_transaction_is_one_span_with_what_it_did(
    traced: Traced, database_url: str
) -> None:
    items = {"table": "items", "where": "id < 100"}
    first = await traced.http.get("/v1/shape", params={**items, "offset": "-1"})
    # A shape on other that no row matches: its table is replicated, nothing appended.
    none = await traced.http.get(
        "/v1/shape", params={"table": "other", "where": "id < 0", "offset": "-1"}
    )
    assert (first.status_code, none.status_code) == (200, 200)
    handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
    live = traced.http.get(
        "/v1/shape", params={**items, "offset": offset, "handle": handle, "live": "true"}
    )
    with psycopg.connect(database_url) as conn:
        xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO items VALUES (2, 'two'), (3, 'three'), (500, 'out')")
        conn.execute("UPDATE items SET title = 'uno' WHERE id = 1")
        conn.execute("INSERT INTO other VALUES (1)")
    response = await live
    assert response.status_code == 200

    def of(xid: int) -> list[ReadableSpan]:
        return [s for s in traced.spans(TXN_SPAN) if s.attributes and s.attributes["xid"] == xid]

    await until(lambda: bool(of(xid)), what="the transaction's span")
    [span] = of(xid)
    attributes = dict(span.attributes or {})
    changes = [m for m in response.json() if "key" in m]
    assert len(changes) == 3
    assert attributes["num_changes"] == 5
    assert attributes["num_relations"] == 2
    assert attributes["shape_log_collector.affected_shape_count"] == 1
    assert attributes["lsn"] == int(changes[0]["headers"]["lsn"])
    # The bytes appended: the entries as stored, i.e. as served.
    assert attributes["num_bytes"] == sum(len(msgspec.json.encode(m)) for m in changes)
    assert span.parent is None and span.kind is SpanKind.INTERNAL
    # A transaction no shape takes anything of is a span too, touching none.
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO other VALUES (2) RETURNING txid_current()").fetchone()
    assert row is not None
    await until(lambda: bool(of(row[0])), what="the second transaction's span")
    attributes = dict(of(row[0])[0].attributes or {})
    assert attributes["shape_log_collector.affected_shape_count"] == 0
    assert (attributes["num_bytes"], attributes["num_changes"]) == (0, 1)


def test_settings_from_electric_variables() -> None:
    env = {
        "ELECTRIC_OTLP_ENDPOINT": "http://collector:4318",
        "ELECTRIC_OTEL_DEBUG": "true",
        "ELECTRIC_SERVICE_NAME": "sync",
        "ELECTRIC_INSTANCE_ID": "one",
    }
    settings = make_settings(from_env(env))
    assert settings.otlp_endpoint == "http://collector:4318"
    assert settings.otel_debug is True
    assert (settings.service_name, settings.instance_id) == ("sync", "one")
    assert make_settings({}).service_name == "pysync"
    env = {"ELECTRIC_OTLP_ENDPOINT": "collector:4318"}
    with pytest.raises(SettingsError, match="^invalid ELECTRIC_OTLP_ENDPOINT 'collector:4318'"):
        make_settings(from_env(env), env_origins(env))
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://api.example.com/otlp/v1/traces") == (
        "https://api.example.com/otlp/v1/traces"
    )


# -- pysync serve -----------------------------------------------------------------------


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.received.append((self.path, headers, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    """A local OTLP/HTTP endpoint that keeps what it is sent."""
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _spans(received: list[tuple[str, dict[str, str], bytes]]) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) of every span posted."""
    found: list[tuple[dict[str, Any], Any]] = []
    for _, headers, body in received:
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                found.extend((resource, span) for span in scope.spans)
    return found


@pytest.mark.parametrize("workers", ["0", "1"])
def test_serve_exports_request_and_transaction_spans_to_the_otlp_endpoint(
    database_url: str,
    tmp_path: Path,
    collector: tuple[str, list[tuple[str, dict[str, str], bytes]]],
    workers: str,
) -> None:
    """With --workers, the worker exports its requests' spans, the replicating process
    its transactions'."""
    endpoint, received = collector
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    port = free_port()
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "storage",
        "--workers",
        workers,
        long_poll_timeout=10,
        env={
            "ELECTRIC_OTLP_ENDPOINT": endpoint,
            "ELECTRIC_OTEL_DEBUG": "true",
            "ELECTRIC_SERVICE_NAME": "my-sync",
            "ELECTRIC_INSTANCE_ID": "instance-7",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 100 ms, not every 5 s
        },
    )
    try:
        base = f"http://127.0.0.1:{port}/v1/shape"
        first = httpx.get(base, params={"table": "items", "offset": "-1"})
        assert first.status_code == 200
        live: list[httpx.Response] = []
        params = {
            "table": "items",
            "offset": first.headers["electric-offset"],
            "handle": first.headers["electric-handle"],
            "live": "true",
        }
        waiting = threading.Thread(target=lambda: live.append(httpx.get(base, params=params)))
        waiting.start()
        time.sleep(0.3)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (1)")
        waiting.join(15)
        assert live and live[0].status_code == 200

        def names() -> set[str]:
            return {span.name for _, span in _spans(received)}

        deadline = time.monotonic() + 15
        while (
            not {"Plug_shape_get", TXN_SPAN} <= names()
            or len([s for _, s in _spans(received) if s.name == "Plug_shape_get"]) < 2
        ):
            assert time.monotonic() < deadline, (names(), server.output())
            time.sleep(0.1)
    finally:
        server.stop()
    path, headers, _ = received[0]
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["content-encoding"] == "gzip"  # as Electric sends them
    spans = _spans(received)
    resource = spans[0][0]
    assert resource["service.name"] == "my-sync"
    assert resource["service.instance.id"] == "instance-7"
    # The long-poll has its span too (tracing takes it through the app).
    live_spans = [
        span
        for _, span in spans
        if span.name == "Plug_shape_get"
        and any(a.key == "shape_req.is_live" and a.value.bool_value for a in span.attributes)
    ]
    assert len(live_spans) == 1
    # ELECTRIC_OTEL_DEBUG: the spans are printed too.
    assert '"name": "Plug_shape_get"' in server.output()


def test_serve_without_the_extra_warns_once_and_serves(database_url: str, tmp_path: Path) -> None:
    # opentelemetry made unimportable for the server (as when pysync[otel] is not installed).
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no opentelemetry here')\n")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    port = free_port()
    pythonpath = [str(shadow.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "storage",
        env={"ELECTRIC_OTLP_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": ":".join(pythonpath)},
    )
    try:
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/shape", params={"table": "items", "offset": "-1"}
        )
        assert response.status_code == 200
    finally:
        server.stop()
    warnings = [line for line in server.lines if "pysync[otel]" in line]
    assert len(warnings) == 1, server.output()
    assert "pip install 'pysync[otel]'" in warnings[0]
    assert not [line for line in server.lines if "has no effect" in line]


NOT_CONFIGURED = textwrap.dedent(
    """
    import asyncio, sys
    import httpx, psycopg
    from pysync import tracing
    from pysync.config import from_env, make_settings
    from pysync.engine import Engine
    from pysync.http.api import ShapeAPI

    async def main(url):
        settings = make_settings(from_env())
        tracer = tracing.from_settings(settings)
        engine = Engine.from_settings(url, settings, in_memory=True, tracer=tracer)
        await engine.start()
        api = ShapeAPI.from_settings(engine, settings, tracer)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://t"
        ) as http:
            first = await http.get("/v1/shape", params={"table": "items", "offset": "-1"})
            assert first.status_code == 200
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO items VALUES (1)")
            live = await http.get("/v1/shape", params={
                "table": "items", "live": "true",
                "handle": first.headers["electric-handle"],
                "offset": first.headers["electric-offset"],
            })
            assert live.status_code == 200 and len(live.json()) == 2, live.text
        await engine.stop()

    asyncio.run(main(sys.argv[1]))
    print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
    """
)


def test_without_configuration_opentelemetry_is_never_imported(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    env = {
        name: value
        for name, value in os.environ.items()
        if "OTLP" not in name and "OTEL" not in name
    }
    result = subprocess.run(
        [sys.executable, "-c", NOT_CONFIGURED, database_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


async def test_sampled_out_transactions_are_applied_and_export_nothing(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)  # as OTEL_TRACES_SAMPLER=always_off
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    engine = Engine(database_url, flush_interval=0.02, tracer=tracer)
    await engine.start()
    try:
        api = ShapeAPI(engine, long_poll_timeout=5.0, tracer=tracer)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://pysync.test"
        ) as http:
            first = await http.get("/v1/shape", params={"table": "items", "offset": "-1"})
            live = http.get(
                "/v1/shape",
                params={
                    "table": "items",
                    "live": "true",
                    "handle": first.headers["electric-handle"],
                    "offset": first.headers["electric-offset"],
                },
            )
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("INSERT INTO items VALUES (1)")
            response = await live
        assert [m["value"] for m in response.json() if "key" in m] == [{"id": "1"}]
        assert exporter.get_finished_spans() == ()
    finally:
        await engine.stop()
        tracer.shutdown()


async def test_an_embedded_sync_traces_its_engine(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    # Debug only: spans printed to stdout, nothing exported.
    async with pysync.Sync(database_url, in_memory=True, env=False, otel_debug=True) as sync:
        consumer = await sync.engine.shape(ShapeDefinition.create("items"))
        assert await consumer.wait(None, 10, until_snapshot=True)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (1)")
        printed = ""

        def seen() -> bool:
            nonlocal printed
            printed += capsys.readouterr().out
            return f'"name": "{TXN_SPAN}"' in printed

        await until(seen, timeout=10, what="the transaction's span printed")
    assert '"name": "shape_snapshot.create_snapshot_task"' in printed
    assert '"service.name": "pysync"' in printed


def test_shutdown_with_the_collector_down_is_bounded() -> None:
    # Nothing listens there: the exporter would retry for 10 s, holding up pysync's stop.
    tracer = OtelTracer.from_settings(
        make_settings({"otlp_endpoint": f"http://127.0.0.1:{free_port()}"})
    )
    with tracer.span("work", {}):
        pass
    started = time.monotonic()
    tracer.shutdown()
    assert time.monotonic() - started < FLUSH_MS / 1000 + 2
