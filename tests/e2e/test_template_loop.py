"""The product's own wiring, end to end: template.yaml in the local runtime.

Each test drives one arrow of the loop through the template's resources, so a wiring mistake in
template.yaml (a wrong queue, topic, route or schedule) fails here on both emulators.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest

from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.clock import iso
from shelfwise_local.runtime.targets import scheduler_target_input


def _http(url: str, method: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_raw_file_becomes_curated_parquet(stack: LocalRuntime) -> None:
    import pyarrow.parquet as pq

    stack.pump()  # the S3 test event the notification configuration sends
    rows = [
        "event_type,user_id,session_id,item_id,timestamp",
        "view,u1,s1,i1,2026-11-20T10:00:00Z",
        "add_to_cart,u1,s1,i1,2026-11-20T10:01:00Z",
        "purchase,u1,s1,i1,2026-11-20T10:02:00Z",
        "view,u2,s2,i2,2026-11-21T09:00:00Z",
        "teleport,u2,s2,i2,2026-11-21T09:01:00Z",  # unknown event type: quarantined
    ]
    stack.put_object("RawBucket", "raw/native/day 1.csv", "\n".join(rows) + "\n")
    ingest = stack.invocations_of("IngestEventsFunction")
    assert ingest and ingest[-1].ok, ingest[-1].error if ingest else "ingest never invoked"

    curated = stack.physical_name("CuratedBucket")
    keys = [
        o["Key"]
        for o in stack.s3.list_objects_v2(Bucket=curated, Prefix="curated/events/").get("Contents", [])
    ]
    parquet = sorted(k for k in keys if k.endswith(".parquet"))
    assert {re.search(r"event_date=([0-9-]+)/", k).group(1) for k in parquet} == {"2026-11-20", "2026-11-21"}  # type: ignore[union-attr]
    tables = [
        pq.read_table(io.BytesIO(stack.s3.get_object(Bucket=curated, Key=k)["Body"].read())) for k in parquet
    ]
    got = sorted((str(r["event_type"]), r["user_id"], r["item_id"]) for t in tables for r in t.to_pylist())
    assert got == sorted(
        [("view", "u1", "i1"), ("add_to_cart", "u1", "i1"), ("purchase", "u1", "i1"), ("view", "u2", "i2")]
    )
    assert all(
        r["source_key"].endswith("raw/native/day 1.csv") for t in tables for r in t.to_pylist()
    )  # decoded key

    quarantine = stack.physical_name("QuarantineBucket")
    qkeys = [o["Key"] for o in stack.s3.list_objects_v2(Bucket=quarantine).get("Contents", [])]
    bad = [
        json.loads(line)
        for k in qkeys
        for line in gzip.decompress(stack.s3.get_object(Bucket=quarantine, Key=k)["Body"].read()).splitlines()
    ]
    assert [b["line"] for b in bad] == [6]  # valid + quarantined = input

    dlq = stack.client("sqs").receive_message(QueueUrl=stack.physical_name("IngestDLQ"), WaitTimeSeconds=0)
    assert not dlq.get("Messages")


def _routes(stack: LocalRuntime) -> list[tuple[str, Any]]:
    return [(api_id, route) for api_id, api in stack.apis.items() for route in api.routes]


def test_http_requests_reach_their_functions_through_the_local_api(stack: LocalRuntime) -> None:
    routes = _routes(stack)
    if not routes:
        pytest.fail("template.yaml declares no HttpApi routes yet")
    for api_id, route in routes:
        before = len(stack.invocations_of(route.function))
        path = re.sub(r"\{[^}]+\}", "e2e-probe", route.path if route.path != "$default" else "/")
        method = "GET" if route.method == "ANY" else route.method
        status = _http(
            stack.apis[api_id].url + path, method, b"{}" if method in {"POST", "PUT", "PATCH"} else None
        )
        calls = stack.invocations_of(route.function)
        assert len(calls) == before + 1, f"{route.route_key} did not reach {route.function} (HTTP {status})"
        event = calls[-1].event
        assert event["version"] == "2.0" and event["routeKey"] == route.route_key
        assert event["rawPath"] == path
        payload = calls[-1].payload
        if calls[-1].ok and isinstance(payload, dict) and "statusCode" in payload:
            assert status == payload["statusCode"]  # the function's answer is what the client gets


def test_schedules_fire_on_the_advanced_clock(stack: LocalRuntime) -> None:
    horizon = stack.clock.now() + 3600
    due = {
        s.name: (s.next_fire, s.targets)
        for s in stack._schedules
        if s.next_fire is not None and s.next_fire <= horizon
    }
    if not due:
        pytest.fail("template.yaml declares no schedule that fires within an hour")
    start = stack.clock.now()
    stack.advance(max(t for t, _ in due.values()) - start)
    for name, (fire_at, targets) in due.items():
        for target in targets:
            calls = [i for i in stack.invocations_of(target["Arn"]) if abs(i.started - fire_at) < 1e-6]
            assert calls, f"schedule {name} did not invoke {target['Arn']} at {fire_at - start:.0f} s"
            if "Input" not in target:
                assert calls[0].event["detail-type"] == "Scheduled Event"
            # Handlers act as of the event's time: every schedule hands them the platform's instant
            # (the runtime's clock), never leaving them to read a wall clock of their own.
            assert calls[0].event.get("time") == iso(fire_at), f"schedule {name} passes no time"


def test_a_drift_alarm_retrains_as_of_the_alarm_time(stack: LocalRuntime) -> None:
    stack.advance(90)  # the platform clock apart from any other instant
    detail = {"alarmName": stack.physical_name("InputDriftAlarm"), "state": {"value": "ALARM"}}
    assert stack.put_event("aws.cloudwatch", "CloudWatch Alarm State Change", detail) >= 1
    calls = stack.invocations_of("TrainModelFunction")
    assert [c.event for c in calls] == [{"mode": "train", "time": iso(stack.clock.now())}]


def _breaching_value(props: dict[str, Any]) -> float:
    threshold = float(props["Threshold"])
    return (
        abs(threshold) * 2 + 1 if "Greater" in props["ComparisonOperator"] else threshold - abs(threshold) - 1
    )


def test_alarm_state_change_reaches_the_subscribed_function(stack: LocalRuntime) -> None:
    subscribed = {p.meta["topic"]: p.function for p in stack._pollers if p.kind == "sns"}
    candidates = [
        a
        for a in stack.evaluator.alarms.values()
        if "MetricName" in a.props
        and a.props.get("Statistic") in {"Maximum", "Average", "Minimum", "Sum"}
        and any(arn in subscribed for arn in a.props.get("AlarmActions", []))
    ]
    if not candidates:
        pytest.fail("template.yaml has no plain-statistic alarm whose action reaches a subscribed function")
    alarm = candidates[0]
    function = next(subscribed[arn] for arn in alarm.props["AlarmActions"] if arn in subscribed)
    p = alarm.props
    period = alarm.period
    t0 = (stack.clock.now() // period + 1) * period
    for k in range(alarm.evaluation_periods):
        stack.put_metric(
            p["Namespace"],
            p["MetricName"],
            _breaching_value(p),
            p.get("Dimensions", []),
            timestamp=t0 + k * period + 1,
        )
    # At t0 + N periods the last N complete periods are exactly the breaching ones.
    stack.advance(t0 + alarm.evaluation_periods * period - stack.clock.now())
    assert stack.alarm_state(alarm.name) == "ALARM", stack.alarm_history(alarm.name)
    messages = [
        json.loads(r["Sns"]["Message"])
        for i in stack.invocations_of(function)
        for r in i.event.get("Records", [])
    ]
    assert any(m["AlarmName"] == alarm.name and m["NewStateValue"] == "ALARM" for m in messages)


def test_simulated_shop_is_ingested_and_trains_a_registered_model(stack: LocalRuntime, tmp_path: Any) -> None:
    """Simulator files -> raw bucket -> ingest -> curated -> the training schedule's own event -> registry."""
    from shelfwise.simulator.generate import simulate_to_files
    from shelfwise.simulator.params import ShopParams

    daily = next(
        (
            s
            for s in stack._schedules
            if s.targets and "TrainModelFunction" in s.targets[0]["Arn"] and "Input" in s.targets[0]
        ),
        None,
    )
    if daily is None:
        pytest.fail("template.yaml has no training schedule with an Input yet")
    result = simulate_to_files(ShopParams(n_users=2000, n_items=500, n_days=4), seed=7, out_dir=tmp_path)
    files = sorted((tmp_path / "events").iterdir())
    for f in files:
        stack.put_object("RawBucket", f"raw/native/{f.name}", f.read_bytes(), pump=False)
    stack.pump()
    ingests = stack.invocations_of("IngestEventsFunction")
    assert ingests and all(i.ok for i in ingests), [i.error for i in ingests if not i.ok]
    curated = stack.physical_name("CuratedBucket")
    parquet = [
        o["Key"]
        for o in stack.s3.list_objects_v2(Bucket=curated, Prefix="curated/events/").get("Contents", [])
    ]
    assert len([k for k in parquet if k.endswith(".parquet")]) >= len(files)

    # Exactly what the schedule sends, at the platform's instant.
    event = scheduler_target_input(
        daily.targets[0], schedule_arn=daily.rule_arn, scheduled_time=iso(stack.clock.now())
    )
    payload = stack.invoke("TrainModelFunction", event)
    version = payload["training"]["version"]
    models = stack.physical_name("ModelsBucket")
    keys = {o["Key"] for o in stack.s3.list_objects_v2(Bucket=models, Prefix="models/").get("Contents", [])}
    manifest_key = next(k for k in keys if k.endswith(f"/{version}/manifest.json"))
    manifest = json.loads(stack.s3.get_object(Bucket=models, Key=manifest_key)["Body"].read())
    assert manifest["algorithm"] == payload["training"]["algorithm"]
    assert any(k.endswith(f"/{version}/model.onnx") for k in keys)
    assert result.summary()["events"] > 0

    # Scheduler and Lambda retry a delivery: the same scheduled run again is the same run.
    again = stack.invoke("TrainModelFunction", event)
    assert again["decision"]["action"] == "done" and again["training"]["version"] == version
    stack.pump()
    committed = [
        o["Key"]
        for o in stack.s3.list_objects_v2(Bucket=models, Prefix="models/").get("Contents", [])
        if o["Key"].endswith("/manifest.json")
    ]
    assert committed == [manifest_key]
    offers = [
        i
        for i in stack.invocations_of("PromoteModelFunction")
        if i.event.get("detail-type") == "ModelRegistered"
    ]
    assert [o.event["detail"]["version"] for o in offers] == [version]
