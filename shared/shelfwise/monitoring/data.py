"""Reading curated events for a time range, from S3 or a local directory, with column projection.

Partitions are ``curated/events/event_date=YYYY-MM-DD/``; only the dates overlapping the range are
read, only the needed columns, and rows outside the range are dropped right after reading.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shelfwise.monitoring.health import EVENTS_PREFIX

COLUMNS = (
    "event_type",
    "recommendation_id",
    "item_id",
    "timestamp",
    "position",
    "score",
    "variant",
    "model_version",
    "price",
    "quantity",
    "category",
)


class EventSource(Protocol):
    def read(self, start: datetime, end: datetime) -> pa.Table: ...


def dates_between(start: datetime, end: datetime) -> list[str]:
    """The ``event_date`` values a half-open UTC range touches."""
    day = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    out = []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def _read_one(source: Any, columns: tuple[str, ...]) -> pa.Table:
    schema_names = set(pq.read_schema(source).names)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    table = pq.read_table(source, columns=[c for c in columns if c in schema_names])
    for c in columns:
        if c not in table.column_names:
            typ = {
                "timestamp": pa.timestamp("ms", tz="UTC"),
                "position": pa.int32(),
                "score": pa.float32(),
            }.get(c, pa.float64() if c in ("price", "quantity") else pa.string())
            table = table.append_column(c, pa.nulls(table.num_rows, typ))
    return _normalise(table.select(list(columns)))


def _normalise(table: pa.Table) -> pa.Table:
    """Decode dictionaries and unify timestamp precision so files from different writers concat."""
    cols = []
    for name in table.column_names:
        col = table[name]
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        if name == "timestamp":
            col = pc.cast(col, pa.timestamp("ms", tz="UTC"))
        elif name == "position":
            col = pc.cast(col, pa.int32())
        elif name == "score":
            col = pc.cast(col, pa.float32())
        elif name in ("price", "quantity"):
            col = pc.cast(col, pa.float64())
        elif pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def _in_range(table: pa.Table, start: datetime, end: datetime) -> pa.Table:
    ts = table["timestamp"]
    lo = pa.scalar(start.astimezone(UTC), pa.timestamp("ms", tz="UTC"))
    hi = pa.scalar(end.astimezone(UTC), pa.timestamp("ms", tz="UTC"))
    return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


def _concat(tables: list[pa.Table], columns: tuple[str, ...]) -> pa.Table:
    if not tables:
        return _normalise(
            pa.table(
                {
                    c: pa.nulls(0, pa.timestamp("ms", tz="UTC") if c == "timestamp" else pa.string())
                    for c in columns
                }
            )
        )
    return pa.concat_tables(tables, promote_options="permissive")


class S3EventSource:
    """Curated events in S3 (the Lambda path)."""

    def __init__(self, s3: Any, bucket: str, columns: tuple[str, ...] = COLUMNS) -> None:
        self.s3, self.bucket, self.columns = s3, bucket, columns

    def read(self, start: datetime, end: datetime) -> pa.Table:
        tables = []
        for day in dates_between(start, end):
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{EVENTS_PREFIX}event_date={day}/"):
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith(".parquet"):
                        continue
                    body = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                    tables.append(_in_range(_read_one(io.BytesIO(body), self.columns), start, end))
        return _concat(tables, self.columns)


class LocalEventSource:
    """Curated events under a local directory laid out like the bucket (benchmarks, tools)."""

    def __init__(self, root: Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.root, self.columns = Path(root), columns

    def read(self, start: datetime, end: datetime) -> pa.Table:
        tables = []
        for day in dates_between(start, end):
            for path in sorted((self.root / EVENTS_PREFIX / f"event_date={day}").glob("*.parquet")):
                tables.append(_in_range(_read_one(str(path), self.columns), start, end))
        return _concat(tables, self.columns)
