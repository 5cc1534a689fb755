"""The S3 entry and the ingest handler on moto: notifications, idempotency, failures, DLQ."""

from __future__ import annotations

import copy
import gzip
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from shelfwise.errors import InputError
from shelfwise.ingest import SourceGoneError, ingest_object
from shelfwise.ingest.s3 import format_for_key, parse_notification
from tests.conftest import load_event

RAW, CURATED, QUARANTINE = "shelfwise-raw-123456789012-eu-west-1", "curated-bucket", "quarantine-bucket"
HANDLER = Path(__file__).resolve().parents[2] / "functions" / "ingest_events" / "app.py"
CSV = (
    "event_id,event_type,user_id,item_id,timestamp\n"
    "e1,view,u1,i1,2024-03-01T10:00:00Z\n"
    "e2,purchase,u1,i1,2024-03-02T10:00:00Z\n"
    "e3,fly,u1,i1,2024-03-02T10:00:00Z\n"
)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        for b in (RAW, CURATED, QUARANTINE):
            client.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client.put_bucket_versioning(Bucket=RAW, VersioningConfiguration={"Status": "Enabled"})
        yield client


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _sqs_event(bucket: str, key: str, etag: str | None, version: str | None) -> dict[str, Any]:
    event = copy.deepcopy(load_event("ingest_s3_object_created"))
    body = json.loads(event["Records"][0]["body"])
    obj = body["Records"][0]["s3"]
    obj["bucket"]["name"] = bucket
    # S3 URL-encodes keys in notifications (a space is "+").
    obj["object"].update(key=key.replace(" ", "+"), eTag=etag, versionId=version)
    event["Records"][0]["body"] = json.dumps(body)
    return event


