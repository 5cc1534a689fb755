"""Staged promotion: start the canary of a registered version, advance it 10% -> 50% -> 100% -> champion.

With CanaryAllocation=thompson a bandit sets the split from 10% on instead of the stages; the
promotion to champion still needs the same evidence (``shelfwise.rollout``).

Two triggers: the registry's ``ModelRegistered`` event (EventBridge rule) offers the new version
for canary; the 5-minute schedule takes one promotion step while the challenger is healthy.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shelfwise import wiring
from shelfwise.aws import client
from shelfwise.events import event_time
from shelfwise.observability import logger, metrics, tracer
from shelfwise.rollout import offer_registered, promote_step
from shelfwise.settings import load_settings


class Settings(wiring.RegistrySettings, wiring.CanaryAllocationSettings):
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
    rollout = wiring.rollout(
        registry, monitoring_bucket=settings.monitoring_bucket, policy=wiring.rollout_policy(settings)
    )
    if event.get("detail-type") == "ModelRegistered":
        offer = offer_registered(rollout, event, now)
        logger.info("canary offer", extra={"action": offer.action, "reason": offer.reason})
        return offer.to_json()
    decision = promote_step(
        rollout,
        cloudwatch=client("cloudwatch"),
        alarm_names=[n for n in settings.gate_alarm_names.split(",") if n],
        model_name=settings.model_name,
        now=now,
    )
    logger.info("promotion step", extra={"action": decision.action, "reason": decision.reason})
    return decision.to_json()
