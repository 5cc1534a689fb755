"""S3EventSource: reads the range, re-reads only new or changed objects, skips objects out of range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from moto import mock_aws

from shelfwise.monitoring.data import ObjectCache, S3EventSource

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PREFIX = "curated/events/event_date=2026-11-28/"


def _parquet(minutes: list[int], tag: str) -> bytes:
    table = pa.table(
        {
            "event_type": ["view"] * len(minutes),
            "item_id": [f"{tag}{m}" for m in minutes],
            "timestamp": pa.array(
                [int((T0 + timedelta(minutes=m)).timestamp() * 1000) for m in minutes], pa.int64()
            ).cast(pa.timestamp("ms", tz="UTC")),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@mock_aws
def test_cached_reads_fetch_only_new_objects_and_skip_old_ones() -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="cur", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="cur", Key=PREFIX + "a.parquet", Body=_parquet([0, 1, 2], "a"))
    s3.put_object(Bucket="cur", Key=PREFIX + "b.parquet", Body=_parquet([20, 21], "b"))
    cache = ObjectCache()
    source = S3EventSource(s3, "cur", cache=cache)

    first = source.read(T0, T0 + timedelta(minutes=30))
    assert sorted(first["item_id"].to_pylist()) == ["a0", "a1", "a2", "b20", "b21"]
    assert cache.gets == 2

    s3.put_object(Bucket="cur", Key=PREFIX + "c.parquet", Body=_parquet([25, 40], "c"))
    second = source.read(T0 + timedelta(minutes=10), T0 + timedelta(minutes=30))
    # Only the new object was fetched; a.parquet (minutes 0-2) is known to end before the range.
    assert cache.gets == 3
    assert sorted(second["item_id"].to_pylist()) == ["b20", "b21", "c25"]

    # Overwriting an object changes its ETag: it is read again, never served stale.
    s3.put_object(Bucket="cur", Key=PREFIX + "b.parquet", Body=_parquet([22], "b"))
    third = source.read(T0 + timedelta(minutes=10), T0 + timedelta(minutes=30))
    assert cache.gets == 4
    assert sorted(third["item_id"].to_pylist()) == ["b22", "c25"]


@mock_aws
def test_rows_beyond_the_cache_budget_are_fetched_again() -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="cur", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for i in range(3):
        s3.put_object(Bucket="cur", Key=PREFIX + f"{i}.parquet", Body=_parquet([i, i + 1], f"x{i}-"))
    cache = ObjectCache(max_rows=4)  # room for two objects' rows
    source = S3EventSource(s3, "cur", cache=cache)
    assert source.read(T0, T0 + timedelta(minutes=10)).num_rows == 6
    assert cache.gets == 3
    # The oldest object's rows were dropped (its span is kept): a range without it costs nothing...
    assert source.read(T0 + timedelta(minutes=2), T0 + timedelta(minutes=10)).num_rows == 3
    assert cache.gets == 3
    # ...and a range that needs it fetches it again.
    assert source.read(T0, T0 + timedelta(minutes=1)).num_rows == 1
    assert cache.gets == 4
