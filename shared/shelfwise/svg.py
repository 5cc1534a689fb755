"""Inline SVG charts for the HTML reports (training and monitoring): no matplotlib, no JavaScript.

One plotter for both reports, so they look and behave alike: charts scale to the page (a
``viewBox``, no fixed pixel size), every series has its own colour, axis ticks are round numbers
with the unit, and a time series is not drawn across a gap in its data (a missing window shows
as a break, not as a straight line that looks like data).
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

# Tableau 10: distinct for up to ten series, readable for the common forms of colour blindness.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
# A gap between two points longer than this many times the series' usual spacing breaks the line.
GAP_FACTOR = 3.0

Point = tuple[float, float]  # (x, y); x in seconds since the epoch for time axes


@dataclass(frozen=True)
class VerticalMarker:
    """A vertical line across a chart (an alarm, a registry change) at ``x``, with a tooltip."""

    x: float
    label: str
    color: str


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def svg_open(width: int, height: int, font_size: int = 11) -> str:
    """The opening tag: scales with its container (a viewBox, no fixed size)."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'font-family="sans-serif" font-size="{font_size}">'
    )


def linear(lo: float, hi: float, start: float, length: float) -> Callable[[float], float]:
    """The map of [lo, hi] onto [start, start + length] (reversed for a y axis: negative length)."""
    span = (hi - lo) or 1.0
    return lambda v: start + length * (v - lo) / span


