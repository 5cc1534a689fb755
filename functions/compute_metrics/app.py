"""Scheduled monitoring pass: window metrics from curated Parquet to CloudWatch and the S3 history.

One schedule every 5 minutes runs the fast pass; the first tick of each hour also runs the deep
pass (so the local runtime's controllable clock drives both, from the scheduled event's ``time``).
An explicit ``{"pass": "deep"}`` or ``{"pass": "fast"}`` runs just that pass.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shelfwise.aws import client
from shelfwise.errors import InputError
from shelfwise.events import event_time
from shelfwise.monitoring.config import MonitoringConfig
from shelfwise.monitoring.job import Deployment, PassTargets, run_pass
from shelfwise.observability import logger, metrics, tracer
from shelfwise.registry import Registry
from shelfwise.settings import load_settings


class Settings(BaseModel):
    curated_bucket: str
    models_bucket: str
    monitoring_bucket: str
    model_name: str
    shelfwise_env: str
    ingest_dlq_url: str | None = None
    # Optional JSON object of MonitoringConfig scalar fields to override (sample sizes, margins),
    # e.g. a small shop's {"champion_baseline_lists": 3000}; empty means the documented defaults.
    monitoring_config: str = ""


def monitoring_config(raw: str) -> MonitoringConfig:
    """MonitoringConfig with the overrides of ``MONITORING_CONFIG`` (a JSON object of scalar fields)."""
    if not raw.strip():
        return MonitoringConfig()
    try:
        overrides = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"MONITORING_CONFIG is not JSON: {exc}") from exc
    base = MonitoringConfig()
    if not isinstance(overrides, dict):
        raise InputError("MONITORING_CONFIG must be a JSON object of MonitoringConfig fields")
    for key, value in overrides.items():
        current = getattr(base, key, None)
        if key.startswith("_") or not isinstance(current, int | float) or isinstance(value, bool):
            raise InputError(f"MONITORING_CONFIG: {key!r} is not a numeric MonitoringConfig field")
        if not isinstance(value, int | float):
            raise InputError(f"MONITORING_CONFIG: {key} must be a number, got {value!r}")
    return dataclasses.replace(base, **overrides)


@functools.cache
def settings() -> Settings:
    return load_settings(Settings)


def _kinds(event: dict[str, Any], now: datetime) -> tuple[str, ...]:
    explicit = event.get("pass") or (event.get("detail") or {}).get("pass")
    if explicit:
        return tuple(str(explicit).split("+"))
    return ("fast", "deep") if now.minute < 5 else ("fast",)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = settings()
    now = event_time(event)
    registry = Registry(
        client("s3"), client("ssm"), client("events"), cfg.models_bucket, cfg.shelfwise_env, cfg.model_name
    )
    summary = run_pass(
        _kinds(event, now),
        now,
        targets=PassTargets(
            curated_bucket=cfg.curated_bucket,
            monitoring_bucket=cfg.monitoring_bucket,
            models_bucket=cfg.models_bucket,
            model_name=cfg.model_name,
            ingest_dlq_url=cfg.ingest_dlq_url or None,
        ),
        deployment=Deployment.from_aliases(registry.aliases()),
        s3=client("s3"),
        cloudwatch=client("cloudwatch"),
        sqs=client("sqs") if cfg.ingest_dlq_url else None,
        config=monitoring_config(cfg.monitoring_config),
    )
    logger.info("monitoring pass done", extra={"passes": sorted(summary), "at": now.isoformat()})
    return {
        kind: {k: v for k, v in s.items() if k != "variants" and k != "matured"}
        for kind, s in summary.items()
    }
