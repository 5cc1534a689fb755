"""The scheduled training run (the ``train_model`` function's one domain call).

Decide whether there is enough new data (:mod:`shelfwise.training.trigger`), then either submit
the AWS Batch job, or train here and report progress as EventBridge events and EMF metrics
(:mod:`shelfwise.training.progress`, the same the Batch job sends). Neither runner starts the
canary: the registry's ``ModelRegistered`` event does, through the rule to promote_model
(:func:`shelfwise.rollout.offer_registered`), whoever registered the version.

A scheduled run is retry-safe. Scheduler retries a delivery it could not make and Lambda retries
a failed asynchronous invocation, so the same run can arrive two or three times. Its id comes
from the model name and the instant it was scheduled for (:func:`run_id`), not from the clock:
the version it registers and the name of the Batch job it submits are the same on every
delivery. A delivery whose version is already registered answers with it (and completes what an
interrupted earlier attempt left undone, :meth:`Registry.resume_registration`); one that finds a
live or succeeded Batch job of its name answers with that job. An operator's invocation without a
``time`` gets a fresh id from the clock, as a new run.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from shelfwise.errors import InputError
from shelfwise.events import event_time
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


# Batch job states in which a job of the run's name stands for the run (FAILED ones do not: a
# retry submits again). ListJobs with a filter answers jobs in every state.
LIVE_JOB_STATES = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"})


def run_id(model_name: str, at: datetime) -> str:
    """The id of the run of ``model_name`` scheduled for ``at``: ``20261207T030000Z-<hash8>``.

    Sortable by time; the hash of (model name, instant) keeps two models' runs of the same
    instant apart in a shared Batch queue. Whole seconds (Scheduler's instants have no fraction).
    """
    instant = at.astimezone(UTC).replace(microsecond=0)
    digest = hashlib.blake2b(f"{model_name}|{instant.isoformat()}".encode(), digest_size=4).hexdigest()
    return f"{instant:%Y%m%dT%H%M%SZ}-{digest}"


@dataclass(frozen=True)
class TrainingRun:
    """What one run is called: the same on every delivery of a scheduled run.

    ``version`` is None for an operator's run (no scheduled instant): the training then names
    the version from its clock and data hash (:func:`shelfwise.training.job.make_version`).
    """

    id: str
    job_name: str
    version: str | None
    scheduled_for: datetime | None

    @classmethod
    def of(cls, model_name: str, now: datetime, scheduled_for: datetime | None) -> TrainingRun:
        if scheduled_for is None:
            at = now.astimezone(UTC)
            return cls(f"{at:%Y%m%dT%H%M%S}", f"shelfwise-train-{model_name}-{at:%Y%m%dT%H%M%S}", None, None)
        rid = run_id(model_name, scheduled_for)
        # Batch job names: up to 128 letters, digits, hyphens and underscores
        return cls(rid, f"shelfwise-train-{model_name}-{rid}"[:128], f"v{rid}", scheduled_for)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_name": self.job_name,
            "version": self.version,
            "scheduled_for": self.scheduled_for.isoformat() if self.scheduled_for else None,
        }


def scheduled_instant(event: dict[str, Any]) -> datetime | None:
    """The instant a schedule (or rule) delivered this run for, from the event's ``time``; None
    for an operator's invocation without one (a new run each time)."""
    return event_time(event) if event.get("time") else None


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
    scheduled_for: datetime | None = None,
) -> dict[str, Any]:
    """Decide, then submit the Batch job or train here and offer the result; the run's summary.

    ``override``: an operator's family override (:func:`training_override`), passed to either runner.
    ``scheduled_for``: the instant the schedule fired for (:func:`scheduled_instant`): every
    delivery of it is the same run (one Batch job, one version); None for an operator's run.
    """
    run = TrainingRun.of(schedule.model_name, now, scheduled_for)
    if run.version is not None and registry.exists(run.version):
        # A repeated delivery of a run that registered its version: that version is the answer.
        registration = registry.resume_registration(run.version)
        logger.info("scheduled run already registered", extra={"run": run.id, "version": run.version})
        return {
            "run": run.to_json(),
            "decision": {"action": "done", "reason": f"this run already registered {run.version}"},
            "training": {"version": run.version, "registration": registration.to_json()},
        }
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
    result: dict[str, Any] = {"run": run.to_json(), "decision": decision.to_json()}
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
        existing = _live_job(batch, schedule.training_job_queue, run.job_name) if run.version else None
        if existing is not None:
            # A repeated delivery while (or after) its job runs: that job is the answer.
            logger.info("scheduled run already submitted", extra={"run": run.id, "job": existing})
            result["batch_job_id"] = existing["jobId"]
            result["batch_job_status"] = existing["status"]
        else:
            environment = _run_environment(run) + (_override_environment(override) if override else [])
            job = batch.submit_job(
                jobName=run.job_name,
                jobQueue=schedule.training_job_queue,
                jobDefinition=schedule.training_job_definition,
                **({"containerOverrides": {"environment": environment}} if environment else {}),
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
        # The bundle and the champion's copy for the off-policy gate are scratch: Lambda keeps /tmp
        # across warm invocations, so each run removes its own (the registry holds the result).
        with tempfile.TemporaryDirectory(prefix="train-", dir=work_dir) as scratch:
            # The gate's off-policy half, when the champion's served lists explored (else None).
            off_policy = registration_off_policy_check(
                table,
                registry,
                scratch,
                warn=lambda why: logger.warning("off-policy gate unavailable", extra={"error": why}),
            )
            try:
                trained = run_training(
                    table,
                    Path(scratch) / "bundle",
                    TrainConfig(
                        model_name=schedule.model_name,
                        search=schedule.search_level,
                        families=parse_families("", schedule.training_families),
                        override=override,
                    ),
                    registry=registry,
                    version=run.version,
                    progress=progress,
                    now=scheduled_for or now,
                    catalogue=load_catalogue(s3, schedule.curated_bucket),
                    off_policy=off_policy,
                    flagged_bots=load_bot_flags(s3, schedule.curated_bucket),
                )
            except Exception as exc:
                progress("failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
                raise
        progress("done", finish_fields(trained))
        result["training"] = {k: v for k, v in summary(trained).items() if k != "bundle_dir"}
    return result


def _live_job(batch: Any, queue: str, name: str) -> dict[str, Any] | None:
    """The newest job of ``name`` in ``queue`` that is queued, running or succeeded (None if none).

    ListJobs with a ``JOB_NAME`` filter answers jobs in every state, newest first; its match is
    case-insensitive, so the name is compared exactly here.
    """
    request: dict[str, Any] = {"jobQueue": queue, "filters": [{"name": "JOB_NAME", "values": [name]}]}
    while True:
        page = batch.list_jobs(**request)
        for job in page.get("jobSummaryList", []):
            if job.get("jobName") == name and job.get("status") in LIVE_JOB_STATES:
                return {k: job.get(k) for k in ("jobId", "jobName", "status", "createdAt")}
        if not page.get("nextToken"):
            return None
        request["nextToken"] = page["nextToken"]


def _run_environment(run: TrainingRun) -> list[dict[str, str]]:
    """A scheduled run's version and instant, as the Batch job's ``shelfwise train`` reads them."""
    if run.version is None or run.scheduled_for is None:
        return []
    return [
        {"name": "TRAINING_VERSION", "value": run.version},
        {"name": "TRAINING_AS_OF", "value": run.scheduled_for.astimezone(UTC).isoformat()},
    ]


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
