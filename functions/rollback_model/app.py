"""Alarm-driven rollback: an alarm entering ALARM takes the accused model version out of traffic.

Subscribed to the SNS topic the alarms' AlarmActions target; also accepts the EventBridge
"CloudWatch Alarm State Change" event. Reserved concurrency 1 serialises decisions.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from shelfwise.aws import client
from shelfwise.observability import logger, metrics, tracer
from shelfwise.registry import Registry
from shelfwise.rollout import Rollout, handle_alarm_event
from shelfwise.settings import load_settings


class Settings(BaseModel):
    models_bucket: str
    monitoring_bucket: str
    model_name: str
    shelfwise_env: str
    notifications_topic_arn: str


@functools.cache
def settings() -> Settings:
    return load_settings(Settings)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = settings()
    clock_now: list[datetime] = [datetime.now(UTC)]
    registry = Registry(
        client("s3"),
        client("ssm"),
        client("events"),
        cfg.models_bucket,
        cfg.shelfwise_env,
        cfg.model_name,
        actor="rollback_model",
        clock=lambda: clock_now[0],
    )
    rollout = Rollout(
        registry,
        s3=client("s3"),
        bucket=cfg.monitoring_bucket,
        sns=client("sns"),
        topic_arn=cfg.notifications_topic_arn,
    )
    decisions = handle_alarm_event(rollout, event, clock_now)
    for d in decisions:
        logger.info("alarm handled", extra={"action": d.action, "alarm": d.alarm, "reason": d.reason})
        if d.action == "rollback":
            metrics.add_metric(name="ModelRollbacks", unit="Count", value=1)
    return {"decisions": [d.to_json() for d in decisions]}
