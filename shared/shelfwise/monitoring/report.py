"""The monitoring report: one HTML page with inline SVG plots of the monitoring history.

Quality per variant over time, the challenger comparisons, drift, traffic, business and pipeline
health, with alarms, canary starts, promotions and rollbacks marked on the timeline. Plain SVG
written here (no matplotlib): the report is one self-contained file anyone can open.

:func:`render_report` takes the records in memory; ``shelfwise report`` (``shelfwise.cli.report``)
reads them from the monitoring bucket (metric history, rollout decisions), the registry's audit
trail and, when asked, the CloudWatch alarm history; the demo passes its own.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shelfwise.monitoring.config import DEFAULT_ALARMS, alarm

COLORS = {"champion": "#1f77b4", "challenger": "#ff7f0e", "fallback": "#7f7f7f", "": "#2ca02c"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
EVENT_COLORS = {
    "ModelRolledBack": "#d62728",
    "ModelPromoted": "#2ca02c",
    "CanaryStarted": "#1f77b4",
    "CanaryAdvanced": "#17becf",
    "ALARM": "#ff7f0e",
}


@dataclass(frozen=True)
class Marker:
    """A vertical line on every chart: an alarm or a registry change."""

    at: datetime
    label: str
    kind: str


@dataclass(frozen=True)
class Chart:
    title: str
    metrics: tuple[str, ...]
    thresholds: tuple[tuple[str, float], ...] = ()


CHARTS: tuple[Chart, ...] = (
    Chart("List CTR per variant (mature click windows)", ("ListCTR",)),
    Chart("CTR per variant (clicked impressions / impressions)", ("CTR",)),
    Chart(
        "Challenger vs champion: lower bound of the relative CTR drop",
        ("CtrDropLCB", "EarlyCtrDropLCB"),
        (
            ("quality alarm", alarm("challenger-quality").threshold),
            ("early-click alarm", alarm("challenger-early-clicks").threshold),
        ),
    ),
    Chart(
        "Served-score PSI vs the bundle reference",
        ("ScorePSI",),
        (("score drift alarm", alarm("challenger-score-drift").threshold),),
    ),
    Chart(
        "Drift: input category mix PSI, popularity shift, champion CTR drop vs its own baseline",
        ("InputCategoryPSI", "PopularityShiftVsChampion", "ChampionCtrDropLCB"),
        (
            ("input drift alarm", alarm("input-drift").threshold),
            ("champion CTR drift alarm", alarm("champion-ctr-drift").threshold),
        ),
    ),
    Chart("Impressions per variant per window", ("Impressions",)),
    Chart("Fallback share and Gini of exposure", ("FallbackShare", "Gini")),
    Chart("Conversion rate per variant (hourly, 24 h attribution)", ("ConversionRate",)),
    Chart("Revenue per 1,000 impressions (hourly)", ("RevenuePerMille",)),
    Chart(
        "Pipeline health: minutes since newest data, quarantine rate",
        ("MinutesSinceNewestPartition", "QuarantineRate"),
    ),
)


def parse_time(value: Any) -> datetime:
    """A datetime, or an ISO 8601 string (``Z`` allowed), as an aware UTC time."""
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def series_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[datetime, float]]]:
    """``{"Metric" or "Metric/Variant": [(time, value), ...]}`` sorted by time (last write wins)."""
    points: dict[str, dict[datetime, float]] = {}
    for r in records:
        if "name" not in r:
            continue
        variant = (r.get("dimensions") or {}).get("Variant")
        key = r["name"] + (f"/{variant}" if variant else "")
        points.setdefault(key, {})[parse_time(r["timestamp"])] = float(r["value"])
    return {k: sorted(v.items()) for k, v in points.items()}


def markers_from(
    audit: Iterable[Mapping[str, Any]] = (), alarm_changes: Iterable[Mapping[str, Any]] = ()
) -> list[Marker]:
    """Markers from registry audit records and alarm transitions into ALARM."""
    out = []
    for rec in audit:
        action = str(rec.get("action", ""))
        if action in EVENT_COLORS and "time" in rec:
            out.append(Marker(parse_time(rec["time"]), f"{action} {rec.get('version', '')}", action))
    for ch in alarm_changes:
        if ch.get("NewState") == "ALARM" or ch.get("new_state") == "ALARM":
            at = ch.get("Timestamp") or ch.get("timestamp")
            out.append(Marker(parse_time(at), str(ch.get("AlarmName") or ch.get("alarm_name")), "ALARM"))
    return sorted(out, key=lambda m: m.at)


def svg_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[datetime, float]]],
    markers: Sequence[Marker] = (),
    thresholds: Sequence[tuple[str, float]] = (),
    width: int = 900,
    height: int = 260,
) -> str:
    """One line chart as inline SVG: a line per series, dashed thresholds, vertical markers."""
    left, right, top, bottom = 60, 170, 28, 36
    pw, ph = width - left - right, height - top - bottom
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f'<svg width="{width}" height="40"><text x="8" y="24" font-size="13">{html.escape(title)}: no data</text></svg>'
    t_lo = min(min(p[0] for p in pts), *(m.at for m in markers)) if markers else min(p[0] for p in pts)
    t_hi = max(max(p[0] for p in pts), *(m.at for m in markers)) if markers else max(p[0] for p in pts)
    values = [p[1] for p in pts] + [v for _, v in thresholds]
    v_lo, v_hi = min(0.0, min(values)), max(values)
    if v_hi <= v_lo:
        v_hi = v_lo + 1.0
    span_t = max((t_hi - t_lo).total_seconds(), 1.0)

    def x(t: datetime) -> float:
        return left + pw * (t - t_lo).total_seconds() / span_t

    def y(v: float) -> float:
        return top + ph * (1.0 - (v - v_lo) / (v_hi - v_lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>',
    ]
    for i in range(5):
        v = v_lo + (v_hi - v_lo) * i / 4
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
    for i in range(4):
        t = t_lo + (t_hi - t_lo) * i / 3
        parts.append(f'<text x="{x(t):.1f}" y="{height - 18}" text-anchor="middle">{t:%m-%d %H:%M}</text>')
    for m in markers:
        c = EVENT_COLORS.get(m.kind, "#999")
        parts.append(
            f'<line x1="{x(m.at):.1f}" x2="{x(m.at):.1f}" y1="{top}" y2="{top + ph}" stroke="{c}" stroke-width="1.5" '
            f'stroke-opacity="0.8"><title>{html.escape(m.label)} at {m.at:%Y-%m-%d %H:%M}</title></line>'
        )
    for label, v in thresholds:
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#d62728" stroke-dasharray="5,4"/>'
            f'<text x="{left + pw - 4}" y="{y(v) - 4:.1f}" text-anchor="end" fill="#d62728">{html.escape(label)}</text>'
        )
    for i, (name, s) in enumerate(sorted(series.items())):
        variant = name.split("/", 1)[1] if "/" in name else ""
        color = (
            COLORS.get(variant, PALETTE[i % len(PALETTE)]) if len(series) <= 3 else PALETTE[i % len(PALETTE)]
        )
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}"/>')
        if len(s) == 1:
            parts.append(f'<circle cx="{x(s[0][0]):.1f}" cy="{y(s[0][1]):.1f}" r="3" fill="{color}"/>')
        ly = top + 12 + 16 * i
        parts.append(f'<rect x="{left + pw + 10}" y="{ly - 8}" width="12" height="3" fill="{color}"/>')
        parts.append(f'<text x="{left + pw + 26}" y="{ly - 3}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def evidence_text(ev: Mapping[str, Any] | None) -> str:
    """One line of a promotion decision's evidence: estimate, interval, sample sizes."""
    if not ev or ev.get("estimate") is None:
        return ""
    upper = float(ev.get("upper") or 0.0)
    return (
        f" | evidence ({ev.get('design')}): click ratio {float(ev['estimate']):.3f}, "
        f"{float(ev.get('confidence') or 0):.0%} bounds [{float(ev['lower']):.3f}, {upper:.3f}], "
        f"non-inferiority margin {float(ev.get('margin') or 0):.0%}; "
        f"n = {ev.get('n_challenger')} / {ev.get('n_champion')}, {ev.get('mature_windows')} matured windows"
    )


