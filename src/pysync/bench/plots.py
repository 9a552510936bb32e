"""PNG plots of a run (matplotlib, from the ``bench`` extra; skipped without it):

- ``latency.png``: commit-to-client latency p50/p95/p99/max per second of commit time;
- ``lag.png``: replication lag in seconds and MB over time (sync phase, and the
  pg_recvlogical phase for comparison);
- ``throughput.png``: pgbench TPS per phase over time; messages delivered per second
  and row changes committed and ingested per second during the sync phase.
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


def latency(ax: Any, report: dict[str, Any], label: str = "", style: str = "-") -> None:
    windows = report["phases"].get("sync", {}).get("latency_windows", [])
    t = [w["t"] for w in windows]
    for key, color in (
        ("p50_ms", "tab:green"),
        ("p95_ms", "tab:olive"),
        ("p99_ms", "tab:red"),
        ("max_ms", "0.5"),
    ):
        ax.plot(t, [w[key] for w in windows], style, color=color, label=f"{label}{key[:-3]}")
    ax.set_xlabel("seconds into the sync phase (commit time)")
    ax.set_ylabel("commit-to-client latency, ms")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)


def lag(ax: Any, report: dict[str, Any], label: str = "", style: str = "-") -> None:
    for phase in ("recvlogical", "sync"):
        samples = report["phases"].get(phase, {}).get("samples", [])
        t, values = _series(samples, "lag_s")
        if values:
            name, color = PHASE_STYLE[phase]
            ax.plot(t, values, style, color=color, label=f"{label}{name}")
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
    ax.set_ylabel("pgbench transactions per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)


def write(report: dict[str, Any], out: Path) -> list[str]:
    """Write the three PNGs into ``out``; their file names (none without matplotlib)."""
    if not available():
        return []
    plt = pyplot()
    written: list[str] = []
    title = (
        f"{report['summary'].get('server')}: {report['options']['shapes']:,} shapes, "
        f"{report['options']['subscribers']:,} subscribers"
    )

    fig, ax = plt.subplots(figsize=(8, 4.5))
    latency(ax, report)
    ax.set_title(f"Commit-to-client latency ({title})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=80)
    plt.close(fig)
    written.append("latency.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    lag(ax, report)
    samples = report["phases"].get("sync", {}).get("samples", [])
    t, mb = _series(samples, "lag_bytes", 1e-6)
    if mb:
        right = ax.twinx()
        right.plot(t, mb, ":", color="tab:blue", label="sync server, MB")
        right.set_ylabel("lag, MB of WAL (dotted)")
        right.set_ylim(bottom=0)
    ax.set_ylim(bottom=0)
    ax.set_title(f"Replication lag ({title})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "lag.png", dpi=80)
    plt.close(fig)
    written.append("lag.png")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    throughput(top, report)
    top.set_title(f"Throughput ({title})", fontsize=10)
    top.legend(fontsize=8)
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
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=80)
    plt.close(fig)
    written.append("throughput.png")
    return written
