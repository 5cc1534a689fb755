"""Pipeline health: freshness of curated data, quarantine rate and ingest DLQ depth.

Adapters over S3/SQS clients passed in by the caller; they never build clients themselves.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from shelfwise.errors import InputError

EVENTS_PREFIX = "curated/events/"
SUMMARIES_PREFIX = "curated/_summaries/"
_PARTITION = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})/?$")


def _list(s3: Any, bucket: str, prefix: str, delimiter: str | None = None) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        out.extend(page.get("CommonPrefixes", []) if delimiter else page.get("Contents", []))
    return out


def partitions(s3: Any, bucket: str) -> list[str]:
    """The ``event_date`` partitions present under curated/events/, oldest first."""
    dates = []
    for p in _list(s3, bucket, EVENTS_PREFIX, delimiter="/"):
        m = _PARTITION.search(p["Prefix"])
        if m:
            dates.append(m.group(1))
    return sorted(dates)


def minutes_since_newest_partition(
    s3: Any, bucket: str, now: datetime, newest_event: datetime | None = None
) -> float | None:
    """Minutes since the newest curated data: by event time when the caller saw recent events,
    else by the write time of the newest object in the newest partition (None: no data at all)."""
    if newest_event is not None:
        return max(0.0, (now - newest_event).total_seconds() / 60.0)
    dates = partitions(s3, bucket)
    if not dates:
        return None
    objs = _list(s3, bucket, f"{EVENTS_PREFIX}event_date={dates[-1]}/")
    if not objs:
        return None
    newest = max(o["LastModified"] for o in objs)
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    return max(0.0, (now - newest).total_seconds() / 60.0)


def _count(summary: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = summary.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return None


def summary_counts(summary: dict[str, Any]) -> tuple[int, int]:
    """(quarantined rows, input rows) of one ingest summary (``shelfwise.ingest.IngestSummary``:
    ``rows_read``, ``rows_quarantined``), with a few tolerated spellings."""
    q = _count(summary, "quarantined", "rows_quarantined", "quarantined_rows", "bad_rows") or 0
    valid = _count(summary, "valid", "rows_valid", "valid_rows", "curated", "rows_curated")
    rows_in = _count(summary, "rows_read", "rows_in", "input_rows", "rows", "total_rows")
    return q, rows_in if rows_in is not None else (valid or 0) + q


def new_quarantine_counts(s3: Any, bucket: str, seen: set[str]) -> tuple[int, int, set[str]]:
    """(quarantined rows, input rows, summary keys now seen) over summaries not seen before.

    Counting *new* summaries rather than a wall-clock range makes the rate independent of clocks
    (the local runtime runs on simulated time) and each summary counts exactly once.
    """
    bad = total = 0
    now_seen = set()
    for obj in _list(s3, bucket, SUMMARIES_PREFIX):
        key = obj["Key"]
        now_seen.add(key)
        if key in seen or not key.endswith(".json"):
            continue
        try:
            summary = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ValueError as exc:
            raise InputError(f"ingest summary {key} is not JSON: {exc}") from exc
        if isinstance(summary, dict):
            q, n = summary_counts(summary)
            bad += q
            total += n
    return bad, total, now_seen


def dlq_depth(sqs: Any, queue_url: str) -> int:
    """Messages waiting in the ingest dead-letter queue (visible + in flight)."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs.get("ApproximateNumberOfMessages", 0)) + int(
        attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
    )
