"""The runtime's pure parts with hand-checked cases: schedules, patterns, alarm rules, template."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfwise_local.runtime.alarms import Alarm, AlarmEvaluator, eval_expression, percentile, statistic
from shelfwise_local.runtime.clock import Clock, Schedule, ScheduleError
from shelfwise_local.runtime.patterns import matches
from shelfwise_local.runtime.targets import rule_target_input, scheduler_target_input, select
from shelfwise_local.runtime.template import (
    Context,
    Resolver,
    TemplateError,
    apply_globals,
    creation_order,
    load_template,
)


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# ---------------------------------------------------------------- schedules


def test_rate_fires_every_interval_from_creation() -> None:
    s = Schedule("rate(5 minutes)")
    created = _ts(2026, 1, 5, 0, 0, 30)
    assert s.next_after(created, created) == created + 300
    assert s.next_after(created + 300, created) == created + 600
    assert s.next_after(created + 301, created) == created + 600


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("cron(0 * * * ? *)", (2026, 1, 5, 0, 0, 30), (2026, 1, 5, 1, 0)),
        ("cron(15 10 ? * MON-FRI *)", (2026, 1, 3, 12, 0), (2026, 1, 5, 10, 15)),  # Sat -> Mon
        ("cron(0/20 9 * * ? *)", (2026, 1, 5, 9, 21), (2026, 1, 5, 9, 40)),
        ("cron(0 0 1 JAN ? 2027)", (2026, 6, 1, 0, 0), (2027, 1, 1, 0, 0)),
        ("cron(30 2 ? * 1 *)", (2026, 1, 5, 0, 0), (2026, 1, 11, 2, 30)),  # 1 = Sunday in AWS cron
    ],
)
def test_cron_next_fire(expr: str, after: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert Schedule(expr).next_after(_ts(*after), 0) == _ts(*expected)


@pytest.mark.parametrize(
    "expr", ["rate(0 minutes)", "rate(5 minute)", "cron(* * * * *)", "cron(0 0 1 * MON *)", "every 5m"]
)
def test_bad_schedules_are_rejected(expr: str) -> None:
    with pytest.raises(ScheduleError):
        Schedule(expr)


def test_frozen_clock_moves_only_forward() -> None:
    c = Clock(start=100.0)
    assert c.now() == 100.0
    assert c.advance(60) == 160.0
    with pytest.raises(ValueError):
        c.set(10.0)


# ---------------------------------------------------------------- event patterns

EVENT = {
    "source": "aws.cloudwatch",
    "detail-type": "CloudWatch Alarm State Change",
    "resources": ["arn:a", "arn:b"],
    "detail": {"alarmName": "shelfwise-ctr", "state": {"value": "ALARM"}, "amount": 150, "flag": None},
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"source": ["aws.cloudwatch"]}, True),
        ({"source": ["aws.events"]}, False),
        ({"detail": {"state": {"value": ["ALARM", "OK"]}}}, True),
        ({"detail": {"alarmName": [{"prefix": "shelfwise-"}]}}, True),
        ({"detail": {"alarmName": [{"suffix": "-ctr"}]}}, True),
        ({"detail": {"alarmName": [{"anything-but": ["shelfwise-ctr"]}]}}, False),
        ({"detail": {"amount": [{"numeric": [">", 100, "<=", 150]}]}}, True),
        ({"detail": {"amount": [{"numeric": [">", 150]}]}}, False),
        ({"detail": {"missing": [{"exists": False}]}}, True),
        ({"detail": {"amount": [{"exists": False}]}}, False),
        ({"detail": {"flag": [None]}}, True),
        ({"resources": ["arn:b"]}, True),  # arrays match if any element matches
        ({"detail": {"alarmName": [{"equals-ignore-case": "SHELFWISE-CTR"}]}}, True),
        ({"$or": [{"source": ["x"]}, {"detail": {"amount": [150]}}]}, True),
        ({"detail": {"amount": ["150"]}}, False),  # a string never equals a number
    ],
)
def test_event_pattern_matching(pattern: dict, expected: bool) -> None:
    assert matches(pattern, EVENT) is expected


# ---------------------------------------------------------------- target inputs

_SCHEDULED = {
    "version": "0",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "time": "2026-03-01T03:00:00Z",
    "resources": ["arn:aws:events:eu-west-1:1:rule/r"],
    "detail": {"items": [{"id": "a"}, {"id": "b"}], "n": 3},
}


def _rule_input(target: dict) -> object:
    return rule_target_input(
        target, _SCHEDULED, rule_arn="arn:rule/r", rule_name="r", ingestion_time="2026-03-01T03:00:01Z"
    )


def test_a_rule_hands_its_target_the_event_a_constant_or_a_part_of_the_event() -> None:
    assert _rule_input({}) == _SCHEDULED
    assert _rule_input({"Input": '{"mode": "train"}'}) == {"mode": "train"}  # no time: nothing of the event
    assert _rule_input({"InputPath": "$.detail.items[1]"}) == {"id": "b"}
    assert select(_SCHEDULED, "$.detail-type") == "Scheduled Event"
    with pytest.raises(ValueError, match="not one the local runtime supports"):
        select(_SCHEDULED, "$..id")


def test_an_input_transformer_quotes_strings_and_inlines_json_as_eventbridge_does() -> None:
    spec = {
        "InputPathsMap": {"t": "$.time", "n": "$.detail.n", "items": "$.detail.items"},
        "InputTemplate": '{"time": "<t>", "n": <n>, "label": "n=<n> at <t>", "items": <items>, '
        '"rule": "<aws.events.rule-name>", "got": "<aws.events.event.ingestion-time>", "x": "<b>"}',
    }
    assert _rule_input({"InputTransformer": spec}) == {
        "time": "2026-03-01T03:00:00Z",
        "n": 3,
        "label": "n=3 at 2026-03-01T03:00:00Z",
        "items": [{"id": "a"}, {"id": "b"}],
        "rule": "r",
        "got": "2026-03-01T03:00:01Z",
        "x": "<b>",  # not a variable: left as written
    }
    whole = {"InputPathsMap": {}, "InputTemplate": '{"e": <aws.events.event>, "j": <aws.events.event.json>}'}
    got = _rule_input({"InputTransformer": whole})
    assert got == {"e": {k: v for k, v in _SCHEDULED.items() if k != "detail"}, "j": _SCHEDULED}


def test_scheduler_fills_in_its_context_attributes() -> None:
    target = {
        "Input": '{"mode": "train", "time": "<aws.scheduler.scheduled-time>", "s": "<aws.scheduler.schedule-arn>"}'
    }
    got = scheduler_target_input(target, schedule_arn="arn:s", scheduled_time="2026-03-01T03:00:00Z")
    assert got == {"mode": "train", "time": "2026-03-01T03:00:00Z", "s": "arn:s"}
    assert scheduler_target_input({}, schedule_arn="arn:s", scheduled_time="2026-03-01T03:00:00Z") == {}


# ---------------------------------------------------------------- alarms


def _alarm(**props: object) -> Alarm:
    base = {
        "Namespace": "N",
        "MetricName": "M",
        "Statistic": "Maximum",
        "Period": 60,
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "Threshold": 10,
        "ComparisonOperator": "GreaterThanThreshold",
    }
    base.update(props)
    return Alarm("a", base)


@pytest.mark.parametrize(
    ("treat", "points", "state"),
    [
        ("missing", [11, 12, 1], "ALARM"),
        ("missing", [11, 1, 1], "OK"),
        ("missing", [None, None, None], "INSUFFICIENT_DATA"),
        ("missing", [None, None, 11], "ALARM"),  # fewer present than needed, all breaching
        ("missing", [None, 1, 11], "OK"),
        ("ignore", [None, None, None], "OK"),  # keeps the current state (OK below)
        ("breaching", [None, None, 1], "ALARM"),
        ("notBreaching", [None, 11, None], "OK"),
        ("notBreaching", [11, None, 11], "ALARM"),
    ],
)
def test_treat_missing_data(treat: str, points: list[float | None], state: str) -> None:
    alarm = _alarm(TreatMissingData=treat)
    alarm.state = "OK"
    assert AlarmEvaluator(lambda *a: []).decide(alarm, points)[0] == state


def test_evaluator_uses_complete_periods_and_records_transitions() -> None:
    seen: list[tuple[float, float]] = []

    def source(key, stat, start, end, period):  # type: ignore[no-untyped-def]
        seen.append((start, end))
        return [20.0, 20.0, 1.0]

    ev = AlarmEvaluator(source)
    ev.add(_alarm())
    changes = ev.evaluate(3630.0)
    assert seen == [(3420.0, 3600.0)]  # the last 3 whole minutes before 3630
    assert [(c.old_state, c.new_state) for c in changes] == [("INSUFFICIENT_DATA", "ALARM")]
    assert ev.evaluate(3690.0) == []  # no change, no transition


def test_statistics_golden() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert statistic(values, "Sum") == 110 and statistic(values, "Average") == 22
    assert statistic(values, "SampleCount") == 5 and statistic(values, "Minimum") == 1
    assert statistic(values, "p50") == 3.0 and statistic(values, "p99") == 100.0
    assert statistic(values, "p80") == 4.0
    assert statistic(values, "tm80") == 2.5  # mean of the lowest 80%
    assert statistic([], "p99") is None


@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=50),
    st.floats(min_value=0.1, max_value=100),
)
def test_percentile_is_an_observed_value_within_bounds(values: list[float], p: float) -> None:
    v = percentile(values, p)
    assert v in values and min(values) <= v <= max(values)
    assert (sum(1 for x in values if x <= v) / len(values)) >= p / 100 - 1e-9


def test_metric_math() -> None:
    assert eval_expression("clicks / impressions * 100", {"clicks": 5.0, "impressions": 20.0}) == 25.0
    assert eval_expression("-a + 2", {"a": 1.0}) == 1.0
    assert eval_expression("a / b", {"a": 1.0, "b": 0.0}) is None
    assert eval_expression("a - b", {"a": None, "b": 1.0}) is None
    with pytest.raises(ValueError):
        eval_expression("FILL(a, 0)", {"a": 1.0})


# ---------------------------------------------------------------- template


def _resolver(template: dict, params: dict | None = None) -> Resolver:
    created = {"Bucket": "my-bucket", "Queue": "http://q"}
    atts = {("Queue", "Arn"): "arn:aws:sqs:eu-west-1:1:q"}
    return Resolver(
        template,
        Context("stack", "eu-west-1", "111122223333", parameters=params or {"Env": "dev"}),
        lambda n: created[n],
        lambda lid, att: atts[(lid, att)],
    )


def test_intrinsics() -> None:
    template = {"Conditions": {"IsDev": {"Fn::Equals": [{"Ref": "Env"}, "dev"]}}, "Resources": {}}
    r = _resolver(template)
    assert r.resolve({"Fn::Sub": "${AWS::StackName}-${Bucket}-${Queue.Arn}-${!Literal}"}) == (
        "stack-my-bucket-arn:aws:sqs:eu-west-1:1:q-${Literal}"
    )
    assert r.resolve({"Fn::Sub": ["${X}/${Env}", {"X": {"Ref": "Bucket"}}]}) == "my-bucket/dev"
    assert r.resolve({"Fn::If": ["IsDev", "a", "b"]}) == "a"
    assert r.resolve({"k": {"Fn::If": ["IsDev", {"Ref": "AWS::NoValue"}, 1]}, "j": 2}) == {"j": 2}
    assert r.resolve({"Fn::Join": ["-", ["a", {"Ref": "Env"}]]}) == "a-dev"
    assert r.resolve({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}) == "b"
    with pytest.raises(TemplateError):
        r.resolve({"Fn::ImportValue": "x"})


def test_yaml_tags_globals_and_order(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        """
Globals:
  Function:
    Timeout: 5
    Layers: [!Ref L1]
    Environment: {Variables: {A: "1", B: "2"}}
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Layers: [L2]
      Environment: {Variables: {B: "3"}}
      Events: {Q: {Type: SQS, Properties: {Queue: !GetAtt Queue.Arn}}}
  Queue:
    Type: AWS::SQS::Queue
    Properties: {RedrivePolicy: {deadLetterTargetArn: !GetAtt DLQ.Arn}}
  DLQ:
    Type: AWS::SQS::Queue
