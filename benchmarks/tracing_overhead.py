#!/usr/bin/env python
"""Tracing benchmark: what a span per transaction costs ingest (``pysync[otel]``).

Run from the repository root::

    python benchmarks/tracing_overhead.py [--changes N] [--repeats R]

As ``routing.py`` (whose helpers it uses): a private Postgres only to validate shapes,
100 shapes ``user_id = $1`` registered as ready consumers with in-memory logs in an
engine that is never started, synthetic transactions of real ``Change`` structs applied
the way ingest applies them (``Ingest.applier()``), each change touching one shape.
Three engines, passes interleaved so that load from other processes hits them alike:

- off: no tracer (the default): transactions go straight to ``Collector.apply``;
- on, spans dropped: ``OtelTracer`` with a batch processor whose exporter discards
  (what making the spans costs);
- on, OTLP: the same with the real OTLP/HTTP exporter posting to a local sink (another
  process on 127.0.0.1), so the batch thread encodes and gzips as in production;
- on, OTLP, 1% sampled: as the SDK samples with ``OTEL_TRACES_SAMPLER=traceidratio``
  and ``OTEL_TRACES_SAMPLER_ARG=0.01`` (an unsampled span is not recorded nor exported).

The batch processors' queues hold a whole pass (the SDK's default, 2,048 spans, would
drop spans that a tight loop makes faster than they are exported, hiding their cost).

Times are CPU time of this whole process (``time.process_time``: the batch processor's
export thread counts), best of the warm passes, for 1 and for 50 changes per
transaction. The last line printed is::

    tracing overhead per transaction (1 change): X.X us, Y.Y% (1% sampled: Z.Z us)
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, TraceIdRatioBased

from hot_path import hot_path
from pysync.engine import Engine
from pysync.otel import OtelTracer
from pysync.postgres.cluster import free_port, temporary_cluster
from pysync.postgres.pgoutput import Relation
from pysync.shapes.definition import Shape
from pysync.tracing import NO_TRACER, Tracer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from routing import make_transactions, register, relation_of, user_shape  # noqa: E402

DBNAME = "bench"
SHAPES = 100
SINK = """
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def say(text: str = "") -> None:
    print(text, flush=True)


def tracer_with(exporter: SpanExporter, queue: int, sampler: Sampler = ALWAYS_ON) -> OtelTracer:
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue))
    return OtelTracer(provider)


class Run:
    def __init__(self, url: str, shapes: list[Shape], label: str, tracer: Tracer) -> None:
        self.engine = Engine(url, storage_dir=None, tracer=tracer)
        register(self.engine, shapes)
        self.label = label
        self.tracer = tracer
        self.best: dict[int, float] = {}
        self.xid = 1000
        self.lsn = 1_000_000

    def apply_pass(self, relation: Relation, changes: int, txn_size: int) -> None:
        txns = make_transactions(
            relation,
            changes,
            txn_size,
            lambda i: (i % SHAPES, f"todo {i}"),
            self.xid,
            self.lsn,
        )
        self.xid = txns[-1].xid + 1
        self.lsn = txns[-1].end_lsn + 1000
        apply = self.engine.ingest.applier()
        gc.collect()
        start = time.process_time()
        for txn in txns:
            apply(txn)
        if self.tracer.enabled:
            # The batch thread's export of these spans counts too.
            assert isinstance(self.tracer, OtelTracer)
            self.tracer.provider.force_flush()
        seconds = time.process_time() - start
        per_txn = seconds / len(txns)
        self.best[txn_size] = min(self.best.get(txn_size, per_txn), per_txn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50_000, help="changes per pass")
    parser.add_argument("--repeats", type=int, default=5, help="warm passes (best counts)")
    args = parser.parse_args()
    print(hot_path(), flush=True)
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    try:
        with temporary_cluster() as cluster:
            say(
                f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {SHAPES} shapes, "
                f"{args.changes:,} changes per pass"
            )
            with psycopg.connect(cluster.url(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {DBNAME}")
            url = cluster.url(DBNAME)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE todos (id int PRIMARY KEY, user_id int, title text, done bool)"
                )
                relation = relation_of(conn)
                shapes = [user_shape(conn, u) for u in range(SHAPES)]
            from opentelemetry.exporter.otlp.proto.http import Compression
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            def otlp() -> OTLPSpanExporter:
                return OTLPSpanExporter(
                    endpoint=f"http://127.0.0.1:{port}/v1/traces", compression=Compression.Gzip
                )

            queue = args.changes + 1
            runs = [
                Run(url, shapes, "off", NO_TRACER),
                Run(url, shapes, "on, spans dropped", tracer_with(Discard(), queue)),
                Run(url, shapes, "on, OTLP to 127.0.0.1", tracer_with(otlp(), queue)),
                Run(
                    url,
                    shapes,
                    "on, OTLP, 1% sampled",
                    tracer_with(otlp(), queue, TraceIdRatioBased(0.01)),
                ),
            ]
            for txn_size in (1, 50):
                for run in runs:  # cold: converters built, clauses bound
                    run.apply_pass(relation, args.changes, txn_size)
                for r in range(args.repeats):
                    for run in runs if r % 2 == 0 else runs[::-1]:
                        run.apply_pass(relation, args.changes, txn_size)
            for run in runs:
                if isinstance(run.tracer, OtelTracer):
                    run.tracer.shutdown()
    finally:
        sink.terminate()
        sink.wait()
    off = runs[0].best
    for txn_size in (1, 50):
        say(f"\n{txn_size} change(s) per transaction: CPU per transaction (best pass)")
        for run in runs:
            cost = run.best[txn_size]
            extra = cost - off[txn_size]
            say(
                f"  {run.label:<24} {cost * 1e6:8.1f} us   "
                f"{'' if run is runs[0] else f'{extra * 1e6:+.1f} us ({extra / off[txn_size]:+.0%})'}"
            )
    extra = runs[2].best[1] - off[1]
    sampled = runs[3].best[1] - off[1]
    say(
        f"tracing overhead per transaction (1 change): {extra * 1e6:.1f} us, "
        f"{extra / off[1] * 100:.1f}% (1% sampled: {sampled * 1e6:.1f} us)"
    )


if __name__ == "__main__":
    main()
