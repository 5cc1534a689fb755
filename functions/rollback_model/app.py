"""Alarm-driven rollback: an alarm entering ALARM takes the accused model version out of traffic.

Subscribed to the SNS topic the alarms' AlarmActions target; also accepts the EventBridge
"CloudWatch Alarm State Change" event. Reserved concurrency 1 serialises decisions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shelfwise import wiring
from shelfwise.observability import logger, metrics, tracer
from shelfwise.rollout import handle_alarm_event
from shelfwise.settings import load_settings


class Settings(wiring.RegistrySettings):
    """Environment of this function (template.yaml)."""

    monitoring_bucket: str
    notifications_topic_arn: str


settings = load_settings(Settings)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The decision's time: handle_alarm_event sets it from the alarm's state-change time.
    clock_now: list[datetime] = [datetime.now(UTC)]
    registry = wiring.registry(settings, actor="rollback_model", clock=lambda: clock_now[0])
    rollout = wiring.rollout(
        registry,
        monitoring_bucket=settings.monitoring_bucket,
        notifications_topic_arn=settings.notifications_topic_arn,
    )
    decisions = handle_alarm_event(rollout, event, clock_now)
    for d in decisions:
        logger.info("alarm handled", extra={"action": d.action, "alarm": d.alarm, "reason": d.reason})
        if d.action == "rollback":
            metrics.add_metric(name="ModelRollbacks", unit="Count", value=1)
    return {"decisions": [d.to_json() for d in decisions]}
