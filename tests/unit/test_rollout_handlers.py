"""The three monitoring/rollout handlers end to end on moto, with real-shaped events."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from shelfwise.registry import Registry
from tests.conftest import load_event
from tests.unit.test_monitoring_job import MANIFESTS, traffic
from tests.unit.test_rollout import bundle

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def handler(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_app", ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        for b in ("models", "mon", "cur"):
            s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        topic = boto3.client("sns", region_name="eu-west-1").create_topic(Name="notify")["TopicArn"]
        clock = [T0]
        reg = Registry(
            s3,
            boto3.client("ssm", region_name="eu-west-1"),
            boto3.client("events", region_name="eu-west-1"),
            "models",
            "dev",
            "recs",
            clock=lambda: clock[0],
        )
        reg.register(bundle(tmp_path, "v1", None), "v1")
        reg.register(bundle(tmp_path, "v2", "v1"), "v2")
        clock[0] = T0 + timedelta(minutes=10)
        reg.start_canary("v2", 0.1)
        for k, v in {
            "MODELS_BUCKET": "models",
            "MONITORING_BUCKET": "mon",
            "CURATED_BUCKET": "cur",
            "MODEL_NAME": "recs",
            "SHELFWISE_ENV": "dev",
            "NOTIFICATIONS_TOPIC_ARN": topic,
            "GATE_ALARM_NAMES": "shelfwise-challenger-quality,shelfwise-error-rate",
            "CANARY_ALLOCATION": "stages",
            "BANDIT_CHAMPION_FLOOR": "0.5",
            "BANDIT_CHALLENGER_CAP": "0.5",
        }.items():
            monkeypatch.setenv(k, v)
        yield {"reg": reg, "s3": s3}


def test_rollback_handler_takes_sns_then_eventbridge_alarms(stack: Any, lambda_context: Any) -> None:
    app = handler("rollback_model")
    out = app.lambda_handler(load_event("alarm_sns_challenger_early_clicks"), lambda_context)
    (d,) = out["decisions"]
    assert d["action"] == "rollback" and d["at"].startswith("2026-11-28T12:20:00")
    assert stack["reg"].aliases().challenger is None
    out = app.lambda_handler(load_event("alarm_eventbridge_challenger_score_drift"), lambda_context)
    assert out["decisions"][0]["action"] == "ignore"


def test_promote_handler_holds_a_young_stage(stack: Any, lambda_context: Any) -> None:
    app = handler("promote_model")
    event = load_event("schedule_every_five_minutes")
    event["time"] = "2026-11-28T12:15:00Z"
    out = app.lambda_handler(event, lambda_context)
    assert out["action"] == "hold" and "young" in out["reason"]
    assert stack["reg"].aliases().canary_weight == 0.1


def test_compute_metrics_handler_publishes_a_fast_pass(stack: Any, lambda_context: Any) -> None:
    s3 = stack["s3"]
    versions = {"champion": "v1", "challenger": "v2"}
    table = traffic(T0, 10, 100, 0.1, {"champion": 0.2, "challenger": 0.2}, versions)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    body = sink.getvalue().to_pybytes()
    s3.put_object(Bucket="cur", Key="curated/events/event_date=2026-11-28/x.parquet", Body=body)
    for v, m in MANIFESTS.items():
        s3.put_object(Bucket="models", Key=f"models/recs/{v}/manifest.json", Body=json.dumps(m).encode())
    app = handler("compute_metrics")
    out = app.lambda_handler(load_event("schedule_every_five_minutes"), lambda_context)
    assert set(out) == {"fast"}
    assert out["fast"]["window_start"] == "2026-11-28T12:00:00+00:00"
    ts = pa.scalar(T0 + timedelta(minutes=5), pa.timestamp("ms", tz="UTC"))
    first_items = table.filter(
        pc.and_(
            pc.and_(pc.equal(table["event_type"], "impression"), pc.equal(table["position"], 0)),
            pc.and_(pc.equal(table["variant"], "champion"), pc.less(table["timestamp"], ts)),
        )
    )
    assert out["fast"]["values"]["Recommendations/champion"] == first_items.num_rows
    assert s3.list_objects_v2(Bucket="mon", Prefix="monitoring/history/")["KeyCount"] == 1
