"""Scheduled monitoring pass: window metrics from curated Parquet to CloudWatch and the S3 history.

One schedule every 5 minutes runs the fast pass; the first tick of each hour also runs the deep
pass (so the local runtime's controllable clock drives both, from the scheduled event's ``time``).
An explicit ``{"pass": "deep"}`` or ``{"pass": "fast"}`` runs just that pass.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shelfwise.aws import client
from shelfwise.errors import InputError
from shelfwise.events import event_time
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
    try:
        now = event_time(event)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
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
    )
    logger.info("monitoring pass done", extra={"passes": sorted(summary), "at": now.isoformat()})
    return {
        kind: {k: v for k, v in s.items() if k != "variants" and k != "matured"}
        for kind, s in summary.items()
    }
