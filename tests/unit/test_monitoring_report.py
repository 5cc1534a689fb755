"""`shelfwise report`: HTML with inline SVG charts, markers and the timeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from moto import mock_aws

from shelfwise.cli.report import main
from shelfwise.monitoring.publish import MetricDatum, write_history
from shelfwise.monitoring.report import markers_from, render_report, series_from_records, svg_chart

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def records() -> list[dict]:
    out = []
    for i in range(6):
        t = T0 + timedelta(minutes=5 * i)
        out.append(MetricDatum("ListCTR", 0.2, t, {"Variant": "champion"}).to_record())
        out.append(MetricDatum("ListCTR", 0.2 - 0.02 * i, t, {"Variant": "challenger"}).to_record())
        out.append(MetricDatum("EarlyCtrDropLCB", 0.1 * i, t, {"Variant": "challenger"}).to_record())
    return out


def test_series_last_write_wins_and_sorted() -> None:
    recs = [*records(), MetricDatum("ListCTR", 0.5, T0, {"Variant": "champion"}).to_record()]
    s = series_from_records(recs)
    assert s["ListCTR/champion"][0] == (T0, 0.5)
    assert [t for t, _ in s["ListCTR/challenger"]] == sorted(t for t, _ in s["ListCTR/challenger"])


def test_report_has_charts_markers_and_timeline() -> None:
    audit = [
        {"action": "CanaryStarted", "version": "v3", "time": (T0 + timedelta(minutes=1)).isoformat()},
        {"action": "ModelRolledBack", "version": "v3", "time": (T0 + timedelta(minutes=11)).isoformat()},
    ]
    changes = [
        {
            "AlarmName": "s-challenger-early-clicks",
            "NewState": "ALARM",
            "Timestamp": T0 + timedelta(minutes=10),
        }
    ]
    page = render_report(
        records(),
        audit=audit,
        alarm_changes=changes,
        decisions=[
            {"action": "rollback", "at": "x", "reason": "r"},
            {"action": "allocate", "at": "z", "reason": "v2 split 0.1 -> 0.2 (P(challenger better) 0.93)"},
            {
                "action": "advance",
                "at": "y",
                "reason": "v2 advanced 0.1 -> 0.5",
                "detail": {
                    "evidence": {
                        "design": "interleaved",
                        "estimate": 1.02,
                        "lower": 0.95,
                        "upper": 1.1,
                        "confidence": 0.95,
                        "margin": 0.06,
                        "n_challenger": 800,
                        "n_champion": 800,
                        "mature_windows": 9,
                    }
                },
            },
        ],
    )
    assert "click ratio 1.020, 95% bounds [0.950, 1.100]" in page and "9 matured windows" in page
    assert "decision: allocate" in page and "P(challenger better) 0.93" in page
    assert page.count("<svg") == 2  # ListCTR and the comparison chart
    assert page.count("<polyline") == 3
    assert "ModelRolledBack v3" in page and "s-challenger-early-clicks" in page
    assert "early-click alarm" in page  # threshold line
    assert len(markers_from(audit, changes)) == 3


def test_empty_chart_says_no_data() -> None:
    assert "no data" in svg_chart("x", {})


def test_cli_from_history_file_and_bucket(tmp_path: Path) -> None:
    hist = tmp_path / "h.jsonl"
    hist.write_text("\n".join(json.dumps(r) for r in records()))
    out = tmp_path / "r.html"
    assert main(["--history-file", str(hist), "--out", str(out)]) == 0
    assert "<svg" in out.read_text()
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="mon", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        write_history(s3, "mon", T0, "fast", [MetricDatum("ScorePSI", 0.7, T0, {"Variant": "challenger"})])
        assert main(["--monitoring-bucket", "mon", "--out", str(out)]) == 0
        assert "Served-score PSI" in out.read_text()
