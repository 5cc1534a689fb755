"""The training report: one self-contained HTML page with inline SVG plots (no matplotlib, no JS).

Plots: the test-window metric comparison of every family (the baselines next to the candidates),
the loss curve of the final fit when the algorithm has one, and the score histogram that drift
monitoring compares against. Everything comes from the manifest, so the report can be
re-rendered from any bundle.
"""

from __future__ import annotations

import html
import json
from typing import Any

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948")
COMPARED = ("ndcg@{k}", "recall@{k}", "map@{k}", "hitrate@{k}", "mrr")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def bar_chart(groups: list[str], series: dict[str, list[float]], title: str, width: int = 720) -> str:
    """Grouped bars: one group per metric, one bar per series (model), values labelled."""
    height, pad_l, pad_b, pad_t = 280, 48, 40, 30
    names = list(series)
    top = max([v for vals in series.values() for v in vals] + [1e-9]) * 1.15
    inner_w, inner_h = width - pad_l - 10, height - pad_t - pad_b
    gw = inner_w / max(len(groups), 1)
    bw = gw * 0.8 / max(len(names), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    parts.append(f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{_e(title)}</text>')
    parts.append(
        f'<line x1="{pad_l}" y1="{pad_t + inner_h}" x2="{width - 10}" y2="{pad_t + inner_h}" stroke="#333"/>'
    )
    for gi, g in enumerate(groups):
        x0 = pad_l + gi * gw + gw * 0.1
        for si, name in enumerate(names):
            v = series[name][gi]
            h = inner_h * v / top
            x = x0 + si * bw
            y = pad_t + inner_h - h
            color = PALETTE[si % len(PALETTE)]
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.9:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{_e(name)} {_e(g)} = {v:.4f}</title></rect>"
            )
            parts.append(
                f'<text x="{x + bw * 0.45:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="9">{v:.3f}</text>'
            )
        parts.append(
            f'<text x="{pad_l + gi * gw + gw / 2:.1f}" y="{height - pad_b + 16}" text-anchor="middle" '
            f'font-size="12">{_e(g)}</text>'
        )
    for si, name in enumerate(names):
        lx = pad_l + si * 130
        parts.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>'
            f'<text x="{lx + 14}" y="{height - 5}" font-size="11">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(values: list[float], title: str, xlabel: str, width: int = 480) -> str:
    """A polyline of ``values`` against their index (e.g. training loss per iteration)."""
    height, pad = 220, 40
    if not values:
        return f"<p>{_e(title)}: not recorded for this algorithm.</p>"
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    n = len(values)
    pts = [
        (pad + (width - 2 * pad) * (i / max(n - 1, 1)), height - pad - (height - 2 * pad) * ((v - lo) / span))
        for i, v in enumerate(values)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="14">{_e(title)}</text>'
        f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>'
        f'<text x="{pad}" y="{height - 10}" font-size="11">{_e(xlabel)} 1..{n}</text>'
        f'<text x="4" y="{pad}" font-size="10">{hi:.4g}</text>'
        f'<text x="4" y="{height - pad}" font-size="10">{lo:.4g}</text>'
        "</svg>"
    )


def histogram_chart(bins: list[float], counts: list[int], title: str, width: int = 480) -> str:
    """Bars of a histogram given its edges and counts."""
    height, pad = 220, 40
    if not counts:
        return f"<p>{_e(title)}: empty.</p>"
    top = max(counts) or 1
    bw = (width - 2 * pad) / len(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    parts.append(f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="14">{_e(title)}</text>')
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        parts.append(
            f'<rect x="{pad + i * bw:.1f}" y="{height - pad - h:.1f}" width="{bw * 0.95:.1f}" height="{h:.1f}" '
            f'fill="{PALETTE[2]}"><title>[{bins[i]:.4g}, {bins[i + 1]:.4g}): {c}</title></rect>'
        )
    parts.append(f'<text x="{pad}" y="{height - 10}" font-size="10">{bins[0]:.4g}</text>')
    parts.append(
        f'<text x="{width - pad}" y="{height - 10}" font-size="10" text-anchor="end">{bins[-1]:.4g}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def metrics_table(models: dict[str, dict[str, Any]], best: str | None) -> str:
    cols = [c for c in next(iter(models.values()), {}) if c != "segments"]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for name, m in models.items():
        mark = " (best)" if name == best else ""
        cells = "".join(f"<td>{_fmt(m.get(c))}</td>" for c in cols)
        rows.append(f"<tr><th>{_e(name)}{mark}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else _e(v)


def _selection(selection: dict[str, Any]) -> str:
    """The guarded selection: each comparison, its bootstrap figures and why it went that way."""
    if not selection:
        return "<p>No selection record.</p>"
    rows = "".join(
        f"<tr><td>{_e(s.get('challenger'))} vs {_e(s.get('against'))}</td><td>{_fmt(s.get('gain'))}</td>"
        f"<td>{_fmt(s.get('p_value'))}</td><td>{_e(s.get('reason'))}</td></tr>"
        for s in selection.get("steps", [])
    )
    fallback = selection.get("test_fallback")
    return (
        f"<p>{_e(selection.get('method'))}. Served: <b>{_e(selection.get('served'))}</b>"
        + (f" ({_e(fallback)})" if fallback else "")
        + ".</p>"
        + (
            "<table><tr><th>comparison</th><th>validation gain</th><th>p</th><th>decision</th></tr>"
            + rows
            + "</table>"
            if rows
            else ""
        )
    )


def _curves(curves: dict[str, dict[str, Any]]) -> list[str]:
    """Per-epoch training loss and validation metric of the families that train in epochs."""
    out = []
    for family, c in curves.items():
        for key, values in c.items():
            if isinstance(values, list) and values:
                label = "training loss" if key == "loss" else key.replace("_", " ")
                out.append(line_chart([float(v) for v in values], f"{family}: {label} per epoch", "epoch"))
    return out


def render_report(manifest: dict[str, Any]) -> str:
    """The report page for one bundle's manifest."""
    ev = manifest.get("evaluation", {})
    models: dict[str, dict[str, Any]] = ev.get("models", {})
    k = manifest.get("k") or ev.get("protocol", {}).get("k", 10)
    groups = [g.format(k=k) for g in COMPARED]
    series = {name: [float(m.get(g, 0.0)) for g in groups] for name, m in models.items()}
    segments = {
        f"{name} ({seg})": m.get("segments", {}).get(seg, {})
        for name, m in models.items()
        for seg in ("warm", "cold")
    }
    ref = manifest.get("reference", {})
    hist = ref.get("score_histogram", {})
    loss = (manifest.get("model_details") or {}).get("loss_curve") or []
    champion = ev.get("champion")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Shelfwise training report {_e(manifest.get('model_name'))} {_e(manifest.get('version'))}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th:first-child{text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}"
        "</style></head><body>",
        f"<h1>{_e(manifest.get('model_name'))} {_e(manifest.get('version'))}</h1>",
        f"<p>Algorithm <b>{_e(manifest.get('algorithm'))}</b> with "
        f"<code>{_e(json.dumps(manifest.get('hyperparameters'), sort_keys=True))}</code>, chosen on the "
        "validation window. Test-window metrics below; every candidate next to the baselines.</p>",
        bar_chart(groups, series, f"Test window, top-{k}"),
        metrics_table(models, ev.get("best")),
        "<h2>Warm and cold users</h2>",
        metrics_table({k2: v for k2, v in segments.items() if v}, None),
        "<h2>Champion on the same window</h2>",
        (
            f"<p>{_e(champion.get('version'))}: {_e(champion.get('method'))}</p>"
            + metrics_table({"champion": champion.get("metrics", {})}, None)
            if champion
            else "<p>No champion to compare with.</p>"
        ),
        "<h2>Model selection</h2>",
        _selection(ev.get("selection") or {}),
        "<h2>Convergence and scores</h2>",
        line_chart(loss, "Training loss of the final fit", "iteration"),
        *_curves(ev.get("curves") or {}),
        histogram_chart(
            hist.get("bins", []), hist.get("counts", []), f"Top-{k} score histogram (drift baseline)"
        ),
        "<h2>Protocol</h2>",
        f"<pre>{_e(json.dumps(ev.get('protocol', {}), indent=2, sort_keys=True))}</pre>",
        "<h2>Export check</h2>",
        f"<pre>{_e(json.dumps(manifest.get('parity', {}), indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
