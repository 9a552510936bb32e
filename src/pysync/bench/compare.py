"""``pysync bench --compare A.json B.json``: two earlier runs side by side.

Prints (and writes to ``compare.md``) the headline measures of both with B / A, and
draws ``compare.png``: latency p99, lag and pgbench TPS over time, A solid, B dashed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pysync.bench import plots
from pysync.bench.errors import BenchError

MEASURES = (
    ("server", "server", None),
    ("pgbench TPS, nothing attached", "tps_none", ",.0f"),
    ("pgbench TPS, pg_recvlogical attached", "tps_recvlogical", ",.0f"),
    ("pgbench TPS, sync server attached", "tps_sync", ",.0f"),
    ("overhead TPS ratio (to pg_recvlogical)", "tps_ratio", ".2f"),
    ("lag max, s", "lag_max_s", ".2f"),
    ("lag max, bytes", "lag_max_bytes", ",.0f"),
    ("latency p50, ms", "p50_ms", ".1f"),
    ("latency p99, ms", "p99_ms", ".1f"),
    ("latency max, ms", "max_ms", ".1f"),
    ("backlog drain ratio", "drain_ratio", ".2f"),
    ("consistent", "consistent", None),
)


def load(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise BenchError(f"--compare: cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise BenchError(f"--compare: {path} is not JSON: {exc}") from exc
    if isinstance(report, dict) and "knee" in report:
        raise BenchError(
            f"--compare: {path} is a --find-knee report: --compare draws runs of the "
            "phases (a knee's steps are in its report.md and knee.svg)"
        )
    if not isinstance(report, dict) or "summary" not in report or "phases" not in report:
        raise BenchError(f"--compare: {path} is not a bench.json written by pysync bench")
    return report


def _cell(value: Any, spec: str | None) -> str:
    if value is None:
        return "n/a"
    return (
        f"{value:{spec}}"
        if spec and isinstance(value, (int, float)) and not isinstance(value, bool)
        else str(value)
    )


def table_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = [("command", a["command"], b["command"], ""), ("started", a["started"], b["started"], "")]
    for title, key, spec in MEASURES:
        va, vb = a["summary"].get(key), b["summary"].get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        change = f"{vb / va:.2f}" if numeric and va else ""
        out.append((title, _cell(va, spec), _cell(vb, spec), change))
    return out


def compare(path_a: Path, path_b: Path, out: Path, console: Console) -> list[str]:
    """Print and write the comparison; the files written."""
    a, b = load(path_a), load(path_b)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(a, b)
    table = Table(title=f"A = {path_a}   B = {path_b}")
    for name in ("measure", "A", "B", "B / A"):
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    lines = [
        "# pysync bench: two runs",
        "",
        f"A: `{path_a}`  ",
        f"B: `{path_b}`",
        "",
        "| measure | A | B | B / A |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    written = ["compare.md"]
    if plots.available():
        plt = plots.pyplot()
        fig, axes = plt.subplots(3, 1, figsize=(8, 10))
        for report, label, style in ((a, "A ", "-"), (b, "B ", "--")):
            windows = report["phases"].get("sync", {}).get("latency_windows", [])
            axes[0].plot(
                [w["t"] for w in windows],
                [w["p99_ms"] for w in windows],
                style,
                color="tab:red",
                label=f"{label}p99",
            )
            plots.lag(axes[1], report, label, style)
            plots.throughput(axes[2], report, label, style)
        axes[0].set_ylabel("latency p99, ms")
        axes[0].set_xlabel("seconds into the sync phase")
        axes[0].grid(True, alpha=0.3)
        for ax in axes:
            ax.legend(fontsize=7)
        fig.suptitle("A solid, B dashed", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "compare.png", dpi=80)
        plt.close(fig)
        written.append("compare.png")
        lines += ["", "![A against B](compare.png)"]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    return written
