"""/metrics carries Electric's names for what pysync and Electric both measure (so an
Electric dashboard works unchanged), also on a port of its own."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pysync.config import SettingsError, make_settings
from pysync.engine import Engine
from pysync.http.api import ShapeAPI
from pysync.postgres.cluster import free_port
from serve_process import ServeProcess

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        found[(name, pairs)] = float(value)
    return found


def value(
    page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


REQUESTS = "electric_plug_serve_shape_requests_count"


def test_shape_requests_and_admission_under_electric_names(
    database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 0)")
    port, metrics_port = free_port(), free_port()
    server = ServeProcess.on(
        database_url,
        port,
        tmp_path / "storage",
        "--max-existing-requests",
        "1",
        "--log-level",
        "info",  # its "shutdown complete": SIGTERM still stops the API's server
        long_poll_timeout=20,
        env={"ELECTRIC_PROMETHEUS_PORT": str(metrics_port)},
    )
    base = f"http://127.0.0.1:{port}"

    def scrape(url: str = f"http://127.0.0.1:{metrics_port}/metrics") -> Any:
        response = httpx.get(url)
        assert response.status_code == 200
        return samples(response.text)

    try:
        page = scrape()
        assert value(page, "electric_admission_control_acquire_limit", kind="initial") == 300
        assert value(page, "electric_admission_control_acquire_limit", kind="existing") == 1
        assert value(page, "electric_admission_control_reject_limit", kind="existing") == 1
        assert (
            "electric_admission_control_reject_count",
            frozenset({("kind", "existing")}),
        ) in page
        assert (
            value(page, REQUESTS, status="200", known_error="false", live="false", empty="false")
            == 0
        )

        first = httpx.get(f"{base}/v1/shape", params={"table": "items", "offset": "-1"})
        assert first.status_code == 200
        bad = httpx.get(f"{base}/v1/shape", params={"table": "items", "offset": "bad"})
        assert bad.status_code == 400
        page = scrape()
        assert (
            value(page, REQUESTS, status="200", known_error="false", live="false", empty="false")
            == 1
        )
        assert (
            value(page, REQUESTS, status="400", known_error="false", live="false", empty="false")
            == 1
        )
        assert value(page, "electric_shape_response_size_bytes_count", is_live="false") == 2
        assert value(page, "electric_shape_response_size_bytes_sum", is_live="false") == len(
            first.content
        ) + len(bad.content)

        handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
        live = {"table": "items", "handle": handle, "offset": offset, "live": "true"}
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(httpx.get(f"{base}/v1/shape", params=live, timeout=30))
        )
        waiting.start()
        until(
            lambda: (
                value(scrape(), "electric_admission_control_acquire_current", kind="existing") == 1
            )
        )
        refused = httpx.get(f"{base}/v1/shape", params=live)
        assert refused.status_code == 503
        page = scrape()
        assert value(page, "electric_admission_control_reject_count", kind="existing") == 1
        assert (
            value(page, REQUESTS, status="503", known_error="true", live="true", empty="false") == 1
        )

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE items SET n = 1 WHERE id = 1")
        waiting.join(30)
        assert answers and answers[0].status_code == 200
        page = scrape()
        assert (
            value(page, REQUESTS, status="200", known_error="false", live="true", empty="false")
            == 1
        )
        assert value(page, "electric_admission_control_acquire_current", kind="existing") == 0
        assert value(page, "electric_shape_response_size_bytes_sum", is_live="true") == len(
            answers[0].content
        ) + len(refused.content)
        # The shape API's own /metrics has them too, and the metrics port nothing else.
        assert (
            value(
                scrape(f"{base}/metrics"),
                REQUESTS,
                status="503",
                known_error="true",
                live="true",
                empty="false",
            )
            == 1
        )
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/v1/shape").status_code == 404
    finally:
        assert server.stop(), server.output()


async def test_slot_wal_gauges_follow_what_the_slot_retains(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL)")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        api = ShapeAPI(engine)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://t"
        ) as http:
            await engine.pause_replication()  # nothing more is confirmed
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO items SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g"
                )
            page = samples((await http.get("/metrics")).text)
            lag = value(page, "electric_postgres_replication_slot_confirmed_flush_lsn_lag")
            retained = value(page, "electric_postgres_replication_slot_retained_wal_size")
            assert lag >= 2_000_000  # the 2 MB written since
            assert retained >= lag
    finally:
        await engine.stop()


async def test_a_live_request_answered_without_changes_is_empty(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        api = ShapeAPI(engine, long_poll_timeout=0.3)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://t"
        ) as http:
            first = await http.get("/v1/shape", params={"table": "items", "offset": "-1"})
            live = {
                "table": "items",
                "handle": first.headers["electric-handle"],
                "offset": first.headers["electric-offset"],
                "live": "true",
            }
            waited = await http.get("/v1/shape", params=live)
            assert waited.status_code == 200
            now = await http.get("/v1/shape", params={**live, "offset": "now", "live": "false"})
            assert now.status_code == 200
            page = samples((await http.get("/metrics")).text)
        labels = {"status": "200", "known_error": "false"}
        assert value(page, REQUESTS, **labels, live="true", empty="true") == 1
        # offset=now has no changes either, but Electric counts only live ones as empty.
        assert value(page, REQUESTS, **labels, live="false", empty="false") == 2
        assert value(page, REQUESTS, **labels, live="false", empty="true") == 0
    finally:
        await engine.stop()


def test_prometheus_port_must_differ_from_the_api_port() -> None:
    with pytest.raises(SettingsError, match="PYSYNC_PROMETHEUS_PORT"):
        make_settings(
            {"port": 3000, "prometheus_port": 3000}, {"prometheus_port": "PYSYNC_PROMETHEUS_PORT"}
        )


def test_a_taken_prometheus_port_is_named(database_url: str, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        server = ServeProcess(
            [
                "--database-url",
                database_url,
                "--port",
                str(free_port()),
                "--storage-dir",
                str(tmp_path / "storage"),
                "--prometheus-port",
                str(taken.getsockname()[1]),
            ]
        )
        assert server.wait_exit(60) == 1, server.output()
        assert "Choose another --prometheus-port." in server.output()
    finally:
        taken.close()


async def test_a_second_api_on_an_engine_leaves_one_family_per_name(database_url: str) -> None:
    engine = Engine(database_url, flush_interval=0.02)
    await engine.start()
    try:
        ShapeAPI(engine, max_existing_requests=5)
        api = ShapeAPI(engine, max_existing_requests=7)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app()), base_url="http://t"
        ) as http:
            text = (await http.get("/metrics")).text
        types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types))
        page = samples(text)
        assert value(page, "electric_admission_control_acquire_limit", kind="existing") == 7
    finally:
        await engine.stop()
