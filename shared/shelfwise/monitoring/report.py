"""The monitoring report: one HTML page with inline SVG plots of the monitoring history.

Quality per variant over time, the challenger comparisons, drift, traffic, business and pipeline
health, with alarms, canary starts, promotions and rollbacks marked on the timeline. Inline SVG
(:mod:`shelfwise.svg`, no matplotlib): the report is one self-contained file anyone can open.

:func:`render_report` takes the records in memory; ``shelfwise report`` (``shelfwise.cli.report``)
reads them from the monitoring bucket (metric history, rollout decisions), the registry's audit
trail and, when asked, the CloudWatch alarm history; the demo passes its own.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shelfwise import svg
from shelfwise.instants import aware_time
from shelfwise.monitoring.config import DEFAULT_ALARMS, alarm

# Each variant's usual colour (taken when the chart has no other series in it).
COLORS = {"champion": "#4e79a7", "challenger": "#f28e2b", "fallback": "#bab0ac"}
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
    unit: str = ""  # of the y axis: "%" shows fractions as percentages


CHARTS: tuple[Chart, ...] = (
    Chart("List CTR per variant (mature click windows)", ("ListCTR",), unit="%"),
    Chart("CTR per variant (clicked impressions / impressions)", ("CTR",), unit="%"),
    Chart(
        "Challenger vs champion: lower bound of the relative CTR drop",
        ("CtrDropLCB", "EarlyCtrDropLCB"),
        (
            ("quality alarm", alarm("challenger-quality").threshold),
            ("early-click alarm", alarm("challenger-early-clicks").threshold),
        ),
        unit="%",
    ),
    Chart(
        "Served-score PSI vs the bundle reference",
        ("ScorePSI",),
        (("score drift alarm", alarm("challenger-score-drift").threshold),),
    ),
    Chart(
        "Drift: input category mix PSI, popularity shift, champion CTR drop vs its own baseline",
        ("InputCategoryPSI", "PopularityShiftVsChampion", "PopularityShiftLCB", "ChampionCtrDropLCB"),
        (
            ("input drift alarm", alarm("input-drift").threshold),
            ("popularity shift alarm", alarm("challenger-coverage-shift").threshold),
            ("champion CTR drift alarm", alarm("champion-ctr-drift").threshold),
        ),
    ),
    Chart("Impressions per variant per window", ("Impressions",), unit="impr."),
    Chart("Fallback share and Gini of exposure", ("FallbackShare", "Gini")),
    Chart("Conversion rate per variant (hourly, 24 h attribution)", ("ConversionRate",), unit="%"),
    Chart("Revenue per 1,000 impressions (hourly)", ("RevenuePerMille",), unit="/1k impr."),
    Chart(
        "Pipeline health: minutes since newest data, quarantine rate",
        ("MinutesSinceNewestPartition", "QuarantineRate"),
    ),
)


def series_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[datetime, float]]]:
    """``{"Metric" or "Metric/Variant": [(time, value), ...]}`` sorted by time (last write wins)."""
    points: dict[str, dict[datetime, float]] = {}
    for r in records:
        if "name" not in r:
            continue
        variant = (r.get("dimensions") or {}).get("Variant")
        key = r["name"] + (f"/{variant}" if variant else "")
        points.setdefault(key, {})[aware_time(r["timestamp"], "metric timestamp")] = float(r["value"])
    return {k: sorted(v.items()) for k, v in points.items()}


def markers_from(
    audit: Iterable[Mapping[str, Any]] = (), alarm_changes: Iterable[Mapping[str, Any]] = ()
) -> list[Marker]:
    """Markers from registry audit records and alarm transitions into ALARM."""
    out = []
    for rec in audit:
        action = str(rec.get("action", ""))
        if action in EVENT_COLORS and "time" in rec:
            out.append(
                Marker(aware_time(rec["time"], "audit time"), f"{action} {rec.get('version', '')}", action)
            )
    for ch in alarm_changes:
        if ch.get("NewState") == "ALARM" or ch.get("new_state") == "ALARM":
            at = ch.get("Timestamp") or ch.get("timestamp")
            out.append(
                Marker(
                    aware_time(at, "alarm time"), str(ch.get("AlarmName") or ch.get("alarm_name")), "ALARM"
                )
            )
    return sorted(out, key=lambda m: m.at)


def svg_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[datetime, float]]],
    markers: Sequence[Marker] = (),
    thresholds: Sequence[tuple[str, float]] = (),
    *,
    unit: str = "",
    width: int = 900,
    height: int = 260,
) -> str:
    """One time chart as inline SVG: a line per series (champion and challenger in their usual
    colours), dashed thresholds, a vertical line per marker; gaps in the history stay gaps."""
    preferred = {
        name: COLORS[name.split("/", 1)[1]]
        for name in series
        if "/" in name and name.split("/", 1)[1] in COLORS
    }
    return svg.line_chart(
        title,
        {name: [(svg.epoch(t), v) for t, v in points] for name, points in series.items()},
        unit=unit,
        time_axis=True,
        markers=[
            svg.VerticalMarker(
                svg.epoch(m.at), f"{m.label} at {m.at:%Y-%m-%d %H:%M}", EVENT_COLORS.get(m.kind, "#999")
            )
            for m in markers
        ],
        thresholds=thresholds,
        preferred_colors=preferred,
        width=width,
        height=height,
    )


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
            charts.append(svg_chart(chart.title, chosen, markers, chart.thresholds, unit=chart.unit))
    rows = []
    for m in markers:
        rows.append(
            f"<tr><td>{m.at:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(m.kind)}</td><td>{html.escape(m.label)}</td></tr>"
        )
    for d in decisions:
        if d.get("action") in {"rollback", "advance", "allocate", "promote"}:
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
td,th{{border:1px solid #ddd;padding:3px 6px;text-align:left}} svg{{display:block;width:100%;height:auto;margin:14px 0}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(series)} metric series, {sum(len(s) for s in series.values())} datapoints; markers: {legend}</p>
{"".join(charts) or "<p>No metric history yet.</p>"}
<h2>Timeline</h2><table><tr><th>time (UTC)</th><th>what</th><th>detail</th></tr>{"".join(rows) or "<tr><td colspan=3>nothing happened</td></tr>"}</table>
<h2>Alarms (defaults)</h2><table><tr><th>alarm</th><th>metric</th><th>threshold</th><th>datapoints</th><th>missing data</th><th>rollback target</th></tr>{alarm_rows}</table>
</body></html>
"""
