"""Staged promotion: start the canary of a registered version, advance it 10% -> 50% -> 100% -> champion.

Two triggers: the registry's ``ModelRegistered`` event (EventBridge rule) offers the new version
for canary; the 5-minute schedule takes one promotion step while the challenger is healthy.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from shelfwise.aws import client
from shelfwise.events import event_time
from shelfwise.observability import logger, metrics, tracer
from shelfwise.registry import Registry
from shelfwise.rollout import Rollout, offer_registered, promote_step
from shelfwise.settings import load_settings


class Settings(BaseModel):
    models_bucket: str
    monitoring_bucket: str
    model_name: str
    shelfwise_env: str
    gate_alarm_names: str


@functools.cache
def settings() -> Settings:
    return load_settings(Settings)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = settings()
    now = event_time(event)
    registry = Registry(
        client("s3"),
        client("ssm"),
        client("events"),
        cfg.models_bucket,
        cfg.shelfwise_env,
        cfg.model_name,
        actor="promote_model",
        clock=lambda: now,
    )
    rollout = Rollout(registry, s3=client("s3"), bucket=cfg.monitoring_bucket)
    if event.get("detail-type") == "ModelRegistered":
        offer = offer_registered(rollout, event, now)
        logger.info("canary offer", extra={"action": offer.action, "reason": offer.reason})
        return offer.to_json()
    decision = promote_step(
        rollout,
        cloudwatch=client("cloudwatch"),
        alarm_names=[n for n in cfg.gate_alarm_names.split(",") if n],
        model_name=cfg.model_name,
        now=now,
    )
    logger.info("promotion step", extra={"action": decision.action, "reason": decision.reason})
    return decision.to_json()
