"""A newly registered version starts its canary by itself when it may, and says why when not."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shelfwise.errors import InputError
from shelfwise.events import event_time
from shelfwise.registry import Registry
from tests.unit.test_rollout import T0, bundle, env  # noqa: F401  (fixture)


def test_gated_version_starts_on_probation_then_reaches_the_first_stage_without_click_evidence(
    env: Any,  # noqa: F811
) -> None:
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    policy = rollout.policy
    clock.now = T0 + timedelta(minutes=5)
    d = rollout.offer("v2", gate_passed=True, now=clock.now)
    assert d.action == "start"
    aliases = reg.aliases()
    assert (aliases.champion, aliases.challenger, aliases.canary_weight) == ("v1", "v2", policy.probation)
    assert policy.probation < policy.stages[0] and reg.history()[-1]["action"] == "CanaryStarted"
    ok = {"stack-challenger-coverage-shift": "OK"}
    clock.now += timedelta(minutes=5)
    young = rollout.step(ok, 10_000, clock.now)
    assert young.action == "hold" and "probation too young" in young.reason
    clock.now += timedelta(minutes=policy.probation_minutes)
    quiet = rollout.step(ok, policy.probation_impressions - 1, clock.now)
    assert quiet.action == "hold" and "impressions" in quiet.reason
    firing = rollout.step({"stack-challenger-coverage-shift": "ALARM"}, 10_000, clock.now)
    assert firing.action == "hold" and reg.aliases().canary_weight == policy.probation
    # the label-free checks had their look and stayed quiet: the first stage (no click evidence yet)
    d = rollout.step(ok, policy.probation_impressions, clock.now)
    assert d.action == "advance" and "probation passed" in d.reason
    assert reg.aliases().canary_weight == policy.stages[0]
    # from there on, evidence: the first stage does not advance on silence
    clock.now += timedelta(minutes=policy.min_stage_minutes + 1)
    assert "no evidence" in rollout.step(ok, 10_000, clock.now).reason


def test_probation_below_the_first_stage_or_none() -> None:
    from shelfwise.rollout import RolloutPolicy

    assert RolloutPolicy(probation=0).start_weight == 0.1
    with pytest.raises(InputError):
        RolloutPolicy(probation=0.2)


def test_only_one_canary_at_a_time_and_never_a_failed_gate(env: Any, tmp_path: Path) -> None:  # noqa: F811
    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    assert rollout.offer("v2", gate_passed=False, now=clock.now).action == "hold"
    assert reg.aliases().challenger is None
    rollout.offer("v2", gate_passed=True, now=clock.now)
    clock.now = T0 + timedelta(minutes=9)
    reg.register(bundle(tmp_path, "v3", "v1"), "v3")
    d = rollout.offer("v3", gate_passed=True, now=clock.now)
    assert d.action == "hold" and "v2" in d.reason
    assert reg.aliases().challenger == "v2"


def test_the_champion_itself_is_not_offered(env: Any) -> None:  # noqa: F811
    reg: Registry = env["reg"]
    assert env["rollout"].offer("v1", gate_passed=True, now=env["clock"].now).action == "idle"
    assert reg.aliases().challenger is None


def test_event_time_reads_schedule_time_and_rejects_garbage() -> None:
    assert event_time({"time": "2026-01-05T08:00:00Z"}).isoformat() == "2026-01-05T08:00:00+00:00"
    assert event_time({}).tzinfo is not None
    with pytest.raises(InputError, match="ISO 8601"):
        event_time({"time": "yesterday"})


def test_the_model_registered_event_offers_the_version_with_the_registry_gate(
    env: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Whoever registered it, the version's own registration record decides, not the event."""
    from shelfwise.rollout import offer_registered

    reg, rollout, clock = env["reg"], env["rollout"], env["clock"]
    event = {"detail-type": "ModelRegistered", "detail": {"model_name": "recs", "version": "v2"}}
    d = offer_registered(rollout, event, clock.now)
    assert d.action == "start" and reg.aliases().challenger == "v2"
    # a repeated delivery (EventBridge is at-least-once) changes nothing
    again = offer_registered(rollout, event, clock.now)
    assert again.action == "idle" and reg.aliases().canary_weight == rollout.policy.start_weight
    # an event claiming a gate pass for a version the registry gated out does not start it
    clock.now = T0 + timedelta(minutes=9)
    failed = bundle(tmp_path, "v3", "v1")
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["evaluation"]["champion"] = None  # no same-window comparison: the gate fails closed
    (failed / "manifest.json").write_text(json.dumps(manifest))
    reg.rollback("stop v2", scope="canary")
    reg.register(failed, "v3")
    forged = {"detail": {"version": "v3", "gate": {"passed": True}}}
    assert offer_registered(rollout, forged, clock.now).action == "hold"
    assert reg.aliases().challenger is None
    with pytest.raises(InputError, match=r"detail\.version"):
        offer_registered(rollout, {"detail": {}}, clock.now)
