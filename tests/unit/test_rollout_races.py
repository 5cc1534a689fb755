"""Forced interleavings of alias changes: a rollback is never lost and never undone.

Two writers run the real code paths (the promoter's Rollout.step and the rollback function's
Rollout.on_alarm, each with its own Registry as in two Lambda functions) on one moto account. The
interleaving is forced, not hoped for: one writer's registry runs the other writer to completion
at a chosen point of its own change (just after it read the aliases, or between its claim and
its SSM writes). Then a rollback whose first attempt fails half-way is delivered again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from test_rollout import STACK, T0, Clock, bundle, notice

from shelfwise.registry import AliasConflictError, Registry
from shelfwise.rollout import Rollout, RolloutPolicy, read_decisions

POLICY = RolloutPolicy(min_stage_impressions=1, min_stage_minutes=1)
OK = {f"{STACK}-challenger-quality": "OK", f"{STACK}-error-rate": "OK"}
# What the monitor shows for v2: non-inferior on enough matured data (promotion rests on evidence).
EVIDENCE = {
    "challenger": "v2",
    "design": "split",
    "estimate": 1.02,
    "lower": 0.99,
    "upper": 1.05,
    "margin": 0.03,
    "confidence": 0.95,
    "mature_windows": 8,
    "n_challenger": 5000,
    "n_champion": 5000,
}
RACES: list[str] = []  # the interleavings forced in this module (counted in docs/hardening.md)


class Interleaved(Registry):
    """A Registry that runs ``other`` once, at a chosen point of its own next change."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_read: Callable[[], Any] | None = None
        self.before_ssm: Callable[[], Any] | None = None

    def snapshot(self) -> Any:
        snap = super().snapshot()
        run, self.after_read = self.after_read, None
        if run is not None:
            run()
        return snap

    def _write_aliases(self, before: Any, after: Any) -> None:
        run, self.before_ssm = self.before_ssm, None
        if run is not None:
            run()
            before = self.aliases()
        super()._write_aliases(before, after)


