"""Scheduled staged promotion: advance the challenger 10% -> 50% -> 100% -> champion while it is healthy."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shelfwise import wiring
from shelfwise.aws import client
from shelfwise.events import event_time
from shelfwise.observability import logger, metrics, tracer
from shelfwise.rollout import promote_step
from shelfwise.settings import load_settings


class Settings(wiring.RegistrySettings):
    """Environment of this function (template.yaml)."""

    monitoring_bucket: str
    gate_alarm_names: str


settings = load_settings(Settings)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = event_time(event)
    registry = wiring.registry(settings, actor="promote_model", clock=lambda: now)
    decision = promote_step(
        wiring.rollout(registry, monitoring_bucket=settings.monitoring_bucket),
        cloudwatch=client("cloudwatch"),
        alarm_names=[n for n in settings.gate_alarm_names.split(",") if n],
        model_name=settings.model_name,
        now=now,
    )
    logger.info("promotion step", extra={"action": decision.action, "reason": decision.reason})
    return decision.to_json()
