"""Rollout policy against the real registry on moto: rollback on alarms, staged promotion."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from shelfwise.bundle import write_bundle
from shelfwise.canary_bandit import BanditPolicy
from shelfwise.errors import InputError
from shelfwise.onnx_export import build_popularity_model
from shelfwise.registry import Registry
from shelfwise.rollout import (
    AlarmNotice,
    Rollout,
    RolloutPolicy,
    alarm_states,
    alarm_target,
    handle_alarm_event,
    parse_alarm_notices,
    read_decisions,
)
from tests.unit.test_canary_bandit import split

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
STACK = "shelfwise"


def bundle(tmp: Path, version: str, champion: str | None) -> Path:
    """A real tiny bundle (popularity graph over three items) that passes the offline gate."""
    d = tmp / version
    scores = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    write_bundle(
        d,
        model=build_popularity_model(scores),
        items={"item_id": np.array(["a", "b", "c"]), "popularity": scores},
        manifest={
            "algorithm": "als",
            "evaluation": {
                "primary_metric": "ndcg@10",
                "best": "als",
                "models": {
                    "als": {"ndcg@10": 0.3},
                    "popularity": {"ndcg@10": 0.1},
                    "itemknn": {"ndcg@10": 0.2},
                },
                "champion": {"version": champion, "metrics": {"ndcg@10": 0.29}} if champion else None,
            },
        },
        parquet=False,
    )
    return d


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def env(tmp_path: Path) -> Any:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        for b in ("models", "mon"):
            s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        ssm = boto3.client("ssm", region_name="eu-west-1")
        events = boto3.client("events", region_name="eu-west-1")
        sns = boto3.client("sns", region_name="eu-west-1")
        sqs = boto3.client("sqs", region_name="eu-west-1")
        topic = sns.create_topic(Name="notify")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        qarn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)
        clock = Clock()
        reg = Registry(s3, ssm, events, "models", "dev", "recs", clock=clock)
        reg.register(bundle(tmp_path, "v1", None), "v1")
        clock.now = T0 + timedelta(minutes=1)
        reg.register(bundle(tmp_path, "v2", "v1"), "v2")
        rollout = Rollout(reg, s3=s3, bucket="mon", sns=sns, topic_arn=topic)
        yield {"reg": reg, "rollout": rollout, "clock": clock, "s3": s3, "sqs": sqs, "queue": queue}


def notice(name: str, at: datetime, state: str = "ALARM") -> AlarmNotice:
    return AlarmNotice(name=f"{STACK}-{name}", state=state, changed_at=at, reason="Threshold Crossed")


OK = {f"{STACK}-challenger-quality": "OK", f"{STACK}-error-rate": "OK"}


def test_challenger_alarm_stops_the_canary_once(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    clock.now = T0 + timedelta(minutes=20)
    n = notice("challenger-early-clicks", clock.now)
    d = rollout.on_alarm(n, clock.now)
    assert d.action == "rollback" and d.after["challenger"] is None and d.after["canary_weight"] == 0
    assert reg.aliases().champion == "v1"
    assert [r["action"] for r in reg.history()][-1] == "ModelRolledBack"
    # The same alarm delivered again (SNS retries) does nothing.
    assert rollout.on_alarm(n, clock.now).action == "ignore"
    # Announced on SNS.
    msgs = env["sqs"].receive_message(QueueUrl=env["queue"], MaxNumberOfMessages=10)["Messages"]
    assert json.loads(json.loads(msgs[0]["Body"])["Message"])["action"] == "rollback"
    assert [x["action"] for x in read_decisions(env["s3"], "mon")] == ["rollback", "ignore"]


def test_stale_challenger_alarm_does_not_kill_a_new_canary(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=30)
    reg.start_canary("v2", 0.1)
    d = rollout.on_alarm(notice("challenger-quality", T0 + timedelta(minutes=25)), clock.now)
    assert d.action == "ignore" and reg.aliases().challenger == "v2"


def test_alarms_about_data_or_recovery_are_ignored(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    assert rollout.on_alarm(notice("input-drift", clock.now), clock.now).action == "ignore"
    assert rollout.on_alarm(notice("challenger-quality", clock.now, "OK"), clock.now).action == "ignore"
    assert reg.aliases().challenger == "v2"


def test_champion_alarm_restores_previous_only_after_a_recent_promotion(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    clock.now = T0 + timedelta(hours=1)
    reg.promote()
    assert (reg.aliases().champion, reg.aliases().previous) == ("v2", "v1")
    # Long after the promotion: a person decides.
    late = T0 + timedelta(days=3)
    assert rollout.on_alarm(notice("error-rate", late), late).action == "hold"
    clock.now = T0 + timedelta(hours=2)
    d = rollout.on_alarm(notice("error-rate", clock.now), clock.now)
    assert d.action == "rollback" and reg.aliases().champion == "v1"
    # Nothing more to undo for a second, different alarm on the now-restored champion.
    d2 = rollout.on_alarm(
        notice("error-rate", clock.now + timedelta(minutes=5)), clock.now + timedelta(minutes=5)
    )
    assert d2.action in {"hold", "ignore"} and reg.aliases().champion == "v1"


def test_staged_promotion_walks_the_stages_then_promotes(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    policy = rollout.policy
    # Too young, then too little traffic, then an alarm: all hold.
    clock.now += timedelta(minutes=5)
    assert rollout.step(OK, 10_000, clock.now).action == "hold"
    clock.now += timedelta(minutes=policy.min_stage_minutes)
    assert "impressions" in rollout.step(OK, 10, clock.now).reason
    firing = {**OK, f"{STACK}-challenger-quality": "ALARM"}
    assert rollout.step(firing, 10_000, clock.now).action == "hold"
    # Alarms quiet and traffic enough, but no evidence: hold (silence is not evidence).
    d = rollout.step(OK, 10_000, clock.now)
    assert d.action == "hold" and "no evidence" in d.reason
    weights = []
    for _ in range(3):
        d = rollout.step(OK, 10_000, clock.now, evidence("v2"))
        weights.append((d.action, reg.aliases().canary_weight))
        assert d.detail["evidence"]["lower"] == 0.99  # the decision carries its evidence
        clock.now += timedelta(minutes=policy.min_stage_minutes + 1)
    assert weights == [("advance", 0.5), ("advance", 1.0), ("promote", 0.0)]
    a = reg.aliases()
    assert (a.champion, a.previous, a.challenger) == ("v2", "v1", None)
    assert rollout.step(OK, 10_000, clock.now).action == "idle"


def evidence(challenger: str, lower: float = 0.99, windows: int = 8, n: int = 400) -> dict[str, Any]:
    return {
        "challenger": challenger,
        "design": "interleaved",
        "estimate": lower + 0.05,
        "lower": lower,
        "upper": lower + 0.1,
        "margin": 0.03,
        "confidence": 0.95,
        "mature_windows": windows,
        "n_challenger": n,
        "n_champion": n,
    }


def test_promotion_needs_the_stricter_promotion_bound(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    clock.now += timedelta(minutes=rollout.policy.min_stage_minutes + 1)
    # 95% clears the margin, 99% does not: 10% -> 50% advances, a step past half the traffic holds.
    ev = {**evidence("v2", lower=0.98), "promotion_lower": 0.96, "promotion_confidence": 0.99}
    assert rollout.step(OK, 10_000, clock.now, ev).action == "advance"
    clock.now += timedelta(minutes=rollout.policy.min_stage_minutes + 1)
    held = rollout.step(OK, 10_000, clock.now, ev)
    assert held.action == "hold" and "0.960 < 0.970 at 99%" in held.reason
    assert reg.aliases().canary_weight == 0.5
    ev["promotion_lower"] = 0.975
    assert rollout.step(OK, 10_000, clock.now, ev).action == "advance"
    clock.now += timedelta(minutes=rollout.policy.min_stage_minutes + 1)
    assert rollout.step(OK, 10_000, clock.now, {**ev, "promotion_lower": 0.96}).action == "hold"
    assert rollout.step(OK, 10_000, clock.now, ev).action == "promote"


def test_a_stage_advances_only_on_shown_non_inferiority_and_ends_when_held_too_long(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    clock.now += timedelta(minutes=rollout.policy.min_stage_minutes + 1)
    few_windows = rollout.step(OK, 10_000, clock.now, evidence("v2", windows=2))
    assert few_windows.action == "hold" and "matured windows" in few_windows.reason
    few_lists = rollout.step(OK, 10_000, clock.now, evidence("v2", n=10))
    assert few_lists.action == "hold" and "lists" in few_lists.reason
    worse = rollout.step(OK, 10_000, clock.now, evidence("v2", lower=0.9))
    assert worse.action == "hold" and "not shown non-inferior" in worse.reason
    other = rollout.step(OK, 10_000, clock.now, evidence("v9"))
    assert other.action == "hold" and reg.aliases().canary_weight == 0.1
    # Held past max_stage_hours: the canary ends, with the reason in the decision and the audit.
    clock.now += timedelta(hours=rollout.policy.max_stage_hours)
    ended = rollout.step(OK, 10_000, clock.now, evidence("v2", lower=0.9))
    assert ended.action == "rollback" and "not shown non-inferior" in ended.reason
    a = reg.aliases()
    assert (a.champion, a.challenger, a.canary_weight) == ("v1", None, 0.0)


def test_policy_validation_and_stages() -> None:
    assert RolloutPolicy().next_stage(0.1) == 0.5
    assert RolloutPolicy().next_stage(0.2) == 0.5
    assert RolloutPolicy().next_stage(1.0) is None
    with pytest.raises(InputError):
        RolloutPolicy(stages=(0.5, 0.1, 1.0))
    with pytest.raises(InputError):
        RolloutPolicy(stages=(0.1, 0.5))


SNS_EVENT = {
    "Records": [
        {
            "EventSource": "aws:sns",
            "Sns": {
                "Timestamp": "2026-11-28T12:20:05.000Z",
                "Message": json.dumps(
                    {
                        "AlarmName": "shelfwise-challenger-quality",
                        "NewStateValue": "ALARM",
                        "NewStateReason": "Threshold Crossed: 2 datapoints",
                        "StateChangeTime": "2026-11-28T12:20:00.000+0000",
                        "Trigger": {
                            "MetricName": "CtrDropLCB",
                            "Dimensions": [{"value": "challenger", "name": "Variant"}],
                        },
                    }
                ),
            },
        }
    ]
}
EB_EVENT = {
    "source": "aws.cloudwatch",
    "detail-type": "CloudWatch Alarm State Change",
    "time": "2026-11-28T12:20:00Z",
    "detail": {
        "alarmName": "some-other-alarm",
        "state": {"value": "ALARM", "reason": "x", "timestamp": "2026-11-28T12:20:00.000+0000"},
        "previousState": {"value": "OK"},
        "configuration": {
            "metrics": [
                {
                    "metricStat": {
                        "metric": {
                            "name": "ScorePSI",
                            "namespace": "Shelfwise",
                            "dimensions": {"Variant": "challenger"},
                        }
                    }
                }
            ]
        },
    },
}


def test_parse_sns_and_eventbridge_alarm_events() -> None:
    (sns,) = parse_alarm_notices(SNS_EVENT)
    assert (sns.name, sns.state, sns.changed_at) == (
        "shelfwise-challenger-quality",
        "ALARM",
        T0 + timedelta(minutes=20),
    )
    assert alarm_target(sns) == "challenger"
    (eb,) = parse_alarm_notices(EB_EVENT)
    assert eb.dimensions == {"Variant": "challenger"} and alarm_target(eb) == "challenger"
    assert alarm_target(AlarmNotice("x-data-freshness", "ALARM", T0)) == "none"
    with pytest.raises(InputError):
        parse_alarm_notices({"Records": [{"Sns": {"Message": "not json"}}]})
    with pytest.raises(InputError):
        parse_alarm_notices({"hello": 1})


def test_handle_alarm_event_uses_the_alarm_time(env: Any) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    now = [datetime.now(UTC)]
    (d,) = handle_alarm_event(rollout, SNS_EVENT, now)
    assert d.action == "rollback" and now[0] == T0 + timedelta(minutes=20)


@mock_aws
def test_alarm_states_reads_cloudwatch() -> None:
    cw = boto3.client("cloudwatch", region_name="eu-west-1")
    cw.put_metric_alarm(
        AlarmName="a1",
        MetricName="CtrDropLCB",
        Namespace="Shelfwise",
        Statistic="Maximum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=0.05,
        ComparisonOperator="GreaterThanThreshold",
    )
    cw.set_alarm_state(AlarmName="a1", StateValue="ALARM", StateReason="test")
    assert alarm_states(cw, ["a1", "missing"]) == {"a1": "ALARM", "missing": "INSUFFICIENT_DATA"}


def thompson(env: dict[str, Any], **bandit: Any) -> Rollout:
    policy = RolloutPolicy(allocation="thompson", bandit=BanditPolicy(**bandit))
    return Rollout(env["reg"], s3=env["s3"], bucket="mon", policy=policy)


def test_bandit_moves_the_split_with_the_evidence_audited_then_promotes_on_non_inferiority(env: Any) -> None:
    reg, clock = env["reg"], env["clock"]
    rollout = thompson(env)
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    clock.now += timedelta(minutes=20)
    # Not enough matured lists: the split stays where the canary started.
    d = rollout.step(OK, 500, clock.now, split("v2", 20, 4, 200, 20))
    assert d.action == "hold" and "matured lists" in d.reason and reg.aliases().canary_weight == 0.1
    # A clearly better challenger (evidence not yet decisive for promotion): the split rises towards
    # the cap, at most doubling per move.
    good = split("v2", 300, 60, 2700, 320, lower=0.9)
    d = rollout.step(OK, 500, clock.now, good)
    assert d.action == "allocate" and reg.aliases().canary_weight == 0.2
    assert d.detail["bandit"]["p_challenger_better"] > 0.99
    rec = reg.history()[-1]
    assert rec["action"] == "CanaryAdvanced" and rec["weight"] == 0.2 and rec["from"] == 0.1
    assert rec["allocation"] == "thompson" and rec["evidence"]["lists_challenger"] == 300
    assert rec["bandit"]["posterior_challenger"] == [61, 241]
    # The same evidence again: nothing moves (and nothing is written to the registry).
    n_audit = len(reg.history())
    assert rollout.step(OK, 500, clock.now, good).action == "hold" and len(reg.history()) == n_audit
    # Worse news soon after a move waits for min_minutes_between; later it moves the split down.
    bad = split("v2", 900, 90, 2800, 330, lower=0.7)
    clock.now += timedelta(minutes=5)
    d = rollout.step(OK, 500, clock.now, bad)
    assert d.action == "hold" and "last move" in d.reason and reg.aliases().canary_weight == 0.2
    clock.now += timedelta(minutes=15)
    d = rollout.step(OK, 500, clock.now, bad)
    assert d.action == "allocate" and reg.aliases().canary_weight == d.detail["bandit"]["weight"] < 0.1
    # Alarms in ALARM hold everything.
    firing = {**OK, f"{STACK}-challenger-quality": "ALARM"}
    assert (
        rollout.step(firing, 10_000, clock.now, split("v2", 900, 200, 2800, 330, lower=0.99)).action == "hold"
    )
    # Non-inferiority shown (the existing rule), traffic and age enough: promoted from the split.
    clock.now += timedelta(minutes=20)
    d = rollout.step(OK, 10_000, clock.now, split("v2", 1500, 200, 3000, 360, lower=0.99))
    assert d.action == "promote" and d.detail["evidence"]["lower"] == 0.99
    a = reg.aliases()
    assert (a.champion, a.previous, a.challenger, a.canary_weight) == ("v2", "v1", None, 0.0)
    assert [x["action"] for x in read_decisions(env["s3"], "mon")].count("allocate") == 2


def test_bandit_canary_is_still_rolled_back_by_alarms_and_ends_when_too_old(env: Any) -> None:
    reg, clock = env["reg"], env["clock"]
    rollout = thompson(env, max_canary_hours=2.0)
    clock.now = T0 + timedelta(minutes=10)
    reg.start_canary("v2", 0.1)
    clock.now += timedelta(minutes=45)
    d = rollout.on_alarm(notice("challenger-quality", clock.now), clock.now)
    assert d.action == "rollback" and reg.aliases().challenger is None
    # A new canary that never shows non-inferiority ends after max_canary_hours.
    clock.now += timedelta(minutes=1)
    reg.start_canary("v2", 0.1)
    clock.now += timedelta(hours=2)
    d = rollout.step(OK, 10_000, clock.now, split("v2", 900, 90, 2800, 330, lower=0.8))
    assert d.action == "rollback" and "not shown non-inferior" in d.reason
    assert reg.aliases().challenger is None