@pytest.fixture
def two(tmp_path: Path) -> Any:
    """v1 champion, v2 in canary at the last stage (1.0): the next promotion step promotes it."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        for b in ("models", "mon"):
            s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        ssm = boto3.client("ssm", region_name="eu-west-1")
        events = boto3.client("events", region_name="eu-west-1")
        clock = Clock()
        setup = Registry(s3, ssm, events, "models", "dev", "recs", clock=clock)
        setup.register(bundle(tmp_path, "v1", None), "v1")
        clock.now = T0 + timedelta(minutes=1)
        setup.register(bundle(tmp_path, "v2", "v1"), "v2")
        clock.now = T0 + timedelta(minutes=2)
        setup.start_canary("v2", 1.0)
        promoter = Interleaved(s3, ssm, events, "models", "dev", "recs", clock=clock, actor="promote_model")
        rollbacker = Interleaved(
            s3, ssm, events, "models", "dev", "recs", clock=clock, actor="rollback_model"
        )
        clock.now = T0 + timedelta(minutes=30)
        yield {
            "clock": clock,
            "s3": s3,
            "ssm": ssm,
            "promoter": promoter,
            "rollbacker": rollbacker,
            "promote": Rollout(promoter, s3=s3, bucket="mon", policy=POLICY),
            "rollback": Rollout(rollbacker, s3=s3, bucket="mon", policy=POLICY),
            "setup": setup,
            "tmp": tmp_path,
        }


def _ssm_aliases(two: Any) -> dict[str, Any]:
    return Registry(two["s3"], two["ssm"], None, "models", "dev", "recs").aliases().to_json()


def test_a_promotion_decided_before_a_rollback_does_not_undo_it(two: Any) -> None:
    """promote reads -> rollback runs to the end -> promote writes: the promotion is refused."""
    now = two["clock"].now
    alarm = notice("challenger-quality", now)
    rolled: list[Any] = []
    two["promoter"].after_read = lambda: rolled.append(two["rollback"].on_alarm(alarm, now))
    decision = two["promote"].step(OK, 10_000, now, EVIDENCE)
    RACES.append("promote read / rollback / promote write")
    assert rolled[0].action == "rollback"
    assert decision.action == "hold" and "changed since they were read" in decision.reason
    aliases = _ssm_aliases(two)
    assert aliases["champion"] == "v1" and aliases["challenger"] is None and aliases["canary_weight"] == 0
    assert two["setup"].snapshot().aliases.to_json() == aliases
    # The next step sees no canary: nothing to promote, the rollback stays in force.
    assert two["promote"].step(OK, 10_000, now + timedelta(minutes=5), EVIDENCE).action == "idle"
    assert _ssm_aliases(two)["champion"] == "v1"


def test_a_rollback_decided_before_a_promotion_decides_again_and_wins(two: Any) -> None:
    """rollback reads -> promote runs to the end -> rollback writes: refused, re-decided on the new
    state (the accused canary is now champion), and previous is restored."""
    now = two["clock"].now
    promoted: list[Any] = []
    two["rollbacker"].after_read = lambda: promoted.append(two["promote"].step(OK, 10_000, now, EVIDENCE))
    decision = two["rollback"].on_alarm(notice("challenger-quality", now), now)
    RACES.append("rollback read / promote / rollback write")
    assert promoted[0].action == "promote"
    assert decision.action == "rollback" and "promoted from the canary" in decision.reason
    aliases = _ssm_aliases(two)
    assert aliases["champion"] == "v1" and aliases["challenger"] is None, aliases
    history = two["setup"].history()
    assert [r["action"] for r in history][-2:] == ["ModelPromoted", "ModelRolledBack"]


def test_ssm_writes_of_two_changes_interleaved_end_at_the_last_claim(two: Any) -> None:
    """promote claims -> a rollback claims and writes SSM -> promote writes SSM (stale): the
    promoter finds the later claim and writes its state; SSM ends rolled back."""
    now = two["clock"].now
    two["promoter"].before_ssm = lambda: two["rollback"].on_alarm(notice("challenger-quality", now), now)
    two["promote"].step(OK, 10_000, now, EVIDENCE)
    RACES.append("promote claim / rollback claim+write / promote write")
    aliases = _ssm_aliases(two)
    # The promotion claimed first, so the rollback acted on the promoted state: v2 (champion,
    # promoted from the canary) out, v1 back.
    assert aliases["champion"] == "v1" and aliases["challenger"] is None, aliases
    assert two["setup"].snapshot().aliases.to_json() == aliases


def test_a_rollback_that_failed_half_way_is_completed_by_the_retried_delivery(two: Any) -> None:
    """The first attempt claims the change, then SSM fails: the notification is not marked
    handled, Lambda delivers it again, and the retry completes the rollback."""
    now = two["clock"].now
    alarm = notice("challenger-quality", now)
    ssm = two["rollbacker"].ssm
    real_put = ssm.put_parameter
    calls = {"n": 0}

    def failing_put(**kwargs: Any) -> Any:
        calls["n"] += 1
        raise ssm.exceptions.InternalServerError(
            {"Error": {"Code": "InternalServerError", "Message": "injected"}}, "PutParameter"
        )

    ssm.put_parameter = failing_put
    with pytest.raises(ssm.exceptions.InternalServerError):
        two["rollback"].on_alarm(alarm, now)
    assert calls["n"] == 1
    assert _ssm_aliases(two)["challenger"] == "v2"  # the first attempt changed nothing that serves
    ssm.put_parameter = real_put
    retried = two["rollback"].on_alarm(alarm, now)  # Lambda's retry of the same notification
    aliases = _ssm_aliases(two)
    assert aliases["challenger"] is None and aliases["canary_weight"] == 0 and aliases["champion"] == "v1"
    assert retried.action in {"rollback", "ignore"}
    # Only now is it marked handled: a third delivery is a recognised duplicate.
    third = two["rollback"].on_alarm(alarm, now)
    assert third.action == "ignore" and "duplicate" in third.reason
    assert [d["action"] for d in read_decisions(two["s3"], "mon")][-1] == "ignore"


def test_a_conflict_is_an_error_for_a_direct_caller(two: Any) -> None:
    snap = two["setup"].snapshot()
    two["rollbacker"].rollback("operator", scope="canary")
    with pytest.raises(AliasConflictError):
        two["promoter"].promote("v2", expected=snap)
    assert _ssm_aliases(two)["champion"] == "v1"


def test_two_alarms_on_one_broken_canary_leave_the_promoted_champion_in_place(two: Any) -> None:
    """v2 promoted from its canary, then v3 canaried and accused by two alarms on one clock tick,
    each delivered to its own function: the first stops v3's canary, the second finds no canary
    and must not take the recently promoted v2 for the accused version."""
    clock = two["clock"]
    assert two["promote"].step(OK, 10_000, clock.now, EVIDENCE).action == "promote"
    clock.now += timedelta(minutes=5)
    two["setup"].register(bundle(two["tmp"], "v3", "v2"), "v3")
    two["setup"].start_canary("v3", 0.1)
    clock.now += timedelta(minutes=10)
    now = clock.now
    first = two["rollback"].on_alarm(notice("challenger-quality", now), now)
    other = Rollout(
        Registry(
            two["s3"],
            two["ssm"],
            boto3.client("events", region_name="eu-west-1"),
            "models",
            "dev",
            "recs",
            clock=clock,
            actor="rollback_model",
        ),
        s3=two["s3"],
        bucket="mon",
        policy=POLICY,
    )
    second = other.on_alarm(notice("challenger-early-clicks", now), now)
    assert first.action == "rollback" and "v3" in first.reason
    assert second.action == "ignore", second.reason
    aliases = _ssm_aliases(two)
    assert aliases["champion"] == "v2" and aliases["challenger"] is None


def test_zz_report_races() -> None:
    print(f"\n[races] forced interleavings: {len(RACES)}: {RACES}")
