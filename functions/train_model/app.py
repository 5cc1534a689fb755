"""Scheduled training: decide whether there is enough new data, then train here or submit the Batch job.

Invoked by two EventBridge schedules: daily (``{"mode": "train"}``) and hourly
(``{"mode": "if_new_data"}``). An operator may invoke it with ``{"mode": "train", "override":
{"family": "sequential", "reason": "...", "past_gate": false}}`` to serve a named family
(docs/training.md). Progress of an in-process run goes out as EventBridge events (source
``shelfwise.training``) and EMF metrics; a Batch run reports the same from its container.
A repeated delivery of a scheduled run (Scheduler's and Lambda's retries) answers with the job or
version its first delivery made (``shelfwise.training.scheduled``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shelfwise import wiring
from shelfwise.aws import client
from shelfwise.events import event_time
from shelfwise.observability import logger, metrics, tracer
from shelfwise.settings import load_settings
from shelfwise.training.scheduled import (
    TrainingSchedule,
    scheduled_instant,
    scheduled_training,
    training_mode,
    training_override,
)


class Settings(wiring.RegistrySettings, TrainingSchedule):
    """Environment of this function (template.yaml)."""


settings = load_settings(Settings)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = event_time(event)
    return scheduled_training(
        training_mode(event),
        now,
        settings,
        registry=wiring.registry(settings, actor="train_model", clock=lambda: now),
        s3=client("s3"),
        batch=client("batch"),
        events=client("events"),
        override=training_override(event),
        scheduled_for=scheduled_instant(event),
    )
