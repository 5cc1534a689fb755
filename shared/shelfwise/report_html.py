"""The training report: one self-contained HTML page with inline SVG plots (:mod:`shelfwise.svg`).

Plots: the test-window metric comparison of every family (the baselines next to the candidates),
the loss curve of the final fit when the algorithm has one, and the score histogram that drift
monitoring compares against. Everything comes from the manifest, so the report can be
re-rendered from any bundle.
"""

from __future__ import annotations

import html
import json
from typing import Any

from shelfwise import svg

COMPARED = ("ndcg@{k}", "recall@{k}", "map@{k}", "hitrate@{k}", "mrr")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


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
    ranker = selection.get("ranker")
    if ranker:  # the neural ranker against the family it re-ranks (cross-fitted on validation)
        rows += (
            f"<tr><td>ranker on {_e(ranker.get('retrieval'))} vs {_e(ranker.get('retrieval'))} alone "
            f"(lists: {_e(ranker.get('training_data'))})</td><td>{_fmt(ranker.get('gain'))}</td>"
            f"<td>{_fmt(ranker.get('p_value'))}</td><td>{_e(ranker.get('reason'))}</td></tr>"
        )
    fallback = selection.get("test_fallback")
    override = selection.get("override") or {}
    overridden = (
        f"<p><b>Operator override</b>: serve {_e(override.get('family'))}"
        + (f" ({_e(override.get('reason'))})" if override.get("reason") else "")
        + f"; the guard would have served {_e(override.get('guard_would_serve'))}"
        + ("; past the offline gate's comparisons" if override.get("past_gate") else "")
        + ".</p>"
        if override
        else ""
    )
    return (
        f"<p>{_e(selection.get('method'))}. Served: <b>{_e(selection.get('served'))}</b>"
        + (f" ({_e(fallback)})" if fallback else "")
        + ".</p>"
        + overridden
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
                points = [(float(i + 1), float(v)) for i, v in enumerate(values)]
                out.append(svg.line_chart(f"{family}: {label} per epoch", {label: points}, x_unit="ep."))
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
        "svg{display:block;width:100%;height:auto;margin:1em 0}"
        "</style></head><body>",
        f"<h1>{_e(manifest.get('model_name'))} {_e(manifest.get('version'))}</h1>",
        f"<p>Algorithm <b>{_e(manifest.get('algorithm'))}</b> with "
        f"<code>{_e(json.dumps(manifest.get('hyperparameters'), sort_keys=True))}</code>, chosen on the "
        "validation window. Test-window metrics below; every candidate next to the baselines.</p>",
        svg.bar_chart(groups, series, f"Test window, top-{k}"),
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
        (
            svg.line_chart(
                "Training loss of the final fit",
                {"loss": [(float(i + 1), float(v)) for i, v in enumerate(loss)]},
                x_unit="it.",
            )
            if loss
            else "<p>Training loss of the final fit: not recorded for this algorithm.</p>"
        ),
        *_curves(ev.get("curves") or {}),
        svg.histogram(
            hist.get("bins", []), hist.get("counts", []), f"Top-{k} score histogram (drift baseline)"
        ),
        "<h2>Protocol</h2>",
        f"<pre>{_e(json.dumps(ev.get('protocol', {}), indent=2, sort_keys=True))}</pre>",
        "<h2>Export check</h2>",
        f"<pre>{_e(json.dumps(manifest.get('parity', {}), indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
