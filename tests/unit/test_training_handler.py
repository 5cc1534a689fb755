"""The train_model handler on moto: skip without data, train in process, submit to Batch when too big."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
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


def _fake_batch(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch, status: str = "RUNNABLE"
) -> list[dict[str, Any]]:
    """The handler's Batch client replaced by one that records each submitted job (job-1, job-2...)
    and lists them by name as ListJobs does with a JOB_NAME filter (every state, newest first),
    each in ``status``."""
    submitted: list[dict[str, Any]] = []

    class FakeBatch:
        def submit_job(self, **kw: Any) -> dict[str, str]:
            submitted.append(kw)
            return {"jobId": f"job-{len(submitted)}"}

        def list_jobs(self, jobQueue: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
            (flt,) = filters
            assert flt["name"] == "JOB_NAME"
            jobs = [
                {"jobId": f"job-{i + 1}", "jobName": kw["jobName"], "status": status, "createdAt": i}
                for i, kw in enumerate(submitted)
                if kw["jobQueue"] == jobQueue and kw["jobName"].lower() == flt["values"][0].lower()
            ]
            return {"jobSummaryList": jobs[::-1]}

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


SCHEDULED = "2026-10-02T03:00:00Z"


def test_run_ids_come_from_the_model_and_the_scheduled_instant() -> None:
    from shelfwise.training.scheduled import TrainingRun, run_id

    at = datetime(2026, 10, 2, 3, 0, tzinfo=UTC)
    rid = run_id("recs", at)
    assert rid.startswith("20261002T030000Z-") and len(rid) == len("20261002T030000Z-") + 8
    # the same run however it is spelled or delivered; another model or instant is another run
    assert run_id("recs", datetime(2026, 10, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))) == rid
    assert run_id("recs", at.replace(microsecond=999)) == rid
    assert run_id("shop-b", at) != rid and run_id("recs", at + timedelta(hours=1)) != rid
    later = datetime(2026, 10, 2, 9, 13, 7, tzinfo=UTC)  # when the retry arrived
    run = TrainingRun.of("recs", later, at)
    assert run.version == f"v{rid}" and run.job_name == f"shelfwise-train-recs-{rid}"
    from shelfwise_local.runtime.batch import JOB_NAME

    assert JOB_NAME.match(TrainingRun.of("a" * 41, later, at).job_name)
    # an operator's run (no scheduled instant): named from the platform's clock, a version of its own
    manual = TrainingRun.of("recs", later, None)
    assert manual.version is None and manual.job_name == "shelfwise-train-recs-20261002T091307"


def test_a_scheduled_run_delivered_twice_trains_and_registers_once(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    _put_curated(s3)
    app = _load(monkeypatch)
    event = {"id": "d1", "mode": "train", "time": SCHEDULED}
    first = app.lambda_handler(event, lambda_context)
    version = first["training"]["version"]
    assert first["decision"]["action"] == "train_here" and version == first["run"]["version"]
    assert version.startswith("v20261002T030000Z-")
    manifest = json.loads(
        s3.get_object(Bucket=MODELS, Key=f"models/recs/{version}/manifest.json")["Body"].read()
    )
    assert manifest["created_at"] == "2026-10-02T03:00:00+00:00"  # the scheduled instant, not the clock
    again = app.lambda_handler({**event, "id": "d2"}, lambda_context)  # Scheduler's retry
    assert again["decision"]["action"] == "done" and again["training"]["version"] == version
    assert again["training"]["registration"] == first["training"]["registration"]
    manifests = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=MODELS, Prefix="models/recs/")["Contents"]
        if o["Key"].endswith("manifest.json")
    ]
    assert manifests == [f"models/recs/{version}/manifest.json"]
    audit = [o["Key"] for o in s3.list_objects_v2(Bucket=MODELS, Prefix="audit/recs/")["Contents"]]
    assert len([k for k in audit if "-ModelRegistered-" in k]) == 1
    # the next day's run is another run
    nextday = app.lambda_handler(
        {"id": "d3", "mode": "train", "time": "2026-10-03T03:00:00Z"}, lambda_context
    )
    assert nextday["training"]["version"].startswith("v20261003T030000Z-")


def test_a_scheduled_batch_run_delivered_twice_submits_one_job(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    _put_curated(s3)
    app = _load(monkeypatch, IN_PROCESS_MAX_BYTES="10")
    submitted = _fake_batch(app, monkeypatch)
    event = {"id": "b1", "mode": "train", "time": SCHEDULED}
    first = app.lambda_handler(event, lambda_context)
    again = app.lambda_handler({**event, "id": "b2"}, lambda_context)
    assert len(submitted) == 1 and first["batch_job_id"] == again["batch_job_id"] == "job-1"
    assert again["batch_job_status"] == "RUNNABLE"
    assert submitted[0]["jobName"] == first["run"]["job_name"]
    env = {e["name"]: e["value"] for e in submitted[0]["containerOverrides"]["environment"]}
    assert env == {"TRAINING_VERSION": first["run"]["version"], "TRAINING_AS_OF": "2026-10-02T03:00:00+00:00"}
    # an operator's run (no time) is a new run each time, named from the clock, as before
    manual = app.lambda_handler({"id": "b3", "mode": "train"}, lambda_context)
    assert manual["batch_job_id"] == "job-2" and "containerOverrides" not in submitted[1]
    assert submitted[1]["jobName"].startswith("shelfwise-train-recs-")


def test_a_scheduled_batch_run_whose_job_failed_submits_again(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    _put_curated(s3)
    app = _load(monkeypatch, IN_PROCESS_MAX_BYTES="10")
    submitted = _fake_batch(app, monkeypatch, status="FAILED")
    event = {"id": "f1", "mode": "train", "time": SCHEDULED}
    app.lambda_handler(event, lambda_context)
    again = app.lambda_handler({**event, "id": "f2"}, lambda_context)
    assert again["batch_job_id"] == "job-2" and submitted[0]["jobName"] == submitted[1]["jobName"]


def test_the_batch_job_answers_with_a_version_an_earlier_attempt_registered(
    s3: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shelfwise train --register` with the run's version and instant (what the Batch job gets)."""
    from shelfwise.cli.train import train_main

    _put_curated(s3)
    monkeypatch.setenv("TRAINING_VERSION", "v20261002T030000Z-0000abcd")
    monkeypatch.setenv("TRAINING_AS_OF", SCHEDULED)
    argv = ["--curated-bucket", CURATED, "--register", "--models-bucket", MODELS, "--search", "none"]
    assert train_main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["version"] == "v20261002T030000Z-0000abcd"
    manifest_key = "models/recs/v20261002T030000Z-0000abcd/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=MODELS, Key=manifest_key)["Body"].read())
    assert manifest["created_at"] == "2026-10-02T03:00:00+00:00"
    assert train_main(argv) == 0  # the job's second attempt
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["already_registered"] and again["registration"] == first["registration"]
    monkeypatch.setenv("TRAINING_AS_OF", "yesterday")
    monkeypatch.setenv("TRAINING_VERSION", "v2")
    assert train_main(argv) == 2
    assert "--as-of must be an ISO 8601 time, got 'yesterday'" in capsys.readouterr().err
