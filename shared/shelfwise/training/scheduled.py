"""The scheduled training run (the ``train_model`` function's one domain call).

Decide whether there is enough new data (:mod:`shelfwise.training.trigger`), then either submit
the AWS Batch job, or train here, report progress as EventBridge events and EMF metrics, and offer
the registered version for a canary.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from shelfwise.observability import logger, metrics
from shelfwise.training.trigger import decide, training_available

if TYPE_CHECKING:
    from shelfwise.registry import Registry

# Stages announced on EventBridge (every stage's duration also goes out as a metric).
ANNOUNCED_STAGES = frozenset({"load", "test", "fit", "bundle", "register"})


class TrainingSchedule(BaseModel):
    """Where the scheduled run reads, where it submits, and its thresholds."""

    curated_bucket: str
    model_name: str
    training_job_queue: str
    training_job_definition: str
    min_new_events: int = 50_000
    in_process_max_bytes: int = 200_000_000
    search_level: str = "small"


def last_trained_at(registry: Registry) -> datetime | None:
    """When the newest registered version was registered (None before the first)."""
    versions = registry.versions()
    if not versions or not versions[-1].get("registered_at"):
        return None
    return datetime.fromisoformat(versions[-1]["registered_at"])


def progress_sink(events: Any, model_name: str) -> Callable[[dict[str, Any]], None]:
    """A training progress sink: stage events to EventBridge (``shelfwise.training``), durations as metrics."""

    def sink(event: dict[str, Any]) -> None:
        if event["stage"] in ANNOUNCED_STAGES:
            events.put_events(
                Entries=[
                    {
                        "Source": "shelfwise.training",
                        "DetailType": "TrainingProgress",
                        "Detail": json.dumps({"model_name": model_name, **event}, default=str),
                    }
                ]
            )
        metrics.add_metric(name="TrainingStageSeconds", unit="Seconds", value=float(event["elapsed_s"]))

    return sink


def scheduled_training(
    mode: str,
    now: datetime,
    schedule: TrainingSchedule,
    *,
    registry: Registry,
    s3: Any,
    batch: Any,
    events: Any,
    work_dir: str = "/tmp",
) -> dict[str, Any]:
    """Decide, then submit the Batch job or train here and offer the result; the run's summary."""
    decision = decide(
        s3,
        schedule.curated_bucket,
        mode=mode,
        last_trained_at=last_trained_at(registry),
        min_new_events=schedule.min_new_events,
        in_process_max_bytes=schedule.in_process_max_bytes,
        can_train_here=training_available(),
    )
    logger.info("training decision", extra=decision.to_json())
    result: dict[str, Any] = {"decision": decision.to_json()}
    if decision.action == "submit_batch":
        job = batch.submit_job(
            jobName=f"shelfwise-train-{schedule.model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            jobQueue=schedule.training_job_queue,
            jobDefinition=schedule.training_job_definition,
        )
        result["batch_job_id"] = job["jobId"]
    elif decision.action == "train_here":
        # Imported here: only a package that can train carries these libraries.
        from shelfwise.rollout import Rollout
        from shelfwise.training.job import Progress, TrainConfig, load_curated, run_training, summary

        table = load_curated(s3, schedule.curated_bucket)
        progress = Progress(stream=None, sinks=[progress_sink(events, schedule.model_name)])
        out = tempfile.mkdtemp(prefix="bundle-", dir=work_dir)
        run = run_training(
            table,
            out,
            TrainConfig(model_name=schedule.model_name, search=schedule.search_level),
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


def training_mode(event: dict[str, Any]) -> str:
    """``train`` (daily) or ``if_new_data`` (hourly), from the schedule's input or its ``detail``."""
    return str((event.get("detail") or {}).get("mode") or event.get("mode") or "train")
