"""``knee.svg``: rate against lag and p99 for both ladders, written as plain SVG text.

No plotting library: the file is a few dozen elements (axes, decade grid lines, one
polyline and its points per series, the limits and the two rates found), so it is
drawn here and needs nothing beyond the standard library. Two panels share the x
axis (committed row changes per second): the replication lag of the server and of
``pg_recvlogical``, and the server's p99 commit-to-client latency (``pg_recvlogical``
has no clients). Both y axes are logarithmic (a failing step is often 100x over its
limit); values under the axis floor are drawn on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

from pysync.bench.knee import reached

WIDTH, HEIGHT = 760, 640
LEFT, RIGHT = 80, 30
PANELS = ((70, 300), (340, 570))
"""(top, bottom) of the lag panel and of the p99 panel, in pixels."""
SYNC_COLOR, BASE_COLOR, LIMIT_COLOR = "#1f77b4", "#ff7f0e", "#d62728"


def _nice_step(rough: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``rough``: round tick labels."""
    power = 10 ** math.floor(math.log10(rough)) if rough > 0 else 1.0
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough)


def _decades(low: float, high: float) -> tuple[float, float]:
    return 10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high))


class _Panel:
    def __init__(self, top: int, bottom: int, x_max: float, y_low: float, y_high: float) -> None:
        self.top, self.bottom = top, bottom
        self.x_max = x_max
        self.y_low, self.y_high = _decades(y_low, y_high)
        if self.y_high <= self.y_low:
            self.y_high = self.y_low * 10

    def x(self, value: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * value / self.x_max

    def y(self, value: float) -> float:
        value = min(max(value, self.y_low), self.y_high)
        span = math.log10(self.y_high) - math.log10(self.y_low)
        fraction = (math.log10(value) - math.log10(self.y_low)) / span
        return self.bottom - (self.bottom - self.top) * fraction


def _text(x: float, y: float, text: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(text)}</text>'


def _axes(panel: _Panel, label: str, unit: str) -> list[str]:
    out = [
        f'<rect x="{LEFT}" y="{panel.top}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{panel.bottom - panel.top}" fill="none" stroke="#333"/>'
    ]
    tick = panel.y_low
    while tick <= panel.y_high * 1.0001:
        y = panel.y(tick)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(_text(LEFT - 6, y + 4, f"{tick:g}{unit}", text_anchor="end", font_size="11"))
        tick *= 10
    step = _nice_step(panel.x_max / 5)
    for i in range(int(panel.x_max // step) + 1):
        value = i * step
        x = panel.x(value)
        out.append(
            f'<line x1="{x:.1f}" y1="{panel.bottom}" x2="{x:.1f}" y2="{panel.bottom + 4}" '
            'stroke="#333"/>'
        )
        out.append(
            _text(x, panel.bottom + 16, f"{value:,.0f}", text_anchor="middle", font_size="11")
        )
    middle = (panel.top + panel.bottom) / 2
    out.append(
        f'<text x="18" y="{middle:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 18 {middle:.1f})">{escape(label)}</text>'
    )
    return out


def _series(
    panel: _Panel,
    steps: list[dict[str, Any]],
    field: str,
    color: str,
    name: str,
    passed: Callable[[dict[str, Any]], bool],
) -> list[str]:
    points = sorted(
        (s["committed_per_s"], s[field], passed(s)) for s in steps if s.get(field) is not None
    )
    if not points:
        return []
    line = " ".join(f"{panel.x(x):.1f},{panel.y(y):.1f}" for x, y, _ in points)
    out = [
        f'<polyline class="series" data-name="{escape(name)}" points="{line}" fill="none" '
        f'stroke="{color}" stroke-width="1.5"/>'
    ]
    for x, y, ok in points:
        out.append(
            f'<circle class="step" data-series="{escape(name)}" data-rate="{x:.1f}" '
            f'data-value="{y:g}" cx="{panel.x(x):.1f}" cy="{panel.y(y):.1f}" r="4" '
            f'stroke="{color}" fill="{color if ok else "white"}"/>'
        )
    return out


def _vertical(panel: _Panel, value: float | None, color: str) -> list[str]:
    if value is None:
        return []
    x = panel.x(value)
    return [
        f'<line x1="{x:.1f}" y1="{panel.top}" x2="{x:.1f}" y2="{panel.bottom}" '
        f'stroke="{color}" stroke-dasharray="2,3"/>'
    ]


def _limit(panel: _Panel, value: float, text: str) -> list[str]:
    y = panel.y(value)
    return [
        f'<line class="limit" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
        f'stroke="{LIMIT_COLOR}" stroke-dasharray="6,4"/>',
        _text(WIDTH - RIGHT - 4, y - 4, text, text_anchor="end", font_size="11", fill=LIMIT_COLOR),
    ]


def svg(result: dict[str, Any], server: str) -> str:
    """The plot of a ``--find-knee`` run (the report's ``knee`` entry) as SVG text."""
    base, sync = result["baseline_steps"], result["sync_steps"]
    summary, limits = result["summary"], result["summary"]["limits"]
    rates = [s["committed_per_s"] for s in base + sync]
    x_max = max([*rates, 1.0]) * 1.05
    lags = [s["lag_max_s"] for s in base + sync if s.get("lag_max_s")] + [limits["lag_s"]]
    p99s = [s["p99_ms"] for s in sync if s.get("p99_ms")] + [limits["p99_ms"]]
    lag_panel = _Panel(*PANELS[0], x_max, max(0.01, min(lags)), max(lags))
    p99_panel = _Panel(*PANELS[1], x_max, max(1.0, min(p99s)), max(p99s))
    knee_rate, base_rate = summary["knee_per_s"], summary["baseline_per_s"]
    ratio = summary["ratio"]
    title = (
        f"{server}: knee {knee_rate:,.0f} row changes/s" if knee_rate else f"{server}: no knee"
    ) + (
        f", pg_recvlogical {base_rate:,.0f}/s" + (f" (ratio {ratio:.2f})" if ratio else "")
        if base_rate
        else ""
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        _text(WIDTH / 2, 22, title, text_anchor="middle", font_size="14", font_weight="bold"),
        _text(
            WIDTH / 2,
            42,
            "filled: within the limits (or, for pg_recvlogical, pgbench reached its -R); "
            "hollow: not",
            text_anchor="middle",
            font_size="11",
        ),
    ]
    out += _axes(lag_panel, "replication lag, max (s)", "")
    out += _limit(lag_panel, limits["lag_s"], f"limit {limits['lag_s']:g} s")
    out += _axes(p99_panel, "commit-to-client p99 (ms)", "")
    out += _limit(p99_panel, limits["p99_ms"], f"limit {limits['p99_ms']:g} ms")
    for panel in (lag_panel, p99_panel):
        out += _vertical(panel, knee_rate, SYNC_COLOR)
        out += _vertical(panel, base_rate, BASE_COLOR)
    out += _series(lag_panel, base, "lag_max_s", BASE_COLOR, "pg_recvlogical", reached)
    out += _series(lag_panel, sync, "lag_max_s", SYNC_COLOR, server, lambda s: s["passed"])
    out += _series(p99_panel, sync, "p99_ms", SYNC_COLOR, server, lambda s: s["passed"])
    out.append(
        _text(
            (LEFT + WIDTH - RIGHT) / 2,
            PANELS[1][1] + 34,
            "row changes committed per second",
            text_anchor="middle",
            font_size="12",
        )
    )
    legend_y = HEIGHT - 10
    for i, (color, name) in enumerate(
        ((SYNC_COLOR, server), (BASE_COLOR, "pg_recvlogical (reports its position once a second)"))
    ):
        x = LEFT + i * 300
        out.append(
            f'<line x1="{x}" y1="{legend_y - 4}" x2="{x + 24}" y2="{legend_y - 4}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        out.append(_text(x + 30, legend_y, name, font_size="12"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
