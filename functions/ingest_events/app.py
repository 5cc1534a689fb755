"""Ingest handler: S3 object-created notifications (via SQS) -> curated Parquet.

Thin by design: parse each SQS message into the objects it announces, call
``shelfwise.ingest.ingest_object`` for each, emit summary metrics. A message that fails is
reported as a partial batch failure, so SQS retries it alone and, after ``maxReceiveCount``
receives, moves it to the DLQ. Logs carry counts and object names, never rows or ids.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field, Json

from shelfwise.aws import client
from shelfwise.errors import ShelfwiseError
from shelfwise.ingest import IngestSummary, ingest_object
from shelfwise.ingest.s3 import parse_notification
from shelfwise.observability import logger, metrics, tracer
from shelfwise.pseudonym import read_key
from shelfwise.settings import load_settings
from shelfwise.time_floor import TimeFloorSettings


class IngestSettings(TimeFloorSettings):
    """Environment of this function (template.yaml); INGEST_MIN_TIME: the floor of event and
    catalogue times (shelfwise.time_floor)."""

    curated_bucket: str = Field(min_length=3)
    quarantine_bucket: str = Field(min_length=3)
    # Empty: user ids are kept as they arrive.
    pseudonymisation_key_parameter: str = ""
    # Optional {"raw/retailrocket/": "retailrocket", ...}; other keys are detected from the header.
    ingest_formats_by_prefix: Json[dict[str, str]] = Field(default_factory=dict)


settings = load_settings(IngestSettings)
s3 = client("s3")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


_key_cache: dict[str, tuple[float, bytes]] = {}


def _pseudonymisation_key() -> bytes | None:
    """The key, re-read every 5 minutes (a rotated key is picked up), with the same SSM client
    factory as every other call (so it honours the endpoint settings, like serving and collection)."""
    name = settings.pseudonymisation_key_parameter
    if not name:
        return None
    cached = _key_cache.get(name)
    if cached is None or time.monotonic() - cached[0] > 300:
        cached = (time.monotonic(), read_key(client("ssm"), name))
        _key_cache[name] = cached
    return cached[1]


def _emit(summary: IngestSummary) -> None:
    metrics.add_metric(name="ObjectsIngested", unit=MetricUnit.Count, value=0 if summary.skipped else 1)
    if summary.skipped:
        metrics.add_metric(name="ObjectsAlreadyIngested", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="RowsRead", unit=MetricUnit.Count, value=summary.rows_read)
    metrics.add_metric(name="RowsValid", unit=MetricUnit.Count, value=summary.rows_valid)
    metrics.add_metric(name="RowsQuarantined", unit=MetricUnit.Count, value=summary.rows_quarantined)
    metrics.add_metric(name="DuplicatesDropped", unit=MetricUnit.Count, value=summary.duplicates)
    metrics.add_metric(name="IngestSeconds", unit=MetricUnit.Seconds, value=summary.seconds)
    # Behaviour rows of bot-like actors (flagged, kept in curated; consumers leave them out).
    metrics.add_metric(
        name="BotEventsFlagged", unit=MetricUnit.Count, value=summary.bots.get("bot_events", 0)
    )


@tracer.capture_method(capture_response=False)
def record_handler(record: SQSRecord) -> None:
    for ref in parse_notification(record.body):
        try:
            summary = ingest_object(
                s3,
                ref.bucket,
                ref.key,
                version_id=ref.version_id,
                etag=ref.etag,
                curated_bucket=settings.curated_bucket,
                quarantine_bucket=settings.quarantine_bucket,
                formats_by_prefix=settings.ingest_formats_by_prefix,
                pseudonymisation_key=_pseudonymisation_key(),
                min_ts_ms=settings.min_ts_ms,
            )
        except ShelfwiseError as exc:
            metrics.add_metric(name="ObjectsFailed", unit=MetricUnit.Count, value=1)
            logger.error(
                "ingest failed",
                extra={"bucket": ref.bucket, "key": ref.key, "error": type(exc).__name__, "reason": str(exc)},
            )
            raise
        _emit(summary)
        logger.info(
            "object ingested",
            extra={
                "bucket": ref.bucket,
                "key": ref.key,
                "object_hash": summary.object_hash,
                "format": summary.format,
                "rows_read": summary.rows_read,
                "rows_valid": summary.rows_valid,
                "rows_quarantined": summary.rows_quarantined,
                "duplicates": summary.duplicates,
                "reasons": summary.reasons,
                "outputs": len(summary.outputs),
                "skipped": summary.skipped,
                "seconds": summary.seconds,
            },
        )


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
