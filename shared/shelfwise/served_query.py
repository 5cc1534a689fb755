"""What was actually served: served lists rebuilt from the curated impression rows.

Serving records every list it answers (docs/contracts.md, "Served lists") with a hash of its
routing key (:func:`shelfwise.serving.impressions.user_hash`); the ingest turns each into
``impression`` rows under ``curated/events/``. :func:`served_to` answers "what did user U get at
time T" from those rows: the lists recorded for U up to T, most recent first, whatever answered
(champion, challenger, a fallback, the champion standing in for a refused challenger). The
Athena view ``served_lists`` (template.yaml) is the same reconstruction in SQL.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shelfwise.errors import InputError
from shelfwise.served_lists import user_hash

EVENTS_PREFIX = "curated/events/"
_COLUMNS = ["event_type", "recommendation_id", "timestamp", "variant", "model_version", "item_id", "position",
            "score", "properties"]  # fmt: skip


def _day_tables(s3: Any, bucket: str, day: str) -> list[pa.Table]:
    tables = []
    prefix = f"{EVENTS_PREFIX}event_date={day}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                tables.append(pq.read_table(io.BytesIO(body), columns=_COLUMNS))
    return tables


def lists_from_rows(table: pa.Table, hashed_user: str, at: datetime, limit: int) -> list[dict[str, Any]]:
    """The served lists of ``hashed_user`` at or before ``at`` in a table of curated rows."""
    if table.num_rows == 0:
        return []
    keep = pc.and_(
        pc.equal(pc.cast(table["event_type"], pa.string()), "impression"),
        pc.less_equal(table["timestamp"], pa.scalar(at, pa.timestamp("ms", tz="UTC"))),
    )
    keep = pc.and_(keep, pc.match_substring(pc.fill_null(table["properties"], ""), hashed_user))
    rows = table.filter(keep).to_pylist()
    lists: dict[str, dict[str, Any]] = {}
    for row in rows:
        props = json.loads(row["properties"] or "{}")
        if props.get("user_hash") != hashed_user:  # the substring matched elsewhere
            continue
        served = lists.setdefault(
            row["recommendation_id"],
            {
                "served_at": row["timestamp"].isoformat(),
                "recommendation_id": row["recommendation_id"],
                "variant": row["variant"],
                "model_version": row["model_version"],
                "endpoint": props.get("endpoint"),
                "_items": [],
            },
        )
        served["served_at"] = min(served["served_at"], row["timestamp"].isoformat())
        served["_items"].append((row["position"], row["item_id"], row["score"]))
    out = []
    for served in lists.values():
        ranked = sorted(served.pop("_items"), key=lambda t: t[0])
        served["items"] = [item for _, item, _ in ranked]
        served["scores"] = [score for _, _, score in ranked]
        out.append(served)
    out.sort(key=lambda s: (s["served_at"], s["recommendation_id"]), reverse=True)
    return out[:limit]


def served_to(
    s3: Any, curated_bucket: str, user: str, at: datetime, *, days: int = 2, limit: int = 10
) -> list[dict[str, Any]]:
    """The lists recorded for ``user`` (a user or session id) up to ``at``, most recent first.

    Reads the impression partitions of ``at``'s day and the ``days - 1`` days before it.
    """
    if at.tzinfo is None:
        raise InputError("--at needs a time zone, e.g. 2026-11-28T12:00:00Z")
    if not 1 <= days <= 31:
        raise InputError("days must be in 1..31")
    tables: list[pa.Table] = []
    for back in range(days):
        tables += _day_tables(s3, curated_bucket, (at - timedelta(days=back)).strftime("%Y-%m-%d"))
    if not tables:
        return []
    table = pa.concat_tables(tables, promote_options="permissive")
    return lists_from_rows(table, user_hash(user), at, limit)
