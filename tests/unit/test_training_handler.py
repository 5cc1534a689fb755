"""The train_model handler on moto: skip without data, train in process, submit to Batch when too big."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

HANDLER = Path(__file__).resolve().parents[2] / "functions" / "train_model" / "app.py"
CURATED, MODELS = "handler-curated", "handler-models"


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    base = {
        "CURATED_BUCKET": CURATED,
        "MODELS_BUCKET": MODELS,
        "MODEL_NAME": "recs",
        "SHELFWISE_ENV": "test",
        "TRAINING_JOB_QUEUE": "queue",
        "TRAINING_JOB_DEFINITION": "jobdef",
        "SEARCH_LEVEL": "none",
        "MIN_NEW_EVENTS": "10",
    }
    for k, v in {**base, **env}.items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("train_model_app", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        for b in (CURATED, MODELS):
            client.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def _events() -> pa.Table:
    """80 users over 30 days, each buying within one of four item groups."""
    rng = np.random.default_rng(5)
    n = 2400
    user = rng.integers(0, 80, n)
    item = (user % 4) + 4 * rng.integers(0, 10, n)
    ts = datetime(2026, 9, 1, tzinfo=UTC) + rng.integers(0, 30 * 86400, n) * timedelta(seconds=1)
    return pa.table(
        {
            "event_type": ["purchase"] * n,
            "user_id": [f"u{u}" for u in user],
            "item_id": [f"i{i}" for i in item],
            "timestamp": pa.array(list(ts), pa.timestamp("ms", tz="UTC")),
            "weight": pa.array(np.full(n, 8.0, np.float32)),
        }
    )


def _put_curated(s3: Any) -> None:
    buf = io.BytesIO()
    pq.write_table(_events(), buf)
    s3.put_object(Bucket=CURATED, Key="curated/events/event_date=2026-09-01/x.parquet", Body=buf.getvalue())


def test_skips_without_curated_data(s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any) -> None:
    app = _load(monkeypatch)
    out = app.lambda_handler({"id": "e1", "detail": {"mode": "if_new_data"}}, lambda_context)
    assert out["decision"]["action"] == "skip"


def test_trains_in_process_and_registers(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    _put_curated(s3)
    app = _load(monkeypatch)
    out = app.lambda_handler({"id": "e2", "mode": "if_new_data"}, lambda_context)
    assert out["decision"]["action"] == "train_here"
    version = out["training"]["version"]
    listed = s3.list_objects_v2(Bucket=MODELS, Prefix=f"models/recs/{version}/")["Contents"]
    assert any(o["Key"].endswith("manifest.json") for o in listed)
    # Nothing new since that version: the hourly check skips.
    again = app.lambda_handler({"id": "e3", "mode": "if_new_data"}, lambda_context)
    assert again["decision"]["action"] == "skip" and again["decision"]["new_events"] == 0


def _fake_batch(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The handler's Batch client replaced by one that records each submitted job (job-1, job-2...)."""
    submitted: list[dict[str, Any]] = []

    class FakeBatch:
        def submit_job(self, **kw: Any) -> dict[str, str]:
            submitted.append(kw)
            return {"jobId": f"job-{len(submitted)}"}

    real_client = app.client
    monkeypatch.setattr(app, "client", lambda name: FakeBatch() if name == "batch" else real_client(name))
    return submitted


def test_large_data_goes_to_batch(s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any) -> None:
    _put_curated(s3)
    app = _load(monkeypatch, IN_PROCESS_MAX_BYTES="10")
    submitted = _fake_batch(app, monkeypatch)
    out = app.lambda_handler({"id": "e4", "mode": "train"}, lambda_context)
    assert out["decision"]["action"] == "submit_batch" and out["batch_job_id"] == "job-1"
    assert submitted[0]["jobQueue"] == "queue" and submitted[0]["jobDefinition"] == "jobdef"


def test_an_operator_override_reaches_the_batch_job(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    _put_curated(s3)
    app = _load(monkeypatch, IN_PROCESS_MAX_BYTES="10")
    submitted = _fake_batch(app, monkeypatch)
    override = {"family": "sequential", "reason": "canary it", "past_gate": False}
    out = app.lambda_handler({"id": "e6", "mode": "train", "override": override}, lambda_context)
    assert out["override"] == override
    env = {e["name"]: e["value"] for e in submitted[0]["containerOverrides"]["environment"]}
    assert env["TRAINING_OVERRIDE_FAMILY"] == "sequential" and env["TRAINING_OVERRIDE_PAST_GATE"] == "false"
    from shelfwise.errors import InputError

    with pytest.raises(InputError, match="override"):
        app.lambda_handler({"id": "e7", "mode": "train", "override": {"family": 1}}, lambda_context)


def test_batch_without_a_training_image_says_what_to_do(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    _put_curated(s3)
    app = _load(monkeypatch, IN_PROCESS_MAX_BYTES="10", TRAINING_JOB_DEFINITION="")
    out = app.lambda_handler({"id": "e5", "mode": "train"}, lambda_context)
    assert out["decision"]["action"] == "submit_batch" and "batch_job_id" not in out
    assert "make train-image" in out["error"] and "TrainingImageUri" in out["error"]


def test_progress_events_and_metrics_are_the_same_for_every_runner() -> None:
    """The Lambda (EMF) and the Batch job (PutMetricData) publish the same names for the same steps."""
    from shelfwise.training.progress import cloudwatch_metric_sink, emf_metric_sink, event_sink

    sent: list[dict[str, Any]] = []
    put: list[dict[str, Any]] = []
    emf: list[tuple[str, float]] = []

    class Events:
        def put_events(self, Entries: list[dict[str, Any]]) -> None:
            sent.extend(Entries)

    class CloudWatch:
        def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:
            assert Namespace == "Shelfwise"
            put.extend(MetricData)

    class Metrics:
        def add_metric(self, name: str, unit: str, value: float) -> None:
            emf.append((name, value))

    steps = [
        {"stage": "load", "elapsed_s": 1.0, "events": 10},
        {"stage": "search", "elapsed_s": 1.5, "trial": 1},
        {"stage": "register", "elapsed_s": 3.0, "version": "v1"},
        {"stage": "done", "elapsed_s": 3.1, "version": "v1"},
    ]
    sinks = [event_sink(Events(), "recs", "batch"), cloudwatch_metric_sink(CloudWatch(), "batch")]
    for step in steps:
        for sink in [*sinks, emf_metric_sink(Metrics())]:
            sink(step)
    assert [json.loads(e["Detail"])["stage"] for e in sent] == ["load", "register", "done"]
    assert all(e["Source"] == "shelfwise.training" and e["DetailType"] == "TrainingProgress" for e in sent)
    assert json.loads(sent[0]["Detail"])["runner"] == "batch"
    assert [(m["MetricName"], m["Value"]) for m in put] == emf
    assert emf == [("TrainingStageSeconds", 1.0), ("TrainingStageSeconds", 3.0), ("TrainingRuns", 1.0)]
