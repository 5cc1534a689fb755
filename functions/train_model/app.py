"""Scheduled training: decide whether there is enough new data, then train here or submit the Batch job.

Invoked by two EventBridge schedules: daily (``{"mode": "train"}``) and hourly
(``{"mode": "if_new_data"}``). Progress of an in-process run goes out as EventBridge events
(source ``shelfwise.training``) and EMF metrics; a Batch run reports the same from its container
(``shelfwise train --report-progress``). Neither runner starts the canary: the registry's
``ModelRegistered`` event does, through the rule to promote_model, whoever registered the version.
"""

from __future__ import annotations

import functools
import tempfile
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from shelfwise.aws import client
from shelfwise.events import event_time
from shelfwise.observability import logger, metrics, tracer
from shelfwise.registry import Registry
from shelfwise.settings import load_settings
from shelfwise.training.trigger import decide, training_available


class Settings(BaseModel):
    curated_bucket: str
    models_bucket: str
    model_name: str
    shelfwise_env: str
    training_job_queue: str
    # empty while the stack has no TrainingImageUri (no job definition yet)
    training_job_definition: str = ""
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
    if decision.action == "submit_batch" and not cfg.training_job_definition:
        result["error"] = (
            "training must run on AWS Batch but the stack has no training image: run `make train-image` "
            "and deploy with TrainingImageUri set (docs/training.md)"
        )
        logger.error("no training job definition", extra={"reason": decision.reason})
        metrics.add_metric(name="TrainingNotConfigured", unit="Count", value=1)
    elif decision.action == "submit_batch":
        job = client("batch").submit_job(
            jobName=f"shelfwise-train-{cfg.model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            jobQueue=cfg.training_job_queue,
            jobDefinition=cfg.training_job_definition,
        )
        result["batch_job_id"] = job["jobId"]
    elif decision.action == "train_here":
        # Imported here: only a package that can train carries these libraries.
        from shelfwise.training.job import (
            Progress,
            TrainConfig,
            load_catalogue,
            load_curated,
            run_training,
            summary,
        )
        from shelfwise.training.progress import emf_metric_sink, event_sink, finish_fields

        table = load_curated(client("s3"), cfg.curated_bucket)
        progress = Progress(
            stream=None,
            sinks=[event_sink(client("events"), cfg.model_name, "lambda"), emf_metric_sink(metrics)],
        )
        out = tempfile.mkdtemp(prefix="bundle-", dir="/tmp")
        try:
            run = run_training(
                table,
                out,
                TrainConfig(model_name=cfg.model_name, search=cfg.search_level),
                registry=registry,
                progress=progress,
                catalogue=load_catalogue(client("s3"), cfg.curated_bucket),
            )
        except Exception as exc:
            progress("failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        progress("done", finish_fields(run))
        result["training"] = summary(run)
    return result
