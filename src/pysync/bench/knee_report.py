"""The results of ``pysync bench --find-knee``: the steps' table (terminal and
``report.md``), the last line, and ``knee.svg``. ``bench.json`` holds every step."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from pysync.bench.progress import fmt

COLUMNS = (
    "attached",
    "-R (TPS)",
    "TPS reached",
    "row changes/s committed",
    "lag max",
    "p50 / p99",
    "verdict",
)


def step_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per step, in the order they ran (the baseline ladder first)."""
    knee = report["knee"]
    rows: list[tuple[str, ...]] = []
    for step in knee["baseline_steps"]:
        rows.append(
            (
                "pg_recvlogical",
                f"{step['rate']:,g}",
                fmt(step["tps"], ",.0f"),
                f"{step['committed_per_s']:,.0f}",
                fmt(step["lag_max_s"], ".2f", " s"),
                "",
                "reached" if step["reached"] else "pgbench below its -R",
            )
        )
    for step in knee["sync_steps"]:
        verdict = "within the limits" if step["passed"] else "broke " + ", ".join(step["broken"])
        if step["kind"] != "ladder":
            verdict += f" ({step['kind']})"
        rows.append(
            (
                step["attached"],
                f"{step['rate']:,g}",
                fmt(step["tps"], ",.0f"),
                f"{step['committed_per_s']:,.0f}",
                fmt(step["lag_max_s"], ".2f", " s"),
                f"{fmt(step['p50_ms'], '.1f')} / {fmt(step['p99_ms'], '.1f')} ms",
                verdict,
            )
        )
    return rows


def conclusion(report: dict[str, Any]) -> list[tuple[str, str]]:
    summary = report["knee"]["summary"]
    limits = summary["limits"]
    server = report.get("target", {}).get("server") or "the sync server"
    return [
        (
            f"knee: {server}, lag <= {limits['lag_s']:g} s and p99 <= {limits['p99_ms']:g} ms",
            f"{fmt(summary['knee_per_s'], ',.0f')} row changes/s "
            f"(-R {fmt(summary['knee_rate'], ',g')})",
        ),
        (
            "pg_recvlogical attached: the rate pgbench reached",
            f"{fmt(summary['baseline_per_s'], ',.0f')} row changes/s "
            f"(-R {fmt(summary['baseline_rate'], ',g')})",
        ),
        ("ratio (knee / pg_recvlogical)", fmt(summary["ratio"], ".2f")),
        ("bounded by", summary["bounded_by"]),
    ]


def headline_line(report: dict[str, Any]) -> str:
    """The last line of a ``--find-knee`` run."""
    summary = report["knee"]["summary"]
    limits = summary["limits"]
    return (
        f"bench knee {fmt(summary['knee_per_s'], '.0f')} row-changes/s "
        f"pg_recvlogical {fmt(summary['baseline_per_s'], '.0f')} row-changes/s "
        f"ratio {fmt(summary['ratio'], '.2f')} "
        f"(lag <= {limits['lag_s']:g} s, p99 <= {limits['p99_ms']:g} ms)"
    )


def print_table(report: dict[str, Any], console: Console) -> None:
    table = Table(title="pysync bench --find-knee: the steps")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("attached", "verdict") else "right")
    for row in step_rows(report):
        table.add_row(*row)
    console.print(table)
    found = Table(show_header=False)
    found.add_column("measure")
    found.add_column("value", justify="right")
    for measure, value in conclusion(report):
        found.add_row(measure, value)
    console.print(found)


def markdown(report: dict[str, Any], headline: str) -> str:
    opts = report["options"]
    lines = [
        "# pysync bench --find-knee report",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- started {report['started']}, {report.get('seconds', '?')} s in all; load average "
        f"at start {', '.join(str(x) for x in report['machine']['load_average'])}",
        f"- {opts['duration']:g} s per step; {opts['shapes']:,} shapes, "
        f"{opts['subscribers']:,} subscribers; pgbench {opts['workload']}, "
        f"{opts['clients']} clients",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in step_rows(report)]
    lines += ["", "| measure | value |", "|---|---|"]
    lines += [f"| {m} | {v} |" for m, v in conclusion(report)]
    lines += ["", "![rate against lag and p99](knee.svg)", "", "```", headline, "```", ""]
    return "\n".join(lines)
