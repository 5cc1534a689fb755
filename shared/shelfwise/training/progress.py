"""Where a training run's progress goes besides the terminal: EventBridge events and CloudWatch metrics.

The same sinks serve every runner, so an operator follows a Batch run exactly like one in the
Lambda: each main step is a ``shelfwise.training`` / ``TrainingProgress`` event on the default bus
(detail ``{model_name, runner, stage, elapsed_s, ...}``), the end is a ``stage: "done"`` (with the
version and the gate) or ``stage: "failed"`` event, and each step's time is a
``TrainingStageSeconds`` metric. The Lambda publishes metrics as EMF (``emf_metric_sink``); a
Batch container has no EMF agent, so it calls PutMetricData (``cloudwatch_metric_sink``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

ProgressSink = Callable[[dict[str, Any]], None]

EVENT_SOURCE = "shelfwise.training"
DETAIL_TYPE = "TrainingProgress"
NAMESPACE = "Shelfwise"
# Steps that become events (the search's per-trial lines would be dozens of events per run).
EVENT_STAGES = frozenset({"load", "test", "fit", "bundle", "register", "done", "failed"})


def event_sink(events: Any, model_name: str, runner: str, event_bus: str = "default") -> ProgressSink:
    """Each main step as a ``TrainingProgress`` event on ``event_bus``."""

    def sink(event: dict[str, Any]) -> None:
        if event["stage"] not in EVENT_STAGES:
            return
        detail = {"model_name": model_name, "runner": runner, **event}
        events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": DETAIL_TYPE,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": event_bus,
                }
            ]
        )

    return sink


def cloudwatch_metric_sink(
    cloudwatch: Any, runner: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> ProgressSink:
    """Step times (``TrainingStageSeconds``), runs and failures as PutMetricData, dimension ``service``.

    ``service=training`` is the dimension Powertools gives the Lambda's EMF metrics, so one
    dashboard query covers both runners.
    """

    def put(name: str, value: float, unit: str) -> None:
        cloudwatch.put_metric_data(
            Namespace=NAMESPACE,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "service", "Value": "training"}],
                    "Timestamp": clock(),
                    "Value": value,
                    "Unit": unit,
                }
            ],
        )

    def sink(event: dict[str, Any]) -> None:
        stage = event["stage"]
        if stage == "done":
            put("TrainingRuns", 1.0, "Count")
        elif stage == "failed":
            put("TrainingFailures", 1.0, "Count")
        elif stage in EVENT_STAGES:
            put("TrainingStageSeconds", float(event["elapsed_s"]), "Seconds")

    return sink


def emf_metric_sink(metrics: Any) -> ProgressSink:
    """The same metrics through Powertools ``Metrics`` (EMF, flushed at the end of the invocation)."""

    def sink(event: dict[str, Any]) -> None:
        stage = event["stage"]
        if stage == "done":
            metrics.add_metric(name="TrainingRuns", unit="Count", value=1)
        elif stage == "failed":
            metrics.add_metric(name="TrainingFailures", unit="Count", value=1)
        elif stage in EVENT_STAGES:
            metrics.add_metric(name="TrainingStageSeconds", unit="Seconds", value=float(event["elapsed_s"]))

    return sink


def finish_fields(result: Any) -> dict[str, Any]:
    """The ``done`` step's fields from a :class:`shelfwise.training.job.TrainResult`."""
    out: dict[str, Any] = {"version": result.version, "algorithm": result.manifest.get("algorithm")}
    if result.registration is not None:
        out["offered_for_canary"] = result.registration.offered_for_canary
        out["became_champion"] = result.registration.became_champion
    return out
