"""The scheduled training run (the ``train_model`` function's one domain call).

Decide whether there is enough new data (:mod:`shelfwise.training.trigger`), then either submit
the AWS Batch job, or train here and report progress as EventBridge events and EMF metrics
(:mod:`shelfwise.training.progress`, the same the Batch job sends). Neither runner starts the
canary: the registry's ``ModelRegistered`` event does, through the rule to promote_model
(:func:`shelfwise.rollout.offer_registered`), whoever registered the version.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from shelfwise.errors import InputError
from shelfwise.observability import logger, metrics
from shelfwise.training.guard import FamilyOverride
from shelfwise.training.trigger import decide, training_available

if TYPE_CHECKING:
    from shelfwise.registry import Registry


class TrainingSchedule(BaseModel):
    """Where the scheduled run reads, where it submits, and its thresholds."""

    curated_bucket: str
    model_name: str
    training_job_queue: str
    # empty while the stack has no TrainingImageUri (no job definition yet)
    training_job_definition: str = ""
    min_new_events: int = 50_000
    in_process_max_bytes: int = 200_000_000
    search_level: str = "small"
    # Comma-separated families beyond the defaults, e.g. "sequential" (needs PyTorch where it trains:
    # the training image has it, the zip function does not).
    training_families: str = ""


def last_trained_at(registry: Registry) -> datetime | None:
    """When the newest registered version was registered (None before the first)."""
    versions = registry.versions()
    if not versions or not versions[-1].get("registered_at"):
        return None
    return datetime.fromisoformat(versions[-1]["registered_at"])


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
    override: FamilyOverride | None = None,
) -> dict[str, Any]:
    """Decide, then submit the Batch job or train here and offer the result; the run's summary.

    ``override``: an operator's family override (:func:`training_override`), passed to either runner.
    """
    decision = decide(
        s3,
        schedule.curated_bucket,
        mode=mode,
        last_trained_at=last_trained_at(registry),
        min_new_events=schedule.min_new_events,
        in_process_max_bytes=schedule.in_process_max_bytes,
        # an override's family trains where its libraries are (PyTorch: the training image)
        can_train_here=training_available(
            ",".join([schedule.training_families, override.family if override else ""])
        ),
    )
    logger.info("training decision", extra=decision.to_json())
    result: dict[str, Any] = {"decision": decision.to_json()}
    if override is not None:
        result["override"] = override.to_json()
    if decision.action == "submit_batch" and not schedule.training_job_definition:
        result["error"] = (
            "training must run on AWS Batch but the stack has no training image: run `make train-image` "
            "and deploy with TrainingImageUri set (docs/training.md)"
        )
        logger.error("no training job definition", extra={"reason": decision.reason})
        metrics.add_metric(name="TrainingNotConfigured", unit="Count", value=1)
    elif decision.action == "submit_batch":
        job = batch.submit_job(
            jobName=f"shelfwise-train-{schedule.model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            jobQueue=schedule.training_job_queue,
            jobDefinition=schedule.training_job_definition,
            **({"containerOverrides": {"environment": _override_environment(override)}} if override else {}),
        )
        result["batch_job_id"] = job["jobId"]
    elif decision.action == "train_here":
        # Imported here: only a package that can train carries these libraries.
        from shelfwise.offpolicy_gate import registration_off_policy_check
        from shelfwise.training.job import (
            Progress,
            TrainConfig,
            load_bot_flags,
            load_catalogue,
            load_curated,
            run_training,
            summary,
        )
        from shelfwise.training.progress import emf_metric_sink, event_sink, finish_fields
        from shelfwise.training.search import parse_families

        table = load_curated(s3, schedule.curated_bucket)
        progress = Progress(
            stream=None, sinks=[event_sink(events, schedule.model_name, "lambda"), emf_metric_sink(metrics)]
        )
        out = tempfile.mkdtemp(prefix="bundle-", dir=work_dir)
        # The gate's off-policy half, when the champion's served lists explored (else None).
        off_policy = registration_off_policy_check(
            table,
            registry,
            tempfile.mkdtemp(prefix="ope-", dir=work_dir),
            warn=lambda why: logger.warning("off-policy gate unavailable", extra={"error": why}),
        )
        try:
            run = run_training(
                table,
                out,
                TrainConfig(
                    model_name=schedule.model_name,
                    search=schedule.search_level,
                    families=parse_families("", schedule.training_families),
                    override=override,
                ),
                registry=registry,
                progress=progress,
                catalogue=load_catalogue(s3, schedule.curated_bucket),
                off_policy=off_policy,
                flagged_bots=load_bot_flags(s3, schedule.curated_bucket),
            )
        except Exception as exc:
            progress("failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        progress("done", finish_fields(run))
        result["training"] = summary(run)
    return result


def _override_environment(override: FamilyOverride) -> list[dict[str, str]]:
    """The override as the Batch job's ``shelfwise train`` reads it (its flags' environment defaults)."""
    return [
        {"name": "TRAINING_OVERRIDE_FAMILY", "value": override.family},
        {"name": "TRAINING_OVERRIDE_REASON", "value": override.reason},
        {"name": "TRAINING_OVERRIDE_PAST_GATE", "value": "true" if override.past_gate else "false"},
    ]


def training_override(event: dict[str, Any]) -> FamilyOverride | None:
    """An operator's ``{"override": {"family": ..., "reason": ..., "past_gate": ...}}`` in the
    invocation (or its ``detail``); None for the schedules, which carry none."""
    raw = (event.get("detail") or {}).get("override") or event.get("override")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("family"), str):
        raise InputError('override must be {"family": NAME, "reason": TEXT, "past_gate": BOOL}')
    unknown = set(raw) - {"family", "reason", "past_gate"}
    if unknown:
        raise InputError(f"unknown override fields {sorted(unknown)}")
    if not isinstance(raw.get("reason", ""), str) or not isinstance(raw.get("past_gate", False), bool):
        raise InputError("override reason must be text and past_gate true or false")
    return FamilyOverride(raw["family"], reason=raw.get("reason", ""), past_gate=raw.get("past_gate", False))


def training_mode(event: dict[str, Any]) -> str:
    """``train`` (daily) or ``if_new_data`` (hourly), from the schedule's input or its ``detail``."""
    return str((event.get("detail") or {}).get("mode") or event.get("mode") or "train")