def _load_handler(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("CURATED_BUCKET", CURATED)
    monkeypatch.setenv("QUARANTINE_BUCKET", QUARANTINE)
    monkeypatch.setenv("PSEUDONYMISATION_KEY_PARAMETER", "")
    spec = importlib.util.spec_from_file_location("ingest_events_app", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Pydantic resolves the settings model's annotations there
    spec.loader.exec_module(module)
    return module


def test_an_object_becomes_partitioned_parquet_quarantine_and_summary(s3: Any) -> None:
    put = s3.put_object(Bucket=RAW, Key="raw/shop events.csv", Body=CSV.encode())
    s = ingest_object(
        s3,
        RAW,
        "raw/shop events.csv",
        version_id=put["VersionId"],
        curated_bucket=CURATED,
        quarantine_bucket=QUARANTINE,
    )
    assert (s.rows_read, s.rows_valid, s.rows_quarantined) == (3, 2, 1)
    keys = _keys(s3, CURATED)
    h = s.object_hash
    assert keys == [
        f"curated/_summaries/{h}.json",
        f"curated/events/event_date=2024-03-01/{h}.parquet",
        f"curated/events/event_date=2024-03-02/{h}.parquet",
    ]
    q = s3.get_object(Bucket=QUARANTINE, Key=f"quarantine/{h}.jsonl.gz")["Body"].read()
    assert json.loads(gzip.decompress(q)) == {
        "line": 4,
        "reason": "unknown_event_type",
        "raw": "e3,fly,u1,i1,2024-03-02T10:00:00Z",
    }
    # The raw object is never modified.
    assert s3.get_object(Bucket=RAW, Key="raw/shop events.csv")["Body"].read() == CSV.encode()


def test_the_same_version_twice_is_a_no_op_and_a_new_version_gets_new_names(s3: Any) -> None:
    v1 = s3.put_object(Bucket=RAW, Key="raw/a.csv", Body=CSV.encode())["VersionId"]
    args = {"curated_bucket": CURATED, "quarantine_bucket": QUARANTINE}
    first = ingest_object(s3, RAW, "raw/a.csv", version_id=v1, **args)
    before = {k: s3.get_object(Bucket=CURATED, Key=k)["ETag"] for k in _keys(s3, CURATED)}
    second = ingest_object(s3, RAW, "raw/a.csv", version_id=v1, **args)
    assert second.skipped and second.outputs == first.outputs
    assert {k: s3.get_object(Bucket=CURATED, Key=k)["ETag"] for k in _keys(s3, CURATED)} == before
    v2 = s3.put_object(Bucket=RAW, Key="raw/a.csv", Body=CSV.encode())["VersionId"]
    third = ingest_object(s3, RAW, "raw/a.csv", version_id=v2, **args)
    assert third.object_hash != first.object_hash


def test_an_object_deleted_before_it_is_read_is_a_clear_error(s3: Any) -> None:
    s3.put_object(Bucket=CURATED, Key="raw/x.csv", Body=CSV.encode())  # unversioned bucket
    etag = s3.head_object(Bucket=CURATED, Key="raw/x.csv")["ETag"]
    s3.delete_object(Bucket=CURATED, Key="raw/x.csv")
    with pytest.raises(SourceGoneError, match="gone"):
        ingest_object(
            s3, CURATED, "raw/x.csv", etag=etag, curated_bucket=CURATED, quarantine_bucket=QUARANTINE
        )
    with pytest.raises(SourceGoneError):
        ingest_object(s3, CURATED, "raw/x.csv", curated_bucket=CURATED, quarantine_bucket=QUARANTINE)


def test_format_by_prefix_configuration() -> None:
    conf = {"raw/": "native", "raw/retailrocket/": "retailrocket"}
    assert format_for_key("raw/retailrocket/events.csv", conf) == "retailrocket"
    assert format_for_key("raw/web/x.jsonl", conf) == "native"
    assert format_for_key("other/x", conf) == "auto"


def test_notifications_are_parsed_and_keys_decoded() -> None:
    [ref] = parse_notification(load_event("ingest_s3_object_created")["Records"][0]["body"])
    assert ref.key == "raw/web shop/events 2026-11-28.csv"
    assert ref.version_id == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert parse_notification(load_event("ingest_s3_test_event")["Records"][0]["body"]) == []
    with pytest.raises(InputError):
        parse_notification(load_event("ingest_poison_message")["Records"][0]["body"])


def test_handler_ingests_reports_partial_failures_and_ignores_test_events(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _load_handler(monkeypatch)
    log = io.StringIO()
    monkeypatch.setattr(app.logger.registered_handler, "stream", log)
    put = s3.put_object(Bucket=RAW, Key="raw/web shop/e 1.csv", Body=CSV.encode())
    good = _sqs_event(RAW, "raw/web shop/e 1.csv", put["ETag"].strip('"'), put["VersionId"])
    gone = _sqs_event(RAW, "raw/never-there.csv", "abc", None)
    gone["Records"][0]["messageId"] = "gone-1"
    poison = load_event("ingest_poison_message")
    test_event = load_event("ingest_s3_test_event")
    event = {"Records": good["Records"] + gone["Records"] + poison["Records"] + test_event["Records"]}
    result = app.lambda_handler(event, lambda_context)
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert failed == {"gone-1", poison["Records"][0]["messageId"]}
    assert any(k.startswith("curated/events/event_date=2024-03-0") for k in _keys(s3, CURATED))
    emf = capsys.readouterr().out
    assert '"RowsValid":[2.0]' in emf and '"ObjectsFailed":[1.0]' in emf
    logs = log.getvalue()
    assert "object ingested" in logs and "SourceGoneError" in logs
    assert "u1" not in logs and "e1," not in logs  # no raw rows or ids in logs


def test_a_zero_byte_object_is_ingested_as_nothing(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    app = _load_handler(monkeypatch)
    put = s3.put_object(Bucket=RAW, Key="raw/empty.csv", Body=b"")
    result = app.lambda_handler(_sqs_event(RAW, "raw/empty.csv", None, put["VersionId"]), lambda_context)
    assert result == {"batchItemFailures": []}
    [summary_key] = _keys(s3, CURATED)
    assert json.loads(s3.get_object(Bucket=CURATED, Key=summary_key)["Body"].read())["rows_read"] == 0


def test_s3_notification_through_sqs_and_a_poison_object_ends_in_the_dlq(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    sqs = boto3.client("sqs", region_name="eu-west-1")
    dlq_url = sqs.create_queue(QueueName="ingest-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName="ingest",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})},
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=RAW,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "raw/"}]}},
                }
            ]
        },
    )
    app = _load_handler(monkeypatch)
    s3.put_object(Bucket=RAW, Key="raw/good file.csv", Body=CSV.encode())
    s3.put_object(Bucket=RAW, Key="raw/poison.csv", Body=b"not,a,known,header\n1,2,3,4\n")

    for _ in range(6):  # the event source polls; failed messages come back until the DLQ takes them
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get(
            "Messages", []
        )
        if not messages:
            continue
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {},
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": "eu-west-1",
                }
                for m in messages
            ]
        }
        failed = {f["itemIdentifier"] for f in app.lambda_handler(event, lambda_context)["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    assert any(k.startswith("curated/events/") for k in _keys(s3, CURATED))
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []
    [dead] = sqs.receive_message(QueueUrl=dlq_url).get("Messages", [])
    assert [r.key for r in parse_notification(dead["Body"])] == ["raw/poison.csv"]


def test_handler_pseudonymises_with_the_key_from_ssm(
    s3: Any, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    ssm = boto3.client("ssm", region_name="eu-west-1")
    ssm.put_parameter(Name="/shelfwise/test/ingest-key", Value="s3cr3t", Type="SecureString")
    monkeypatch.setenv("PSEUDONYMISATION_KEY_PARAMETER", "/shelfwise/test/ingest-key")
    spec = importlib.util.spec_from_file_location("ingest_events_app_keyed", HANDLER)
    assert spec is not None and spec.loader is not None
    monkeypatch.setenv("CURATED_BUCKET", CURATED)
    monkeypatch.setenv("QUARANTINE_BUCKET", QUARANTINE)
    app = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = app
    spec.loader.exec_module(app)
    put = s3.put_object(Bucket=RAW, Key="raw/k.csv", Body=CSV.encode())
    result = app.lambda_handler(_sqs_event(RAW, "raw/k.csv", None, put["VersionId"]), lambda_context)
    assert result == {"batchItemFailures": []}
    parquet = [k for k in _keys(s3, CURATED) if k.endswith(".parquet")]
    data = b"".join(s3.get_object(Bucket=CURATED, Key=k)["Body"].read() for k in parquet)
    assert b"u1" not in data and b"p_" in data
