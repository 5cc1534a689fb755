"""The deployed ingest's floor: template.yaml with ``IngestMinTime`` set, uploads through S3 and SQS.

Events and catalogue rows timed before the configured floor are quarantined with the range they
missed; later ones land in curated data; valid + quarantined + duplicates = rows read. The events
API refuses (422) what the ingest would quarantine.
"""

from __future__ import annotations

import gzip
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.httpapi import LOCAL_API_PARAMETERS
from shelfwise_local.runtime.testing import new_runtime

REPO = Path(__file__).resolve().parents[2]
FLOOR = "2000-01-01"

EVENTS = "\n".join(
    [
        "event_id,event_type,user_id,item_id,timestamp",
        "old-1,view,u1,i1,1998-04-03T10:00:00Z",  # before the floor
        "old-2,purchase,u1,i1,946684799",  # epoch seconds, one second before the floor
        "new-1,view,u1,i2,946684800",  # the floor itself is valid
        "new-2,view,u2,i2,2026-11-20T10:00:00Z",
        "new-2,view,u2,i2,2026-11-20T10:00:00Z",  # a duplicate, dropped
        "bad-1,teleport,u2,i2,2026-11-20T10:01:00Z",  # another reason, no range on it
    ]
)
CATALOGUE = "\n".join(
    [
        "item_id,title,category,price,in_stock,updated_at",
        "i1,Old lamp,home,10.0,true,1999-12-31T23:00:00Z",  # before the floor
        "i2,New lamp,home,12.5,true,2026-11-20T09:00:00Z",
    ]
)


@pytest.fixture(scope="module")
def floored() -> Iterator[LocalRuntime]:
    """One stack for the module: the API test writes nothing the ingest test reads."""
    rt = new_runtime(REPO / "template.yaml", parameters={**LOCAL_API_PARAMETERS, "IngestMinTime": FLOOR})
    try:
        yield rt
    finally:
        rt.close()


def _objects(rt: LocalRuntime, bucket_id: str, prefix: str) -> dict[str, bytes]:
    bucket = rt.physical_name(bucket_id)
    return {
        o["Key"]: rt.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in rt.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    }


def _summary(rt: LocalRuntime, source_key: str) -> dict[str, Any]:
    summaries = [json.loads(b) for b in _objects(rt, "CuratedBucket", "curated/_summaries/").values()]
    [summary] = [s for s in summaries if s["source"].endswith(source_key)]
    return summary


def _quarantined(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def test_uploads_before_the_configured_floor_are_quarantined_with_the_floor_and_nothing_is_lost(
    floored: LocalRuntime,
) -> None:
    floored.pump()  # the S3 test event the notification configuration sends
    assert floored.host.find("IngestEventsFunction").environment["INGEST_MIN_TIME"] == FLOOR
    floored.put_object("RawBucket", "raw/native/1998-2026.csv", EVENTS + "\n")
    floored.put_object("RawBucket", "raw/catalogue/lamps.csv", CATALOGUE + "\n")
    ingest = floored.invocations_of("IngestEventsFunction")
    assert ingest and all(i.ok for i in ingest), [i.error for i in ingest if not i.ok]

    # Events: the later ones are curated, the earlier ones quarantined with the range they missed.
    parquet = [
        b for k, b in _objects(floored, "CuratedBucket", "curated/events/").items() if k.endswith(".parquet")
    ]
    curated = sorted(r["event_id"] for b in parquet for r in pq.read_table(io.BytesIO(b)).to_pylist())
    assert curated == ["new-1", "new-2"]
    summary = _summary(floored, "raw/native/1998-2026.csv")
    assert summary["reasons"] == {"timestamp_out_of_range": 2, "unknown_event_type": 1}
    assert (
        summary["rows_valid"] + summary["rows_quarantined"] + summary["duplicates"]
        == summary["rows_read"]
        == 6
    )
    assert summary["time_range"]["valid_from"] == "2000-01-01T00:00:00Z"
    [q] = [b for k, b in _objects(floored, "QuarantineBucket", "quarantine/").items() if "catalogue" not in k]
    records = {r["line"]: r for r in _quarantined(q)}
    assert sorted(records) == [2, 3, 7]
    for line in (2, 3):
        assert records[line]["reason"] == "timestamp_out_of_range"
        assert records[line]["valid_from"] == "2000-01-01T00:00:00Z"
        assert records[line]["valid_until"] == summary["time_range"]["valid_until"]
    assert records[2]["raw"] == "old-1,view,u1,i1,1998-04-03T10:00:00Z"
    assert records[7]["reason"] == "unknown_event_type" and "valid_from" not in records[7]

    # The catalogue: the same floor for its updated_at.
    cat = _summary(floored, "raw/catalogue/lamps.csv")
    assert (cat["rows_read"], cat["rows_valid"], cat["reasons"]) == (2, 1, {"timestamp_out_of_range": 1})
    [cq] = _objects(floored, "QuarantineBucket", "quarantine/catalogue/").values()
    [record] = _quarantined(cq)
    assert (record["line"], record["reason"], record["valid_from"]) == (
        2,
        "timestamp_out_of_range",
        "2000-01-01T00:00:00Z",
    )

    dlq = floored.client("sqs").receive_message(
        QueueUrl=floored.physical_name("IngestDLQ"), WaitTimeSeconds=0
    )
    assert not dlq.get("Messages")


def test_the_events_api_refuses_what_the_floor_would_quarantine(floored: LocalRuntime) -> None:
    ev = {"event_type": "click", "user_id": "u1", "item_id": "i1", "timestamp": "1999-12-31T23:59:59Z"}
    req = urllib.request.Request(
        f"{floored.api_url}/v1/events",
        data=json.dumps({"events": [ev]}).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 422
    problem = json.loads(err.value.read())
    assert [e["field"] for e in problem["errors"]] == ["body.events.0.timestamp"]
    assert "2000-01-01T00:00:00Z" in problem["detail"]
