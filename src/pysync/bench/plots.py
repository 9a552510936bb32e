"""PNG plots of a run (matplotlib, from the ``bench`` extra; skipped without it):

- ``latency.png``: commit-to-client latency p50/p95/p99/max per second of commit time;
- ``lag.png``: replication lag in seconds and MB over time (sync phase, and the
  pg_recvlogical phase for comparison);
- ``throughput.png``: pgbench TPS per phase over time; messages delivered per second
  and row changes committed and ingested per second during the sync phase.

Each shades the seconds pgbench ran (what comes after is catching up), labels its ticks
in plain numbers, and names every line in its legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PHASE_STYLE = {
    "none": ("nothing attached", "0.6"),
    "recvlogical": ("pg_recvlogical", "tab:orange"),
    "sync": ("sync server", "tab:blue"),
}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(
    samples: list[dict[str, Any]], field: str, scale: float = 1.0
) -> tuple[list[float], list[float]]:
    points = [(s["t"], s[field] * scale) for s in samples if s.get(field) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def shade_load(ax: Any, report: dict[str, Any], phase: str = "sync") -> None:
    """A grey band over the seconds pgbench ran in ``phase`` (labelled in the legend)."""
    end = report["phases"].get(phase, {}).get("summary", {}).get("load_end_s")
    if end:
        ax.axvspan(0, end, color="0.95", zorder=0, label="pgbench running")
        ax.set_xlim(left=0)


def legend(ax: Any, handles: list[Any] | None = None, labels: list[str] | None = None) -> None:
    """The legend under the plot, where it hides no line."""
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles,
        labels,
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=min(3, len(labels)),
        frameon=False,
    )


def plain_log_axis(ax: Any) -> None:
    """A log y axis labelled 1, 2, 3, 5, 10, 20 ... rather than 6x10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def latency(ax: Any, report: dict[str, Any]) -> None:
    windows = report["phases"].get("sync", {}).get("latency_windows", [])
    t = [w["t"] for w in windows]
    # With fewer than 100 markers in a second, its p99 is its max (nearest rank): max is
    # drawn as crosses over the p99 line so that both stay visible.
    few = any(w["count"] < 100 for w in windows)
    for key, name, color, style in (
        ("p50_ms", "p50", "tab:green", "-"),
        ("p95_ms", "p95", "tab:olive", "-"),
        (
            "p99_ms",
            "p99" + (" (= max in a second of < 100 samples)" if few else ""),
            "tab:red",
            "-",
        ),
        ("max_ms", "max", "0.3", ":x"),
    ):
        ax.plot(t, [w[key] for w in windows], style, color=color, label=name, linewidth=1.5)
    shade_load(ax, report)
    ax.set_xlabel("seconds into the sync phase (mean commit time of each second's markers)")
    ax.set_ylabel("commit-to-client latency, ms")
    plain_log_axis(ax)
    ax.grid(True, which="major", alpha=0.3)


def lag(ax: Any, report: dict[str, Any], label: str = "", style: str = "-") -> None:
    for phase in ("recvlogical", "sync"):
        samples = report["phases"].get(phase, {}).get("samples", [])
        t, values = _series(samples, "lag_s")
        if values:
            name, color = PHASE_STYLE[phase]
            if phase == "recvlogical":
                # Its slot moves when it reports, once a second (-s 1 -F 1): the lag
                # measured climbs to 1 s between reports and drops at each.
                name += " (reports once a second: a saw tooth)"
            ax.plot(t, values, style, color=color, label=f"{label}{name}, s")
    ax.set_xlabel("seconds into the phase")
    ax.set_ylabel("lag behind pg_current_wal_lsn(), s")
    ax.grid(True, alpha=0.3)


def throughput(ax: Any, report: dict[str, Any], label: str = "", style: str = "-") -> None:
    for phase, (name, color) in PHASE_STYLE.items():
        progress = report["phases"].get(phase, {}).get("pgbench_progress", [])
        if progress:
            ax.plot(
                [p[0] for p in progress],
                [p[1] for p in progress],
                style,
                color=color,
                label=f"{label}TPS, {name}",
            )
    ax.set_xlabel("seconds into the phase")
    ax.tick_params(labelbottom=True)
    ax.set_ylabel("pgbench transactions per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)


def write(report: dict[str, Any], out: Path) -> list[str]:
    """Write the three PNGs into ``out``; their file names (none without matplotlib)."""
    if not available():
        return []
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    written: list[str] = []
    title = (
        f"{report['summary'].get('server')}: {report['options']['shapes']:,} shapes, "
        f"{report['options']['subscribers']:,} subscribers"
    )

    fig, ax = plt.subplots(figsize=(8, 5))
    latency(ax, report)
    ax.set_title(f"Commit-to-client latency ({title})", fontsize=10)
    legend(ax)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    written.append("latency.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    shade_load(ax, report)
    lag(ax, report)
    samples = report["phases"].get("sync", {}).get("samples", [])
    t, mb = _series(samples, "lag_bytes", 1e-6)
    handles, labels = ax.get_legend_handles_labels()
    if mb:
        right = ax.twinx()
        right.plot(t, mb, ":", color="tab:blue", label="sync server, MB of WAL (right axis)")
        right.set_ylabel("lag, MB of WAL (dotted)")
        right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        right.set_ylim(bottom=0)
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.set_ylim(bottom=0)
    ax.set_title(f"Replication lag ({title})", fontsize=10)
    legend(ax, handles, labels)
    fig.tight_layout()
    fig.savefig(out / "lag.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    written.append("lag.png")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8.5), sharex=True)
    shade_load(top, report)
    shade_load(bottom, report)
    throughput(top, report)
    top.set_title(f"Throughput ({title})", fontsize=10)
    legend(top)
    for field, name, color in (
        ("deliveries_per_s", "messages delivered/s", "tab:purple"),
        ("committed_per_s", "row changes committed/s", "0.4"),
        ("ingested_per_s", "row changes ingested/s", "tab:blue"),
    ):
        t, values = _series(samples, field)
        if values:
            bottom.plot(t, values, color=color, label=name)
    bottom.set_xlabel("seconds into the sync phase")
    bottom.set_ylabel("per second")
    bottom.set_ylim(bottom=0)
    bottom.grid(True, alpha=0.3)
    legend(bottom)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    written.append("throughput.png")
    return written