"""
    )
    t = apply_globals(load_template(path))
    props = t["Resources"]["Fn"]["Properties"]
    assert props["Timeout"] == 5
    assert props["Layers"] == [{"Ref": "L1"}, "L2"]
    assert props["Environment"]["Variables"] == {"A": "1", "B": "3"}
    assert creation_order(t["Resources"]) == ["DLQ", "Queue", "Fn"]


def test_composite_alarm_rules() -> None:
    from shelfwise_local.runtime.alarms import evaluate_rule

    states = {
        "a": "ALARM",
        "b": "OK",
        "arn:aws:cloudwatch:eu-west-1:1:alarm:c": "INSUFFICIENT_DATA",
        "c": "INSUFFICIENT_DATA",
    }

    def state_of(ref: str) -> str:
        return states[ref.split(":alarm:")[-1] if ":alarm:" in ref else ref]

    assert evaluate_rule('ALARM("a") OR ALARM("b")', state_of) is True
    assert evaluate_rule("ALARM(a) AND OK(b)", state_of) is True
    assert evaluate_rule("ALARM(b) OR NOT OK(b)", state_of) is False
    assert (
        evaluate_rule(
            'ALARM(b) OR (OK(b) AND INSUFFICIENT_DATA("arn:aws:cloudwatch:eu-west-1:1:alarm:c"))', state_of
        )
        is True
    )
    assert evaluate_rule("TRUE AND NOT FALSE", state_of) is True
    with pytest.raises(ValueError):
        evaluate_rule("ALARM(a) OR", state_of)
