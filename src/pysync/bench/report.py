"""The results of a run: ``bench.json`` (every sample), ``report.md``, and the table
printed on the terminal. Both tables come from the same rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _n(value: Any, spec: str = ",.0f", unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:{spec}}{unit}"


def _mb(value: Any) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.1f} MB"


def _ratio(value: Any) -> str:
    return _n(value, ".2f")


def rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(measure, value) lines of the summary, in reading order."""
    phases = report["phases"]
    head = report["summary"]
    sync = phases.get("sync", {}).get("summary", {})
    server = head.get("server") or "the sync server"
    out: list[tuple[str, str]] = []
    if "none" in phases:
        out.append(("pgbench TPS, nothing attached", _n(head["tps_none"], ",.0f")))
    if "recvlogical" in phases:
        out.append(
            (
                "pgbench TPS, pg_recvlogical attached",
                f"{_n(head['tps_recvlogical'])} ({_ratio(head['recvlogical_ratio_none'])} of nothing)",
            )
        )
    out.append(
        (
            f"pgbench TPS, {server} attached ({sync.get('shapes', 0):,} shapes, "
            f"{sync.get('subscribers', 0):,} subscribers)",
            f"{_n(head['tps_sync'])}"
            + (
                f" ({_ratio(head['tps_ratio_none'])} of nothing)"
                if head.get("tps_ratio_none") is not None
                else ""
            ),
        )
    )
    out.append(("overhead: TPS ratio to pg_recvlogical attached", _ratio(head.get("tps_ratio"))))
    lag_note = (
        "" if sync.get("lag_max_bytes") is not None else " (no slot to watch: give --server-slot)"
    )
    out.append(
        (
            "replication lag, max during the load",
            f"{_n(sync.get('lag_max_s'), '.2f', ' s')} / {_mb(sync.get('lag_max_bytes'))}{lag_note}",
        )
    )
    out.append(("replication lag, p99 during the load", _n(sync.get("lag_p99_s"), ".2f", " s")))
    out.append(
        ("flush_lag (pg_stat_replication), max", _n(sync.get("flush_lag_max_s"), ".3f", " s"))
    )
    out.append(("caught up after the load ended", _n(sync.get("caught_up_after_s"), ".2f", " s")))
    latency = sync.get("latency", {})
    out.append(
        (
            "commit-to-client latency p50 / p95 / p99 / max",
            " / ".join(_n(latency.get(k), ".1f") for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
            + " ms",
        )
    )
    out.append(
        (
            "latency samples (marker commits x marker subscribers)",
            f"{latency.get('samples', 0):,} of {latency.get('expected_samples', 0):,}",
        )
    )
    messages = sync.get("messages_per_s", {})
    out.append(
        (
            "messages delivered per second, mean / max",
            f"{_n(messages.get('mean'))} / {_n(messages.get('max'))}",
        )
    )
    committed, ingested = sync.get("committed_per_s", {}), sync.get("ingested_per_s", {})
    out.append(
        (
            "row changes per second, committed / ingested (mean)",
            f"{_n(committed.get('mean'))} / {_n(ingested.get('mean'))}",
        )
    )
    out.append(
        (
            "engine CPU seconds during the load (per row change ingested)",
            f"{_n(sync.get('engine_cpu_s'), '.2f', ' s')} "
            f"({_n(sync.get('engine_cpu_us_per_change'), '.1f', ' us')})",
        )
    )
    out.append(("engine peak RSS", _mb(sync.get("engine_peak_rss"))))
    out.append(("subscriber process CPU seconds", _n(sync.get("subscribers_cpu_s"), ".2f", " s")))
    drain = report.get("drain")
    if drain:

        def took(who: str) -> str:
            text = f"{drain[who + '_s']:.2f} s"
            if not drain.get(who + "_complete", True):
                text += f" (stopped at {drain[who + '_drained']:,} rows)"
            return text

        out.append(
            (
                "backlog drain: pg_recvlogical / pysync",
                f"{took('recvlogical')} / {took('pysync')} for {drain['row_changes']:,} row changes "
                f"({_mb(drain['wal_bytes'])} of WAL)",
            )
        )
        out.append(
            ("backlog drain ratio (pysync rate / pg_recvlogical rate)", _ratio(drain.get("ratio")))
        )
    consistency = sync.get("consistency", {})
    behind = (
        "; the server had not caught up"
        if sync.get("lag_max_bytes") is not None and sync.get("caught_up_after_s") is None
        else ""
    )
    out.append(
        (
            "consistency: subscribers' rows = SELECT of their shape",
            "ok"
            if consistency.get("ok")
            else f"FAILED ({consistency.get('mismatched_count', '?')} subscribers differ{behind})",
        )
    )
    deliveries = sync.get("deliveries", {})
    out.append(
        (
            "deliveries: received / expected change messages",
            f"{_n(deliveries.get('delivered'))} / {_n(deliveries.get('expected'))}"
            + ("" if deliveries.get("ok") else " (MISMATCH)"),
        )
    )
    return out


PROFILE_COLUMNS = ("stage (py-spy samples of the server)", "samples", "share", "µs per row change")
CORES_COLUMNS = ("process, during the load", "CPU seconds", "share of the machine's cores")


def profile_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """With ``--profile``: the server's samples per pipeline stage."""
    engine = report["phases"].get("sync", {}).get("profile", {}).get("engine", {})
    samples = engine.get("samples")
    if not samples:
        return []
    shares, micros = engine["shares"], engine.get("us_per_change", {})
    return [
        (stage, f"{count:,}", _n(shares[stage], ".1%"), _n(micros.get(stage), ".1f"))
        for stage, count in samples.items()
    ]


def cores_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """CPU seconds of each process during the sync phase's load, and their share of all
    the machine's cores over that time (the subscribers' own share is the bench's)."""
    sync = report["phases"].get("sync", {}).get("summary", {})
    seconds, cpus = sync.get("load_end_s"), report["machine"].get("cpus")
    if not seconds or not cpus or sync.get("machine_cpu_s") is None:
        return []
    parts = [
        ("pysync serve (the engine)", sync.get("engine_cpu_s")),
        ("subscribers (the bench's clients)", sync.get("subscribers_cpu_s")),
        ("Postgres (pgbench's backends, walsender)", sync.get("postgres_cpu_s")),
    ]
    known = sum(v for _, v in parts if v is not None)
    parts.append(("the rest (pgbench, the bench, other jobs)", sync["machine_cpu_s"] - known))
    parts.append(("idle", cpus * seconds - sync["machine_cpu_s"]))
    return [
        (name, _n(value, ".1f"), _n(None if value is None else value / (cpus * seconds), ".1%"))
        for name, value in parts
    ]


def print_table(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"pysync bench: {report['summary'].get('server')}", show_header=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for measure, value in rows(report):
        table.add_row(measure, value)
    console.print(table)
    for columns, lines in (
        (PROFILE_COLUMNS, profile_rows(report)),
        (CORES_COLUMNS, cores_rows(report) if profile_rows(report) else []),
    ):
        if lines:
            extra = Table()
            for i, column in enumerate(columns):
                extra.add_column(column, justify="left" if i == 0 else "right")
            for line in lines:
                extra.add_row(*line)
            console.print(extra)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1) + "\n")


