"""Reading curated events for a time range, from S3 or a local directory, with column projection.

Partitions are ``curated/events/event_date=YYYY-MM-DD/``; only the dates overlapping the range are
read, only the needed columns, and rows outside the range are dropped right after reading.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass
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
    # Served lists' properties carry the shopper's pseudonymous ``user_hash`` (the split's unit).
    "properties",
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


@dataclass
class _Cached:
    """One curated object already read: its time span, and its rows while they fit the cache."""

    lo: int  # min event timestamp, epoch ms (the object's rows all lie in [lo, hi])
    hi: int
    table: pa.Table | None
    rows: int


class ObjectCache:
    """Parsed curated objects by (bucket, key, ETag), kept across passes of one execution environment.

    Curated objects are immutable (content-addressed names, a new write is a new ETag), so a warm
    Lambda re-reads only what arrived since its last pass. The time span of every object seen is
    kept (a few numbers), so objects that end before a pass's range are skipped without a GET;
    parsed rows are kept up to ``max_rows`` (least recently used dropped first).
    """

    def __init__(self, max_rows: int = 2_000_000) -> None:
        self.max_rows = max_rows
        self._entries: OrderedDict[tuple[str, str, str], _Cached] = OrderedDict()
        self._rows = 0
        self.gets = 0  # objects fetched (tests and benchmarks read it)

    def get(self, key: tuple[str, str, str]) -> _Cached | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str, str], table: pa.Table) -> _Cached:
        ts = pc.min_max(table["timestamp"]) if table.num_rows else None
        lo = ts["min"].value if ts is not None and ts["min"].is_valid else 0
        hi = ts["max"].value if ts is not None and ts["max"].is_valid else 0
        if ts is not None and not (ts["min"].is_valid and ts["max"].is_valid):
            lo, hi = -(2**62), 2**62  # rows without timestamps: never skip
        entry = _Cached(int(lo), int(hi), table, table.num_rows)
        old = self._entries.pop(key, None)
        if old is not None and old.table is not None:
            self._rows -= old.rows
        self._entries[key] = entry
        self._rows += entry.rows
        for other in self._entries.values():  # oldest first: drop rows, keep the span
            if self._rows <= self.max_rows:
                break
            if other.table is not None and other is not entry:
                other.table = None
                self._rows -= other.rows
        return entry


# Module scope: one cache per execution environment (a warm Lambda keeps it between invocations).
CACHE = ObjectCache()


class S3EventSource:
    """Curated events in S3 (the Lambda path), read through the environment's ``ObjectCache``."""

    def __init__(
        self, s3: Any, bucket: str, columns: tuple[str, ...] = COLUMNS, cache: ObjectCache | None = None
    ) -> None:
        self.s3, self.bucket, self.columns = s3, bucket, columns
        self.cache = CACHE if cache is None else cache

    def read(self, start: datetime, end: datetime) -> pa.Table:
        tables = []
        lo_ms = int(start.astimezone(UTC).timestamp() * 1000)
        hi_ms = int(end.astimezone(UTC).timestamp() * 1000)
        for day in dates_between(start, end):
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{EVENTS_PREFIX}event_date={day}/"):
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith(".parquet"):
                        continue
                    key = (self.bucket, obj["Key"], str(obj.get("ETag", "")))
                    entry = self.cache.get(key)
                    if entry is not None and (entry.hi < lo_ms or entry.lo >= hi_ms):
                        continue  # known to hold nothing in the range
                    if entry is None or entry.table is None or self.columns != COLUMNS:
                        body = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                        self.cache.gets += 1
                        table = _read_one(io.BytesIO(body), self.columns)
                        if self.columns == COLUMNS:
                            entry = self.cache.put(key, table)
                    else:
                        table = entry.table
                    tables.append(_in_range(table, start, end))
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
