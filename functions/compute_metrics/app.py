"""Scheduled monitoring pass: window metrics from curated Parquet to CloudWatch and the S3 history.

One schedule every 5 minutes runs the fast pass; the first tick of each hour also runs the deep
pass (so the local runtime's controllable clock drives both, from the scheduled event's ``time``).
An explicit ``{"pass": "deep"}`` or ``{"pass": "fast"}`` runs just that pass.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shelfwise import wiring
from shelfwise.aws import client
from shelfwise.events import event_time
from shelfwise.monitoring.config import config_with_overrides
from shelfwise.monitoring.passes import PassTargets, run_pass, scheduled_passes
from shelfwise.monitoring.state import Deployment
from shelfwise.observability import logger, metrics, tracer
from shelfwise.settings import load_settings


class Settings(wiring.RegistrySettings):
    """Environment of this function (template.yaml)."""

    curated_bucket: str
    monitoring_bucket: str
    ingest_dlq_url: str | None = None
    # Optional JSON object of MonitoringConfig numeric fields to override (sample sizes, margins);
    # empty means the documented defaults.
    monitoring_config: str = ""


settings = load_settings(Settings)
config = config_with_overrides(settings.monitoring_config)


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = event_time(event)
    summary = run_pass(
        scheduled_passes(event, now),
        now,
        targets=PassTargets(
            curated_bucket=settings.curated_bucket,
            monitoring_bucket=settings.monitoring_bucket,
            models_bucket=settings.models_bucket,
            model_name=settings.model_name,
            ingest_dlq_url=settings.ingest_dlq_url or None,
        ),
        deployment=Deployment.from_aliases(wiring.registry(settings).aliases()),
        s3=client("s3"),
        cloudwatch=client("cloudwatch"),
        sqs=client("sqs") if settings.ingest_dlq_url else None,
        config=config,
    )
    logger.info("monitoring pass done", extra={"passes": sorted(summary), "at": now.isoformat()})
    return {
        kind: {k: v for k, v in s.items() if k != "variants" and k != "matured"}
        for kind, s in summary.items()
    }
