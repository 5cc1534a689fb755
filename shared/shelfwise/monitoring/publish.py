"""Publishing window metrics: PutMetricData in batches, plus a JSON Lines history in S3.

Each datum carries its window's timestamp (never "now"), so late or repeated passes land on the
right period, and only the low-cardinality dimensions ``Variant`` and ``Endpoint``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shelfwise.errors import InputError
from shelfwise.monitoring.config import ALLOWED_DIMENSIONS, NAMESPACE

MAX_PER_CALL = 1000
HISTORY_PREFIX = "monitoring/history/"


@dataclass(frozen=True)
class MetricDatum:
    """One metric value for one window."""

    name: str
    value: float
    timestamp: datetime
    dimensions: dict[str, str] = field(default_factory=dict)
    unit: str = "None"

    def __post_init__(self) -> None:
        extra = set(self.dimensions) - ALLOWED_DIMENSIONS
        if extra:
            raise InputError(
                f"metric {self.name}: dimensions {sorted(extra)} not allowed (Variant, Endpoint only)"
            )
        if not math.isfinite(self.value):
            raise InputError(f"metric {self.name}: value {self.value!r} is not finite")
        if self.timestamp.tzinfo is None:
            raise InputError(f"metric {self.name}: timestamp must be timezone-aware")

    def to_cloudwatch(self) -> dict[str, Any]:
        return {
            "MetricName": self.name,
            "Timestamp": self.timestamp,
            "Value": float(self.value),
            "Unit": self.unit,
            "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(self.dimensions.items())],
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "timestamp": self.timestamp.astimezone(UTC).isoformat(),
            "dimensions": self.dimensions,
            "unit": self.unit,
        }


def batches(data: Sequence[MetricDatum], size: int = MAX_PER_CALL) -> Iterable[Sequence[MetricDatum]]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def put_metrics(cloudwatch: Any, data: Sequence[MetricDatum], namespace: str = NAMESPACE) -> int:
    """PutMetricData in calls of at most 1,000 datums; returns the number of calls made."""
    calls = 0
    for chunk in batches(data):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=[d.to_cloudwatch() for d in chunk])
        calls += 1
    return calls


def history_key(window_start: datetime, kind: str) -> str:
    """Deterministic history key per window and pass kind, so re-running a pass overwrites, not adds."""
    w = window_start.astimezone(UTC)
    return f"{HISTORY_PREFIX}date={w:%Y-%m-%d}/{w:%Y%m%dT%H%M%SZ}-{kind}.jsonl"


def write_history(
    s3: Any,
    bucket: str,
    window_start: datetime,
    kind: str,
    data: Sequence[MetricDatum],
    extra: dict[str, Any] | None = None,
) -> str:
    """Store one pass's metrics (and optional context such as raw counts) as JSON Lines."""
    lines = [json.dumps(d.to_record(), sort_keys=True) for d in data]
    if extra is not None:
        lines.append(json.dumps({"context": extra}, sort_keys=True, default=str))
    key = history_key(window_start, kind)
    s3.put_object(
        Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode(), ContentType="application/x-ndjson"
    )
    return key


def read_history(s3: Any, bucket: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """All metric records in the history (optionally from ``since``), oldest first."""
    records: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=HISTORY_PREFIX):
        for obj in page.get("Contents", []):
            if since is not None:
                day = obj["Key"][len(HISTORY_PREFIX) + 5 : len(HISTORY_PREFIX) + 15]
                if day < f"{since.astimezone(UTC):%Y-%m-%d}":
                    continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            for line in body.splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if "name" in rec and (
                        since is None or rec["timestamp"] >= since.astimezone(UTC).isoformat()
                    ):
                        records.append(rec)
    records.sort(key=lambda r: (r["timestamp"], r["name"]))
    return records
