"""The local runtime on the test template: resources, deliveries and their AWS semantics."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote_plus

import pytest

from shelfwise_local.runtime import FunctionError, LocalRuntime
from shelfwise_local.runtime.clock import iso


def _http(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _queue_messages(rt: LocalRuntime, logical_id: str) -> list[dict[str, Any]]:
    resp = rt.client("sqs").receive_message(
        QueueUrl=rt.physical_name(logical_id), MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    return resp.get("Messages", [])


def test_resources_are_created_with_resolved_properties(rt: LocalRuntime) -> None:
    ssm = rt.client("ssm")
    greeting = ssm.get_parameter(Name=rt.physical_name("Greeting"))["Parameter"]["Value"]
    assert greeting == f"hello from {rt.region}"  # !If on a condition, !Sub with a pseudo parameter
    assert "ProdOnlyParameter" not in rt.resources  # its condition is false
    bucket = rt.physical_name("DataBucket")
    assert bucket == f"{rt.stack_name}-data-{rt.account_id}"
    assert rt.s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    attrs = rt.client("sqs").get_queue_attributes(
        QueueUrl=rt.physical_name("WorkQueue"), AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == rt.resource("WorkDLQ").attrs["Arn"]
    assert int(redrive["maxReceiveCount"]) == 2
    assert attrs["VisibilityTimeout"] == "60"
    alarms = rt.client("cloudwatch").describe_alarms(AlarmNamePrefix=rt.stack_name)["MetricAlarms"]
    assert {a["AlarmName"] for a in alarms} >= {f"{rt.stack_name}-high-value", f"{rt.stack_name}-p90-latency"}
    assert rt.outputs()["DataBucketName"] == bucket


def test_globals_and_function_environment(rt: LocalRuntime) -> None:
    spec = rt.host.find("ApiFunction")
    assert spec.memory == 384 and spec.timeout == 2  # function overrides Globals
    assert spec.environment["STAGE"] == "test"  # from Globals, resolved
    assert spec.environment["POWERTOOLS_SERVICE_NAME"] == "api"  # maps merge
    worker = rt.host.find("WorkerFunction")
    assert worker.memory == 256 and worker.environment["OUT_BUCKET"] == rt.physical_name("DataBucket")


def test_s3_notification_through_queue_reaches_the_function(rt: LocalRuntime) -> None:
    rt.put_object("DataBucket", "in/hello world.txt", b"abc")
    out = rt.s3.get_object(Bucket=rt.physical_name("DataBucket"), Key="out/hello world.txt")
    assert out["Body"].read() == b"ABC"  # key decoded (moto URL-encodes it), data transformed
    assert out["Metadata"]["greeting"] == f"hello from {rt.region}"
    rt.put_object("DataBucket", "elsewhere/x.txt", b"ignored")  # outside the prefix filter
    assert "Contents" not in rt.s3.list_objects_v2(
        Bucket=rt.physical_name("DataBucket"), Prefix="out/elsewhere"
    )
    worker_events = [i.event for i in rt.invocations_of("WorkerFunction")]
    assert worker_events and all(r["eventSource"] == "aws:sqs" for e in worker_events for r in e["Records"])


def test_s3_event_source_invokes_the_function_directly(rt: LocalRuntime) -> None:
    bucket = rt.physical_name("UploadBucket")
    assert bucket.startswith(rt.stack_name.lower() + "-uploadbucket-")  # generated, S3-legal name
    rt.put_object("UploadBucket", "docs/a.json", b"{}")
    rt.put_object("UploadBucket", "docs/b.txt", b"x")  # filtered out by the suffix rule
    calls = rt.invocations_of("UploadFunction")
    assert len(calls) == 1 and calls[0].payload == {"kind": "records", "sources": ["aws:s3"]}
    record = calls[0].event["Records"][0]
    assert (
        record["s3"]["bucket"]["name"] == bucket
        and unquote_plus(record["s3"]["object"]["key"]) == "docs/a.json"
    )
    assert record["eventName"].startswith("ObjectCreated:")


def test_firehose_delivers_records_to_the_declared_bucket(rt: LocalRuntime) -> None:
    firehose = rt.client("firehose")
    name = rt.physical_name("ClickStream")
    assert (
        firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"][
            "DeliveryStreamStatus"
        ]
        == "ACTIVE"
    )
    firehose.put_record_batch(
        DeliveryStreamName=name, Records=[{"Data": b'{"n": 1}\n'}, {"Data": b'{"n": 2}\n'}]
    )
    bucket = rt.physical_name("DataBucket")
    deadline = time.monotonic() + 30  # the emulator flushes on its own (wall-clock) buffer interval
    keys: list[str] = []
    while not keys and time.monotonic() < deadline:
        keys = [
            o["Key"] for o in rt.s3.list_objects_v2(Bucket=bucket, Prefix="firehose/").get("Contents", [])
        ]
        if not keys:
            time.sleep(0.5)
    data = b"".join(rt.s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
    assert sorted(json.loads(line)["n"] for line in data.splitlines() if line.strip()) == [1, 2]


def test_partial_batch_failure_redelivery_and_dlq(rt: LocalRuntime) -> None:
    rt.pump()  # S3 sends a test event to the queue when notifications are configured, as AWS does
    rt.host.invocations.clear()
    sqs = rt.client("sqs")
    queue = rt.physical_name("WorkQueue")
    sqs.send_message(QueueUrl=queue, MessageBody="ok-1")
    sqs.send_message(QueueUrl=queue, MessageBody="please fail")
    rt.pump()
    first = [r["body"] for i in rt.invocations_of("WorkerFunction") for r in i.event["Records"]]
    assert sorted(first) == ["ok-1", "please fail"]
    rt.pump()  # the failed one stays invisible for the queue's VisibilityTimeout (60 s)
    assert len(rt.invocations_of("WorkerFunction")) == 1
    rt.advance(61)  # visible again: second receive, fails again
    bodies = [r["body"] for i in rt.invocations_of("WorkerFunction") for r in i.event["Records"]]
    assert bodies.count("please fail") == 2 and bodies.count("ok-1") == 1
    record = rt.invocations_of("WorkerFunction")[-1].event["Records"][0]
    assert record["attributes"]["ApproximateReceiveCount"] == "2"
    rt.advance(61)  # maxReceiveCount 2 exceeded: the emulator moves it to the DLQ
    dead = _queue_messages(rt, "WorkDLQ")
    assert [m["Body"] for m in dead] == ["please fail"]
    assert len(rt.invocations_of("WorkerFunction")) == 2


def test_http_api_payload_v2_context_and_errors(rt: LocalRuntime) -> None:
    status, headers, body = _http(f"{rt.api_url}/items/42?x=1&x=2&y=")
    assert status == 200 and headers["x-test"] == "yes"
    got = json.loads(body)
    assert got["route"] == "GET /items/{item_id}"
    assert got["pathParameters"] == {"item_id": "42"}
    assert got["query"] == {"x": "1,2", "y": ""}
    assert got["stage"] == "test"
    assert got["function_name"] == rt.physical_name("ApiFunction")
    assert got["memory"] == 384
    assert 0 < got["remaining_ms"] <= 2000

    status, _, body = _http(f"{rt.api_url}/echo", "POST", b'{"a": 1}', {"content-type": "application/json"})
    assert status == 201 and json.loads(json.loads(body)["body"]) == {"a": 1}
    status, _, body = _http(f"{rt.api_url}/files/a/b/c.png", "PUT", b"\x89PNG", {"content-type": "image/png"})
    got = json.loads(body)
    assert (
        status == 200 and got["pathParameters"] == {"proxy": "a/b/c.png"} and got["isBase64Encoded"] is True
    )

    assert _http(f"{rt.api_url}/nowhere")[0] == 404
    assert _http(f"{rt.api_url}/echo")[0] == 404  # GET has no route; only POST /echo
    status, _, body = _http(f"{rt.api_url}/boom")
    assert status == 500 and json.loads(body) == {"message": "Internal Server Error"}
    boom = rt.invocations_of("ApiFunction")[-1]
    assert boom.error is not None and boom.error["errorType"] == "ValueError"


def test_timeout_is_enforced_and_reported_like_lambda(rt: LocalRuntime) -> None:
    with pytest.raises(FunctionError) as info:
        rt.invoke("ApiFunction", {"routeKey": "GET /slow"})
    assert info.value.error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in info.value.error["errorMessage"]


def test_schedules_fire_on_the_advanced_clock(rt: LocalRuntime) -> None:
    start = rt.clock.now()  # hh:00:30
    rt.advance(30 * 60)
    ticks = [i for i in rt.invocations_of("TickFunction")]
    rate = [i for i in ticks if i.event == {"kind": "tick"}]
    assert [round(i.started - start) for i in rate] == [300, 600, 900, 1200, 1500, 1800]
    assert not [i for i in ticks if i.event != {"kind": "tick"}]  # the hourly cron is not due yet
    rt.advance(30 * 60)
    hourly = [i for i in rt.invocations_of("TickFunction") if i.event != {"kind": "tick"}]
    assert len(hourly) == 1 and round(hourly[0].started - start) == 3600 - 30


def test_scheduled_and_routed_inputs_carry_the_platform_time_as_aws_fills_them(rt: LocalRuntime) -> None:
    start = rt.clock.now()  # hh:00:30 of the current hour; the platform time, not the wall's
    rt.advance(30 * 60)
    got = [(round(i.started - start), i.event) for i in rt.invocations_of("StampFunction")]
    scheduler = [(t, e) for t, e in got if "schedule" in e]
    assert [t for t, _ in scheduler] == [600, 1200, 1800]
    for t, event in scheduler:  # EventBridge Scheduler's context attributes, filled in
        assert event["at"] == iso(start + t) and event["attempt"] == "1"
        assert event["schedule"].startswith("arn:aws:scheduler:") and "<" not in event["schedule"]
    rule = [(t, e) for t, e in got if "rule" in e]
    assert [t for t, _ in rule] == [900, 1800]
    for t, event in rule:  # a scheduled rule's InputTransformer: $.time and the reserved variables
        assert event == {"at": iso(start + t), "rule": rule[0][1]["rule"], "received": iso(start + t)}

    events = rt.client("events")
    entry = {"Source": "shop.stamps", "DetailType": "Stamp", "Detail": json.dumps({"n": 7})}
    assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
    rt.pump(settle=5.0)  # EventBridge -> SQS is asynchronous in LocalStack
    routed = [i.event for i in rt.invocations_of("StampFunction") if "n" in i.event]
    assert routed == [{"n": 7, "label": "Stamp #7"}]


def test_alarm_state_change_reaches_sns_and_eventbridge_subscribers(rt: LocalRuntime) -> None:
    name = f"{rt.stack_name}-high-value"
    dims = {"Variant": "challenger"}
    rt.advance(60)
    assert rt.alarm_state("HighValueAlarm") == "OK"  # notBreaching: no data is fine
    t0 = rt.clock.now()
    rt.put_metric(f"RuntimeTest-{rt.stack_name}", "Value", 50, dims, timestamp=t0)
    rt.put_metric(f"RuntimeTest-{rt.stack_name}", "Value", 3, dims, timestamp=t0 + 60)
    rt.advance(120)
    assert rt.alarm_state("HighValueAlarm") == "OK"  # 1 of 3 breaching, 2 needed
    rt.put_metric(f"RuntimeTest-{rt.stack_name}", "Value", 11, dims, timestamp=rt.clock.now())
    rt.advance(60)
    assert rt.alarm_state("HighValueAlarm") == "ALARM"
    change = rt.alarm_history("HighValueAlarm")[-1]
    assert change["OldState"] == "OK" and change["NewState"] == "ALARM"

    sns_calls = rt.invocations_of("AlarmSinkFunction")
    messages = [json.loads(r["Sns"]["Message"]) for i in sns_calls for r in i.event["Records"]]
    assert [m["NewStateValue"] for m in messages] == ["OK", "ALARM"]
    assert messages[-1]["AlarmName"] == name and messages[-1]["Trigger"]["Threshold"] == 10.0
    assert sns_calls[-1].event["Records"][0]["EventSource"] == "aws:sns"

    events = [i.event for i in rt.invocations_of("StateChangeFunction")]
    assert len(events) == 1  # the rule matches ALARM only
    assert events[0]["detail-type"] == "CloudWatch Alarm State Change"
    assert events[0]["detail"]["state"]["value"] == "ALARM" and events[0]["detail"]["alarmName"] == name

    rt.advance(180)  # no more data: notBreaching -> OK again
    assert rt.alarm_state("HighValueAlarm") == "OK"


def test_emf_lines_become_metrics_and_feed_percentile_alarms(rt: LocalRuntime) -> None:
    for ms in [10] * 8 + [900, 950]:
        status, _, _ = _http(f"{rt.api_url}/latency?ms={ms}")
        assert status == 200
    cw = rt.client("cloudwatch")
    now = rt.clock.now()
    stats = cw.get_metric_statistics(
        Namespace=f"RuntimeTest-{rt.stack_name}",
        MetricName="Latency",
        Dimensions=[{"Name": "service", "Value": "api"}],
        StartTime=now - 600,
        EndTime=now + 600,
        Period=60,
        Statistics=["SampleCount", "Maximum"],
    )["Datapoints"]
    assert sum(d["SampleCount"] for d in stats) == 10 and max(d["Maximum"] for d in stats) == 950
    rt.advance(60)
    assert rt.alarm_state("LatencyAlarm") == "ALARM"  # p90 of [10 x8, 900, 950] = 900 > 500
    rt.advance(60)
    assert rt.alarm_state("LatencyAlarm") == "INSUFFICIENT_DATA"  # TreatMissingData: missing


def test_metric_math_alarm(rt: LocalRuntime) -> None:
    t = rt.clock.now()
    # clicks / impressions per 300 s period: 0.8, then 0.2, 0.1
    for i, (clicks, impressions) in enumerate([(8, 10), (2, 10), (1, 10)]):
        rt.put_metric(f"RuntimeTest-{rt.stack_name}", "Clicks", clicks, timestamp=t + i * 300 + 1)
        rt.put_metric(f"RuntimeTest-{rt.stack_name}", "Impressions", impressions, timestamp=t + i * 300 + 1)
    rt.advance(600)
    assert rt.alarm_state("RatioAlarm") == "OK"
    rt.advance(300)
    assert rt.alarm_state("RatioAlarm") == "ALARM"
    assert rt.alarm_history("RatioAlarm")[-1]["Datapoints"] == [0.2, 0.1]


def test_eventbridge_rule_pattern_routes_to_function(rt: LocalRuntime) -> None:
    events = rt.client("events")
    entries = [
        {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": json.dumps({"amount": 150})},
        {"Source": "shop.orders", "DetailType": "OrderPlaced", "Detail": json.dumps({"amount": 50})},
        {"Source": "shop.other", "DetailType": "OrderPlaced", "Detail": json.dumps({"amount": 500})},
    ]
    assert events.put_events(Entries=entries)["FailedEntryCount"] == 0
    # EventBridge -> SQS is asynchronous in LocalStack and took over the default 1 s settle on a
    # loaded CI machine: wait longer here (a quiet round costs this only where nothing arrives).
    rt.pump(settle=5.0)
    calls = rt.invocations_of("OrderFunction")
    assert len(calls) == 1
    assert calls[0].event["detail"] == {"amount": 150} and calls[0].event["source"] == "shop.orders"


def test_invoke_by_any_name_and_errors(rt: LocalRuntime) -> None:
    assert rt.invoke("tick", {"a": 1})["event"] == {"a": 1}  # by folder name
    assert rt.invoke(rt.physical_name("TickFunction"), {})["function"] == rt.physical_name("TickFunction")
    with pytest.raises(KeyError):
        rt.invoke("NoSuchFunction", {})


def test_alarm_queries_see_data_put_straight_to_the_emulator(rt: LocalRuntime) -> None:
    """A function's PutMetricData (not through the runtime) into periods already queried is seen
    by the next evaluation; on embedded moto an unchanged metric is not queried again."""
    from datetime import UTC, datetime

    from shelfwise_local.runtime.alarms import metric_key

    namespace = f"RuntimeTest-{rt.stack_name}"
    key = metric_key(namespace, "Late", {"Variant": "challenger"})
    end = (rt.clock.now() // 300) * 300
    start = end - 900
    calls: list[str] = []
    cw = rt.client("cloudwatch")
    cw.meta.events.register("before-call.cloudwatch.GetMetricStatistics", lambda **_: calls.append("q"))
    assert rt._datapoints(key, "Maximum", start, end, 300) == [None, None, None]
    cw.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": "Late",
                "Dimensions": [{"Name": "Variant", "Value": "challenger"}],
                "Timestamp": datetime.fromtimestamp(start + 310, tz=UTC),
                "Value": 7.0,
            }
        ],
    )
    assert rt._datapoints(key, "Maximum", start, end, 300) == [None, 7.0, None]
    queried = len(calls)
    assert rt._datapoints(key, "Maximum", start, end, 300) == [None, 7.0, None]
    if rt.emulator is not None and rt.emulator.kind == "moto":
        assert len(calls) == queried  # answered from the last query: nothing new was put
    else:
        assert len(calls) == queried + 1


def _objects(rt: LocalRuntime, prefix: str) -> list[bytes]:
    bucket = rt.physical_name("DataBucket")
    deadline = time.monotonic() + 30  # LocalStack's Firehose flushes on its own (wall-clock) interval
    keys: list[str] = []
    while not keys and time.monotonic() < deadline:
        keys = [o["Key"] for o in rt.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        if not keys:
            time.sleep(0.5)
    return [rt.s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]


def test_subscription_filters_deliver_matching_output_lines_to_firehose(rt: LocalRuntime) -> None:
    import gzip

    lines = [
        '{"kind": "keep", "n": 2}',
        '{"kind": "keep", "n": 1}',
        "plain text, not JSON",
        '{"kind": "drop", "n": 5}',
        '{"kind": "keep", "n": 3, "extra": [1, 2]}',
    ]
    assert rt.invoke("LogsFunction", {"lines": lines}) == {"printed": 5}
    assert not rt.s3.list_objects_v2(Bucket=rt.physical_name("DataBucket"), Prefix="subscribed/").get(
        "Contents"
    )  # delivered at the next pump, as Firehose delivers after its buffer interval
    rt.pump()
    # Decompression + message extraction + delimiter: the matching messages, one per line.
    kept = b"".join(_objects(rt, "subscribed/kept/")).decode()
    assert kept.splitlines() == [lines[0], lines[4]]
    assert kept.endswith("\n")
    # No processors: the CloudWatch Logs envelope, gzip'd, with every line (empty pattern).
    envelopes = [json.loads(gzip.decompress(blob)) for blob in _objects(rt, "subscribed/all/")]
    assert [e["message"] for env in envelopes for e in env["logEvents"]] == lines
    assert envelopes[0]["messageType"] == "DATA_MESSAGE"
    assert envelopes[0]["logGroup"] == f"/aws/lambda/{rt.physical_name('LogsFunction')}"
    assert envelopes[0]["subscriptionFilters"] == ["AllLinesFilter"]