def colors(names: Sequence[str], preferred: Mapping[str, str] | None = None) -> dict[str, str]:
    """A distinct colour per name: its preferred one if still free, else the next palette colour."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        want = (preferred or {}).get(name)
        if want and want not in used:
            out[name] = want
            used.add(want)
    free = [c for c in PALETTE if c not in used]
    for i, name in enumerate(n for n in names if n not in out):
        out[name] = free[i % len(free)] if free else PALETTE[i % len(PALETTE)]
    return out


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(target - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step)
    last = math.ceil(hi / step)
    digits = max(0, 1 - math.floor(math.log10(step)))
    return [round(i * step, digits) for i in range(first, last + 1)]


def fmt_value(v: float, unit: str = "") -> str:
    """A tick label: compact number (k, M for large ones) and the unit ("%" scales a fraction)."""
    if unit == "%":
        return f"{v * 100:g}%"
    a = abs(v)
    text = (
        f"{v / 1e6:g}M"
        if a >= 1e6
        else f"{v / 1e3:g}k"
        if a >= 1e4
        else f"{v:g}"
        if a >= 1e-3 or v == 0
        else f"{v:.1e}"
    )
    return f"{text} {unit}".rstrip()


def time_ticks(lo: float, hi: float, target: int = 5) -> list[tuple[float, str]]:
    """Round time ticks (minutes, hours, days) between two epoch seconds, with their labels."""
    span = max(hi - lo, 1.0)
    steps = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
    step = next((s for s in steps if span / s <= target), steps[-1])
    first = math.ceil(lo / step) * step
    fmt = "%H:%M" if step < 86400 else "%m-%d"
    out = []
    t = first
    while t <= hi:
        at = datetime.fromtimestamp(t, UTC)
        label = at.strftime("%m-%d %H:%M" if step < 86400 and at.hour == 0 and at.minute == 0 else fmt)
        out.append((float(t), label))
        t += step
    return out


def segments(points: Sequence[Point], gap_factor: float = GAP_FACTOR) -> list[list[Point]]:
    """Split a series where consecutive x are further apart than ``gap_factor`` x the median spacing."""
    pts = sorted(points)
    if len(pts) < 3:
        return [list(pts)] if pts else []
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(pts))
    usual = gaps[len(gaps) // 2] or max(gaps) or 1.0
    out: list[list[Point]] = [[pts[0]]]
    for a, b in itertools.pairwise(pts):
        if b[0] - a[0] > gap_factor * usual:
            out.append([])
        out[-1].append(b)
    return out


def line_chart(
    title: str,
    series: Mapping[str, Sequence[Point]],
    *,
    unit: str = "",
    x_unit: str = "",
    time_axis: bool = False,
    markers: Sequence[VerticalMarker] = (),
    thresholds: Sequence[tuple[str, float]] = (),
    preferred_colors: Mapping[str, str] | None = None,
    width: int = 900,
    height: int = 260,
) -> str:
    """A line chart: a line per series (broken at gaps), dashed thresholds, vertical markers, legend."""
    left, right, top, bottom = 64, 180, 28, 40
    pw, ph = width - left - right, height - top - bottom
    pts = [p for s in series.values() for p in s]
    if not pts:
        return svg_open(width, 40) + f'<text x="8" y="24" font-size="13">{esc(title)}: no data</text></svg>'
    xs = [p[0] for p in pts] + [m.x for m in markers]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi <= x_lo:
        x_hi = x_lo + 1.0
    ys = [p[1] for p in pts if math.isfinite(p[1])] + [v for _, v in thresholds]
    y_ticks = nice_ticks(min([0.0, *ys]), max(ys or [1.0]))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    x = linear(x_lo, x_hi, left, pw)
    y = linear(y_lo, y_hi, top + ph, -ph)
    parts = [
        svg_open(width, height),
        f"<title>{esc(title)}</title>",
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{esc(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>',
    ]
    for v in y_ticks:
        parts.append(
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{esc(fmt_value(v, unit))}</text>'
        )
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
    x_labels = (
        time_ticks(x_lo, x_hi) if time_axis else [(v, fmt_value(v, x_unit)) for v in nice_ticks(x_lo, x_hi)]
    )
    for v, label in x_labels:
        if x_lo <= v <= x_hi:
            parts.append(f'<text x="{x(v):.1f}" y="{height - 22}" text-anchor="middle">{esc(label)}</text>')
    if time_axis:
        day = datetime.fromtimestamp(x_lo, UTC)
        parts.append(f'<text x="{left}" y="{height - 6}">time (UTC) from {day:%Y-%m-%d %H:%M}</text>')
    for m in markers:
        parts.append(
            f'<line x1="{x(m.x):.1f}" x2="{x(m.x):.1f}" y1="{top}" y2="{top + ph}" stroke="{m.color}" '
            f'stroke-width="1.5" stroke-opacity="0.8"><title>{esc(m.label)}</title></line>'
        )
    for label, v in thresholds:
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#d62728" '
            f'stroke-dasharray="5,4"/><text x="{left + pw - 4}" y="{y(v) - 4:.1f}" text-anchor="end" '
            f'fill="#d62728">{esc(label)}</text>'
        )
    palette = colors(sorted(series), preferred_colors)
    for i, (name, s) in enumerate(sorted(series.items())):
        color = palette[name]
        finite = [(a, b) for a, b in s if math.isfinite(b)]
        for seg in segments(finite):
            if len(seg) == 1:
                parts.append(
                    f'<circle cx="{x(seg[0][0]):.1f}" cy="{y(seg[0][1]):.1f}" r="2.5" fill="{color}"/>'
                )
            else:
                path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in seg)
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}"/>')
        ly = top + 12 + 16 * i
        parts.append(f'<rect x="{left + pw + 10}" y="{ly - 8}" width="12" height="3" fill="{color}"/>')
        parts.append(f'<text x="{left + pw + 26}" y="{ly - 3}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    title: str,
    *,
    unit: str = "",
    width: int = 720,
) -> str:
    """Grouped bars: one group per label, one bar per series, values labelled, a legend below."""
    height, pad_l, pad_b, pad_t = 280, 56, 44, 30
    names = list(series)
    values = [v for vals in series.values() for v in vals if math.isfinite(v)]
    ticks = nice_ticks(min([0.0, *values]), max(values or [1.0]))
    lo, top = ticks[0], ticks[-1]
    inner_w, inner_h = width - pad_l - 10, height - pad_t - pad_b
    gw = inner_w / max(len(groups), 1)
    bw = gw * 0.8 / max(len(names), 1)
    palette = colors(names)

    y = linear(lo, top, pad_t + inner_h, -inner_h)
    parts = [
        svg_open(width, height),
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{esc(title)}</text>',
    ]
    for v in ticks:
        parts.append(
            f'<text x="{pad_l - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{esc(fmt_value(v, unit))}</text>'
        )
        parts.append(f'<line x1="{pad_l}" x2="{width - 10}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
    for gi, g in enumerate(groups):
        x0 = pad_l + gi * gw + gw * 0.1
        for si, name in enumerate(names):
            v = float(series[name][gi])
            if not math.isfinite(v):
                continue
            y0, y1 = sorted((y(0.0), y(v)))
            xb = x0 + si * bw
            parts.append(
                f'<rect x="{xb:.1f}" y="{y0:.1f}" width="{bw * 0.9:.1f}" height="{y1 - y0:.1f}" '
                f'fill="{palette[name]}"><title>{esc(name)} {esc(g)} = {v:.4f}</title></rect>'
            )
            parts.append(
                f'<text x="{xb + bw * 0.45:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle" font-size="9">{v:.3f}</text>'
            )
        parts.append(
            f'<text x="{pad_l + gi * gw + gw / 2:.1f}" y="{height - pad_b + 16}" text-anchor="middle" '
            f'font-size="12">{esc(g)}</text>'
        )
    for si, name in enumerate(names):
        lx = pad_l + si * 130
        parts.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{palette[name]}"/>'
            f'<text x="{lx + 14}" y="{height - 5}" font-size="11">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    edges: Sequence[float], counts: Sequence[int], title: str, *, x_unit: str = "", width: int = 480
) -> str:
    """Bars of a histogram given its edges and counts, with round ticks on both axes."""
    height, pad_l, pad_b, pad_t = 220, 48, 36, 26
    if not counts or len(edges) != len(counts) + 1:
        return f"<p>{esc(title)}: empty.</p>"
    y_ticks = nice_ticks(0.0, float(max(counts) or 1))
    top = y_ticks[-1]
    lo, hi = float(edges[0]), float(edges[-1])
    if hi <= lo:
        hi = lo + 1.0
    pw, ph = width - pad_l - 10, height - pad_t - pad_b

    x = linear(lo, hi, pad_l, pw)
    y = linear(0.0, top, pad_t + ph, -ph)
    parts = [
        svg_open(width, height, font_size=10),
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="14">{esc(title)}</text>',
    ]
    for v in y_ticks:
        parts.append(f'<text x="{pad_l - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{esc(fmt_value(v))}</text>')
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
    for i, c in enumerate(counts):
        a, b = x(float(edges[i])), x(float(edges[i + 1]))
        parts.append(
            f'<rect x="{a:.1f}" y="{y(c):.1f}" width="{max(b - a - 1, 0.5):.1f}" height="{y(0) - y(c):.1f}" '
            f'fill="{PALETTE[2]}"><title>[{edges[i]:.4g}, {edges[i + 1]:.4g}): {c}</title></rect>'
        )
    for v in nice_ticks(lo, hi):
        if lo <= v <= hi:
            parts.append(
                f'<text x="{x(v):.1f}" y="{height - 20}" text-anchor="middle">{esc(fmt_value(v, x_unit))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def epoch(t: datetime) -> float:
    """Seconds since the epoch of an aware (or UTC-naive) datetime: the x of time series."""
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


__all__ = [
    "PALETTE",
    "VerticalMarker",
    "bar_chart",
    "colors",
    "epoch",
    "histogram",
    "line_chart",
    "nice_ticks",
    "segments",
    "time_ticks",
]
