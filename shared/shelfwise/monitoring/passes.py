"""One scheduled monitoring run: which passes an event asks for, and running them against the
buckets, the registry's deployment and the metric sink (the compute_metrics function's one call),
with the pipeline-health datums each fast pass adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shelfwise.errors import InputError
from shelfwise.monitoring.config import MonitoringConfig
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.publish import MetricDatum
from shelfwise.monitoring.state import (
    Deployment,
    S3Manifests,
    S3StateStore,
)


def health_metrics(
    ts: datetime,
    minutes_since_newest: float | None,
    quarantined: int,
    ingested: int,
    dlq_depth: int | None,
    min_rows: int = 1000,
) -> list[MetricDatum]:
    """Pipeline-health datums; the quarantine rate only with at least ``min_rows`` ingested rows."""
    if ingested < 0 or quarantined < 0 or quarantined > max(ingested, 0):
        raise InputError("quarantined rows must lie between 0 and the ingested rows")
    out = []
    if minutes_since_newest is not None:
        out.append(MetricDatum("MinutesSinceNewestPartition", minutes_since_newest, ts))
    if ingested >= min_rows:
        out.append(MetricDatum("QuarantineRate", quarantined / ingested, ts))
    if dlq_depth is not None:
        out.append(MetricDatum("IngestDLQDepth", float(dlq_depth), ts, unit="Count"))
    return out


@dataclass(frozen=True)
class PassTargets:
    """Where one pass reads and writes (resource names from the handler's settings)."""

    curated_bucket: str
    monitoring_bucket: str
    models_bucket: str
    model_name: str
    ingest_dlq_url: str | None = None


def run_pass(
    kinds: tuple[str, ...],
    now: datetime,
    *,
    targets: PassTargets,
    deployment: Deployment,
    s3: Any,
    cloudwatch: Any,
    sqs: Any = None,
    config: MonitoringConfig | None = None,
) -> dict[str, Any]:
    """Run the ``fast`` and/or ``deep`` pass at ``now``, publish to CloudWatch and the S3 history.

    The one domain entry point of ``functions/compute_metrics``. Returns a summary for the log.
    """
    from shelfwise.monitoring import health
    from shelfwise.monitoring.data import S3EventSource
    from shelfwise.monitoring.publish import put_metrics, write_history

    unknown = set(kinds) - {"fast", "deep"}
    if unknown or not kinds:
        raise InputError(f"unknown monitoring pass {sorted(unknown) or kinds}; use fast and/or deep")
    cfg = config or MonitoringConfig()
    job = MonitoringJob(
        S3EventSource(s3, targets.curated_bucket),
        S3Manifests(s3, targets.models_bucket, targets.model_name),
        S3StateStore(s3, targets.monitoring_bucket, targets.model_name),
        cfg,
        input_baseline=S3StateStore(s3, targets.monitoring_bucket, f"{targets.model_name}-input-baseline"),
        champion_baseline=S3StateStore(
            s3, targets.monitoring_bucket, f"{targets.model_name}-champion-baseline"
        ),
        shoppers=S3StateStore(s3, targets.monitoring_bucket, f"{targets.model_name}-shoppers"),
    )
    summary: dict[str, Any] = {}
    for kind in kinds:
        result = job.fast_pass(now, deployment) if kind == "fast" else job.deep_pass(now)
        if kind == "fast":
            start = result.window_start
            seen_store = S3StateStore(s3, targets.monitoring_bucket, "_ingest-summaries-seen")
            seen = set(seen_store.load().get("keys", []))
            bad, rows, now_seen = health.new_quarantine_counts(s3, targets.curated_bucket, seen)
            seen_store.save({"keys": sorted(now_seen)})
            depth = (
                health.dlq_depth(sqs, targets.ingest_dlq_url)
                if sqs is not None and targets.ingest_dlq_url
                else None
            )
            newest = result.summary.get("newest_event")
            fresh = health.minutes_since_newest_partition(
                s3, targets.curated_bucket, now, datetime.fromisoformat(newest) if newest else None
            )
            result.data += health_metrics(start, fresh, bad, rows, depth)
        calls = put_metrics(cloudwatch, result.data)
        key = write_history(
            s3, targets.monitoring_bucket, result.window_start, kind, result.data, result.summary
        )
        summary[kind] = {
            **result.summary,
            "put_metric_data_calls": calls,
            "history_key": key,
            "values": result.values(),
        }
    return summary


def scheduled_passes(event: Mapping[str, Any], now: datetime) -> tuple[str, ...]:
    """Which passes a scheduled invocation runs: the fast pass every tick, plus the deep pass on the
    first tick of each hour; an explicit ``{"pass": "deep"}`` (or ``"fast+deep"``) runs just that."""
    explicit = event.get("pass") or (event.get("detail") or {}).get("pass")
    if explicit:
        return tuple(str(explicit).split("+"))
    return ("fast", "deep") if now.minute < 5 else ("fast",)
