"""Scheduled training: decide whether there is enough new data, then train here or submit the Batch job.

Invoked by two EventBridge schedules: daily (``{"mode": "train"}``) and hourly
(``{"mode": "if_new_data"}``). Progress of an in-process run goes out as EventBridge events
(source ``shelfwise.training``) and EMF metrics; a Batch run reports the same from its container.
"""

from __future__ import annotations

import functools
import json
import tempfile
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from shelfwise.aws import client
from shelfwise.events import event_time
from shelfwise.observability import logger, metrics, tracer
from shelfwise.registry import Registry
from shelfwise.rollout import Rollout
from shelfwise.settings import load_settings
from shelfwise.training.trigger import decide, training_available


class Settings(BaseModel):
    curated_bucket: str
    models_bucket: str
    model_name: str
    shelfwise_env: str
    training_job_queue: str
    training_job_definition: str
    min_new_events: int = 50_000
    in_process_max_bytes: int = 200_000_000
    search_level: str = "small"


@functools.cache
def settings() -> Settings:
    return load_settings(Settings)


def _registry(cfg: Settings, now: datetime) -> Registry:
    return Registry(
        client("s3"),
        client("ssm"),
        client("events"),
        cfg.models_bucket,
        cfg.shelfwise_env,
        cfg.model_name,
        actor="train_model",
        clock=lambda: now,
    )


def _last_trained_at(registry: Registry) -> datetime | None:
    versions = registry.versions()
    if not versions or not versions[-1].get("registered_at"):
        return None
    return datetime.fromisoformat(versions[-1]["registered_at"])


def _progress_sink(cfg: Settings) -> Any:
    events = client("events")

    def sink(event: dict[str, Any]) -> None:
        if event["stage"] in {"load", "test", "fit", "bundle", "register"}:
            events.put_events(
                Entries=[
                    {
                        "Source": "shelfwise.training",
                        "DetailType": "TrainingProgress",
                        "Detail": json.dumps({"model_name": cfg.model_name, **event}, default=str),
                    }
                ]
            )
        metrics.add_metric(name="TrainingStageSeconds", unit="Seconds", value=float(event["elapsed_s"]))

    return sink


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = settings()
    mode = str((event.get("detail") or {}).get("mode") or event.get("mode") or "train")
    now = event_time(event)
    registry = _registry(cfg, now)
    decision = decide(
        client("s3"),
        cfg.curated_bucket,
        mode=mode,
        last_trained_at=_last_trained_at(registry),
        min_new_events=cfg.min_new_events,
        in_process_max_bytes=cfg.in_process_max_bytes,
        can_train_here=training_available(),
    )
    logger.info("training decision", extra=decision.to_json())
    result: dict[str, Any] = {"decision": decision.to_json()}
    if decision.action == "submit_batch":
        job = client("batch").submit_job(
            jobName=f"shelfwise-train-{cfg.model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            jobQueue=cfg.training_job_queue,
            jobDefinition=cfg.training_job_definition,
        )
        result["batch_job_id"] = job["jobId"]
    elif decision.action == "train_here":
        # Imported here: only a package that can train carries these libraries.
        from shelfwise.training.job import Progress, TrainConfig, load_curated, run_training, summary

        table = load_curated(client("s3"), cfg.curated_bucket)
        progress = Progress(stream=None, sinks=[_progress_sink(cfg)])
        out = tempfile.mkdtemp(prefix="bundle-", dir="/tmp")
        run = run_training(
            table,
            out,
            TrainConfig(model_name=cfg.model_name, search=cfg.search_level),
            registry=registry,
            progress=progress,
        )
        result["training"] = summary(run)
        if run.registration is not None:
            offer = Rollout(registry).offer(
                run.registration.version, gate_passed=run.registration.offered_for_canary, now=now
            )
            result["canary"] = offer.to_json()
        metrics.add_metric(name="TrainingRuns", unit="Count", value=1)
    return result