def markdown(report: dict[str, Any], plots: list[str], headline: str) -> str:
    opts = report["options"]
    target = report.get("target", {})
    database = report.get("database", {})
    machine = report["machine"]
    workload = f"custom ({Path(opts['script']).name})" if opts.get("script") else opts["workload"]
    lines = [
        "# pysync bench report",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- started {report['started']}, {report.get('seconds', '?')} s in all",
        f"- machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}, "
        f"load average at start {', '.join(str(x) for x in machine['load_average'])}",
        f"- hot modules: {machine.get('implementation_detail', 'not recorded')}",
        f"- database: {database.get('kind')}, PostgreSQL {database.get('server_version')}, "
        f"pgbench scale {database.get('scale')}",
        f"- server measured: **{target.get('server')}** ({'managed by the bench' if target.get('managed') else target.get('url')}), "
        f"subscribers use {target.get('live')}",
        f"- workload: pgbench {workload}, {opts['clients']} clients, {opts['jobs']} jobs, "
        f"{opts['duration']:g} s per phase"
        + (f", rate {opts['rate']:g}/s" if opts.get("rate") else ""),
        f"- shapes: {opts['shapes']:,}; subscribers: {opts['subscribers']:,} "
        f"({opts['marker_subscribers']} on the latency marker, written every {opts['marker_interval'] * 1000:g} ms)",
        "",
        "| measure | value |",
        "|---|---:|",
    ]
    lines += [f"| {m} | {v} |" for m, v in rows(report)]
    by_kind = (
        report["phases"].get("sync", {}).get("summary", {}).get("deliveries", {}).get("by_kind", {})
    )
    if by_kind:
        lines += [
            "",
            "Deliveries by shape kind:",
            "",
            "| kind | subscribers | delivered | expected |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {k} | {v['subscribers']:,} | {v['delivered']:,} | {v['expected']:,} |"
            for k, v in by_kind.items()
        ]
    for columns, table in (
        (PROFILE_COLUMNS, profile_rows(report)),
        (CORES_COLUMNS, cores_rows(report) if profile_rows(report) else []),
    ):
        if table:
            lines += [
                "",
                "| " + " | ".join(columns) + " |",
                "|---" + "|---:" * (len(columns) - 1) + "|",
            ]
            lines += ["| " + " | ".join(line) + " |" for line in table]
    for title, name in (
        ("Commit-to-client latency", "latency.png"),
        ("Replication lag", "lag.png"),
        ("Throughput", "throughput.png"),
    ):
        if name in plots:
            lines += ["", f"![{title}]({name})"]
    lines += ["", "```", headline, "```", ""]
    return "\n".join(lines)