def render_report(
    records: Iterable[Mapping[str, Any]],
    *,
    audit: Iterable[Mapping[str, Any]] = (),
    decisions: Iterable[Mapping[str, Any]] = (),
    alarm_changes: Iterable[Mapping[str, Any]] = (),
    title: str = "Shelfwise model monitoring",
) -> str:
    """The whole HTML report from metric records, registry audit, rollout decisions and alarm changes."""
    series = series_from_records(records)
    audit, decisions, alarm_changes = list(audit), list(decisions), list(alarm_changes)
    markers = markers_from(audit, alarm_changes)
    charts = []
    for chart in CHARTS:
        chosen = {k: v for k, v in series.items() if k.split("/", 1)[0] in chart.metrics}
        if chosen:
            charts.append(svg_chart(chart.title, chosen, markers, chart.thresholds))
    rows = []
    for m in markers:
        rows.append(
            f"<tr><td>{m.at:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(m.kind)}</td><td>{html.escape(m.label)}</td></tr>"
        )
    for d in decisions:
        if d.get("action") in {"rollback", "advance", "promote"}:
            rows.append(
                f"<tr><td>{html.escape(str(d.get('at', '')))[:19]}</td><td>decision: {html.escape(str(d['action']))}</td>"
                f"<td>{html.escape(str(d.get('reason', '')))} {html.escape(str(d.get('alarm') or ''))}"
                f"{html.escape(evidence_text((d.get('detail') or {}).get('evidence')))}</td></tr>"
            )
    legend = " ".join(
        f'<span style="color:{c}">&#9646; {html.escape(k)}</span>' for k, c in EVENT_COLORS.items()
    )
    alarm_rows = "".join(
        f"<tr><td>{html.escape(a.suffix)}</td><td>{html.escape(a.metric)}{'/' + a.variant if a.variant else ''}</td>"
        f"<td>{'&gt;' if a.comparison.startswith('Greater') else '&lt;'} {a.threshold:g}</td>"
        f"<td>{a.datapoints_to_alarm} of {a.evaluation_periods}</td><td>{a.treat_missing_data}</td>"
        f"<td>{html.escape(a.target)}</td></tr>"
        for a in DEFAULT_ALARMS
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1000px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ddd;padding:3px 6px;text-align:left}} svg{{display:block;margin:14px 0}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(series)} metric series, {sum(len(s) for s in series.values())} datapoints; markers: {legend}</p>
{"".join(charts) or "<p>No metric history yet.</p>"}
<h2>Timeline</h2><table><tr><th>time (UTC)</th><th>what</th><th>detail</th></tr>{"".join(rows) or "<tr><td colspan=3>nothing happened</td></tr>"}</table>
<h2>Alarms (defaults)</h2><table><tr><th>alarm</th><th>metric</th><th>threshold</th><th>datapoints</th><th>missing data</th><th>rollback target</th></tr>{alarm_rows}</table>
</body></html>
"""
