"""An operator's override of the guarded selection: the job serves the named family and records what
the guard would have served; the registry's gate still applies unless the override goes past its
comparisons with other models, and never lets a model below popularity through."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from shelfwise.errors import InputError
from shelfwise.gate import evaluate_gate
from shelfwise.registry import Registry
from shelfwise.training.guard import FamilyOverride
from shelfwise.training.job import Progress, TrainConfig, run_training
from shelfwise.training.scheduled import _override_environment, training_override

# the registry tests' fixtures (moto clients, a clock, a registry on them)
from tests.unit.test_registry import aws as aws
from tests.unit.test_registry import clock as clock
from tests.unit.test_registry import make_bundle
from tests.unit.test_registry import registry as registry
from tests.unit.test_training import synthetic_events

MODELS = {"popularity": {"ndcg@10": 0.1}, "itemknn": {"ndcg@10": 0.3}, "sequential": {"ndcg@10": 0.2}}
OVERRIDE = {"family": "sequential", "reason": "session personalisation online", "past_gate": True}


def manifest(best: str = "sequential", champion: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"evaluation": {"best": best, "models": MODELS, "champion": champion}}


def test_gate_override_waives_the_comparisons_with_other_models_only() -> None:
    champion = {"version": "v1", "metrics": {"ndcg@10": 0.3}}
    plain = evaluate_gate(manifest(champion=champion), "v1", 0.02)
    assert not plain.passed and len(plain.reasons) == 2 and plain.waived == []
    past = evaluate_gate(manifest(champion=champion), "v1", 0.02, OVERRIDE)
    assert past.passed and past.reasons == [] and past.waived == plain.reasons
    assert past.override == OVERRIDE
    # never below popularity, never a popularity winner, never a family the bundle does not serve
    below = {**MODELS, "sequential": {"ndcg@10": 0.05}}
    refused = evaluate_gate({"evaluation": {"best": "sequential", "models": below}}, None, 0.02, OVERRIDE)
    assert not refused.passed and "popularity" in refused.reasons[0]
    assert not evaluate_gate(
        manifest(best="popularity"), None, 0.02, {**OVERRIDE, "family": "popularity"}
    ).passed
    other = evaluate_gate(manifest(best="itemknn"), None, 0.02, OVERRIDE)
    assert not other.passed and "the override names family 'sequential'" in other.reasons[0]


def test_registry_offers_an_overridden_version_and_records_who_and_what_was_waived(
    registry: Registry,
    tmp_path: Path,
) -> None:
    registry.register(make_bundle(tmp_path, "a", best=0.3), "v1")
    same_window = {"version": "v1", "metrics": {"ndcg@10": 0.3}}
    refused = registry.register(make_bundle(tmp_path, "b", best=0.2, knn=0.25, champion=same_window), "v2")
    assert not refused.offered_for_canary
    override = {**OVERRIDE, "family": "als"}  # make_bundle's best family
    loser = make_bundle(tmp_path, "c", best=0.2, knn=0.25, champion=same_window)
    offered = registry.register(loser, "v3", gate_override=override)
    assert offered.offered_for_canary and not offered.became_champion
    assert offered.gate.override == {**override, "actor": registry.actor}
    assert any("itemknn" in w for w in offered.gate.waived) and any(
        "champion" in w for w in offered.gate.waived
    )
    assert registry.registration("v3")["gate"]["waived"] == offered.gate.waived
    audit = [r for r in registry.history() if r["action"] == "ModelRegistered" and r["version"] == "v3"]
    assert audit[0]["gate"]["override"]["reason"] == override["reason"]
    registry.start_canary("v3", 0.1)
    assert registry.aliases().challenger == "v3"
    # the off-policy half is a comparison with the champion too: waived, and said so
    from shelfwise.offpolicy_gate import OffPolicyVerdict

    worse = OffPolicyVerdict(True, False, ["off-policy: estimated 0.1 clicks per list against 0.5"], {})
    same = make_bundle(tmp_path, "d", best=0.3, champion=same_window)
    assert not registry.register(same, "v4", off_policy=lambda b: worse).offered_for_canary
    waived = registry.register(same, "v5", off_policy=lambda b: worse, gate_override=override)
    assert waived.offered_for_canary and waived.gate.waived == worse.reasons


def test_job_serves_the_named_family_and_keeps_the_guards_choice(tmp_path: Path) -> None:
    table = synthetic_events(n_users=60, n_items=40)
    forced = FamilyOverride("popularity", reason="a test")
    result = run_training(
        table,
        tmp_path / "b",
        TrainConfig(search="none", threads=1, parity_users=4, override=forced),
        progress=Progress(io.StringIO()),
    )
    selection = result.manifest["evaluation"]["selection"]
    assert result.manifest["algorithm"] == result.manifest["evaluation"]["best"] == "popularity"
    assert selection["served"] == "popularity"
    guard = "popularity" if selection["test_fallback"] else selection["chosen_on_validation"]
    assert selection["override"] == {**forced.to_json(), "guard_would_serve": guard}
    assert "Operator override" in (tmp_path / "b" / "report.html").read_text()


def test_override_names_a_servable_family_and_reaches_either_runner() -> None:
    with pytest.raises(InputError, match="cannot serve family 'popularity_all'"):
        TrainConfig(override=FamilyOverride("popularity_all"))
    with pytest.raises(InputError, match="cannot serve family"):
        TrainConfig(override=FamilyOverride("transformer"))
    assert "sequential" in TrainConfig(override=FamilyOverride("sequential")).families
    with pytest.raises(InputError):
        FamilyOverride(" ")
    assert training_override({"mode": "train"}) is None
    got = training_override({"detail": {"mode": "train", "override": OVERRIDE}})
    assert got == FamilyOverride("sequential", OVERRIDE["reason"], past_gate=True)
    for bad in ({"family": 3}, {"family": "als", "gate": True}, {"family": "als", "past_gate": "yes"}, "als"):
        with pytest.raises(InputError):
            training_override({"override": bad})
    env = {e["name"]: e["value"] for e in _override_environment(got)}
    assert env == {
        "TRAINING_OVERRIDE_FAMILY": "sequential",
        "TRAINING_OVERRIDE_REASON": OVERRIDE["reason"],
        "TRAINING_OVERRIDE_PAST_GATE": "true",
    }


def test_train_cli_reads_the_override_from_flags_or_the_batch_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shelfwise.cli import train as cli

    args = cli.train_parser().parse_args(["--events", "x", "--family", "als", "--override-reason", "why"])
    assert cli._config(args).override == FamilyOverride("als", "why")
    with pytest.raises(InputError, match="go with --family"):
        cli._config(cli.train_parser().parse_args(["--events", "x", "--past-gate"]))
    monkeypatch.setenv("TRAINING_OVERRIDE_FAMILY", "sequential")
    monkeypatch.setenv("TRAINING_OVERRIDE_PAST_GATE", "true")
    args = cli.train_parser().parse_args(["--events", "x"])
    assert cli._config(args).override == FamilyOverride("sequential", past_gate=True)
