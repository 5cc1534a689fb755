"""Registry: immutable versions, offline gate, alias changes with events + audit, version_for."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from shelfwise.bundle import write_bundle
from shelfwise.bundle_files import sha256_base64
from shelfwise.errors import ConflictError, InputError, NotFoundError
from shelfwise.gate import GateError, evaluate_gate
from shelfwise.onnx_export import build_popularity_model
from shelfwise.registry import (
    Aliases,
    BundleIntegrityError,
    Registry,
    challenger_share,
    routes_to_challenger,
)

BUCKET = "shelfwise-models-test"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def make_bundle(
    root: Path,
    name: str,
    *,
    best: float = 0.2,
    pop: float = 0.05,
    knn: float = 0.1,
    champion: dict[str, Any] | None = None,
) -> Path:
    """A real (tiny) bundle: a popularity graph over three items, with the given offline metrics."""
    d = root / name
    scores = np.array([3.0, 2.0, 1.0 + len(name)], dtype=np.float32)
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
                    "popularity": {"ndcg@10": pop},
                    "itemknn": {"ndcg@10": knn},
                    "als": {"ndcg@10": best},
                },
                "champion": champion,
            },
        },
        parquet=False,
    )
    return d


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield {
            "s3": s3,
            "ssm": boto3.client("ssm", region_name="eu-west-1"),
            "events": boto3.client("events", region_name="eu-west-1"),
        }


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def registry(aws: dict[str, Any], clock: Clock) -> Registry:
    return Registry(aws["s3"], aws["ssm"], aws["events"], BUCKET, "test", "recs", clock=clock)


def test_first_registration_becomes_champion_and_is_immutable(registry: Registry, tmp_path: Path) -> None:
    reg = registry.register(make_bundle(tmp_path, "a"), "v1")
    assert reg.gate.passed and reg.became_champion
    assert registry.aliases() == Aliases(champion="v1")
    assert registry.manifest("v1")["algorithm"] == "als"
    with pytest.raises(ConflictError, match="immutable"):
        registry.register(make_bundle(tmp_path, "bb"), "v1")
    # SSM holds plain strings under the contract's names.
    value = registry.ssm.get_parameter(Name="/shelfwise/test/models/recs/champion")["Parameter"]["Value"]
    assert value == "v1"
    assert [r["action"] for r in registry.history()] == ["ModelRegistered", "ModelPromoted"]
    # each file carries its manifest SHA-256 as S3's checksum (serving's download compares them)
    manifest = registry.manifest("v1")
    for name, digest in manifest["files"].items():
        head = registry.s3.head_object(Bucket=BUCKET, Key=f"models/recs/v1/{name}", ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == sha256_base64(digest), name


def test_killed_upload_leaves_no_visible_version_and_retry_succeeds(
    registry: Registry, aws: dict[str, Any], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path, "a")
    # A job killed after uploading one data file: the version is not visible.
    body = (bundle / "model.onnx").read_bytes()
    aws["s3"].put_object(
        Bucket=BUCKET,
        Key="models/recs/v1/model.onnx",
        Body=body,
        Metadata={"sha256": hashlib.sha256(body).hexdigest()},
    )
    assert not registry.exists("v1")
    assert registry.versions() == []
    with pytest.raises(NotFoundError):
        registry.manifest("v1")
    registry.register(bundle, "v1")
    assert registry.exists("v1")


def test_partial_upload_with_other_content_is_a_conflict(
    registry: Registry, aws: dict[str, Any], tmp_path: Path
) -> None:
    aws["s3"].put_object(Bucket=BUCKET, Key="models/recs/v1/model.onnx", Body=b"other")
    with pytest.raises(ConflictError, match="different content"):
        registry.register(make_bundle(tmp_path, "a"), "v1")
    assert not registry.exists("v1")


def test_corrupted_bundle_is_refused(registry: Registry, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "a")
    (bundle / "items.npz").write_bytes(b"tampered")
    with pytest.raises(BundleIntegrityError):
        registry.register(bundle, "v1")
    with pytest.raises(InputError, match="invalid version"):
        registry.register(make_bundle(tmp_path, "b"), "../v1")


def test_gate_requires_same_window_comparison_and_tolerance(registry: Registry, tmp_path: Path) -> None:
    registry.register(make_bundle(tmp_path, "a"), "v1")
    no_cmp = registry.register(make_bundle(tmp_path, "b"), "v2")
    assert not no_cmp.offered_for_canary
    assert "no same-window comparison against champion v1" in no_cmp.gate.reasons[0]
    with pytest.raises(GateError, match="same-window"):
        registry.start_canary("v2", 0.1)
    worse = registry.register(
        make_bundle(tmp_path, "c", best=0.18, champion={"version": "v1", "metrics": {"ndcg@10": 0.2}}), "v3"
    )
    assert not worse.offered_for_canary and "beyond tolerance" in worse.gate.reasons[0]
    within = registry.register(
        make_bundle(tmp_path, "d", best=0.197, champion={"version": "v1", "metrics": {"ndcg@10": 0.2}}), "v4"
    )
    assert within.offered_for_canary and not within.became_champion
    listed = {v["version"]: v for v in registry.versions()}
    assert listed["v1"]["role"] == "champion" and listed["v3"]["offered_for_canary"] is False


def test_gate_needs_baselines_beaten() -> None:
    manifest = {
        "evaluation": {
            "best": "als",
            "models": {"popularity": {"ndcg@10": 0.1}, "itemknn": {"ndcg@10": 0.3}, "als": {"ndcg@10": 0.2}},
        }
    }
    gate = evaluate_gate(manifest, None, 0.02)
    assert not gate.passed and "itemknn" in gate.reasons[0]
    assert not evaluate_gate({}, None, 0.02).passed
    manifest["evaluation"]["best"] = "itemknn"
    assert evaluate_gate(manifest, None, 0.02).passed
    manifest["evaluation"]["best"] = "popularity"
    assert "fallback" in evaluate_gate(manifest, None, 0.02).reasons[0]


def test_gate_offers_an_itemknn_variant_that_ties_plain_itemknn() -> None:
    models = {"popularity": {"ndcg@10": 0.1}, "itemknn": {"ndcg@10": 0.3}, "itemknn_recent": {"ndcg@10": 0.3}}
    manifest = {"evaluation": {"best": "itemknn_recent", "models": models}}
    assert evaluate_gate(manifest, None, 0.02).passed
    models["popularity"]["ndcg@10"] = 0.3  # it must still beat the other baselines
    assert not evaluate_gate(manifest, None, 0.02).passed


def test_canary_promote_rollback_cycle_emits_events_and_audit(
    registry: Registry, tmp_path: Path, clock: Clock
) -> None:
    registry.register(make_bundle(tmp_path, "a"), "v1")
    cmp = {"version": "v1", "metrics": {"ndcg@10": 0.2}}
    registry.register(make_bundle(tmp_path, "b", best=0.25, champion=cmp), "v2")
    clock.advance(minutes=1)
    assert registry.start_canary("v2", 0.1) == Aliases("v1", "v2", None, 0.1)
    clock.advance(minutes=1)
    assert registry.set_canary_weight(0.5).canary_weight == 0.5
    clock.advance(minutes=1)
    assert registry.promote() == Aliases("v2", None, "v1", 0.0)
    clock.advance(minutes=1)
    after = registry.rollback("alarm ShelfwiseChallengerQuality in ALARM")
    assert after == Aliases("v1", None, None, 0.0)
    with pytest.raises(ConflictError, match="nothing to roll back"):
        registry.rollback("again")
    actions = [r["action"] for r in registry.history()]
    assert actions == [
        "ModelRegistered",
        "ModelPromoted",
        "ModelRegistered",
        "CanaryStarted",
        "CanaryAdvanced",
        "ModelPromoted",
        "ModelRolledBack",
    ]
    last = registry.history()[-1]
    assert last["scope"] == "champion" and last["restored"] == "v1" and last["version"] == "v2"
    hist = registry.ssm.get_parameter_history(Name="/shelfwise/test/models/recs/champion")["Parameters"]
    assert [p["Value"] for p in hist] == ["v1", "v2", "v1"]


def test_rollback_of_running_canary_zeroes_weight(registry: Registry, tmp_path: Path) -> None:
    registry.register(make_bundle(tmp_path, "a"), "v1")
    registry.register(
        make_bundle(tmp_path, "b", champion={"version": "v1", "metrics": {"ndcg@10": 0.2}}), "v2"
    )
    registry.start_canary("v2", 0.5)
    assert registry.rollback("drift") == Aliases("v1", None, None, 0.0)
    assert registry.history()[-1]["scope"] == "canary"


def test_events_are_emitted_on_the_default_bus(
    registry: Registry, aws: dict[str, Any], tmp_path: Path
) -> None:
    logs = boto3.client("logs", region_name="eu-west-1")
    logs.create_log_group(logGroupName="/test/registry")
    arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/test/registry"
    aws["events"].put_rule(Name="r", EventPattern=json.dumps({"source": ["shelfwise.registry"]}))
    aws["events"].put_targets(Rule="r", Targets=[{"Id": "t", "Arn": arn}])
    registry.register(make_bundle(tmp_path, "a"), "v1")
    got = logs.filter_log_events(logGroupName="/test/registry")["events"]
    detail_types = sorted(json.loads(e["message"])["detail-type"] for e in got)
    assert detail_types == ["ModelPromoted", "ModelRegistered"]
    detail = json.loads(got[0]["message"])["detail"]
    assert detail["model_name"] == "recs" and detail["version"] == "v1"


def test_version_for_answers_from_the_audit_trail(registry: Registry, tmp_path: Path, clock: Clock) -> None:
    registry.register(make_bundle(tmp_path, "a"), "v1")
    registry.register(
        make_bundle(tmp_path, "b", champion={"version": "v1", "metrics": {"ndcg@10": 0.2}}), "v2"
    )
    t_canary = clock.advance(hours=1)
    registry.start_canary("v2", 0.3)
    t_promote = clock.advance(hours=1)
    registry.promote()
    users = [f"user-{i}" for i in range(200)]
    in_canary = [u for u in users if challenger_share(u) < 0.3]
    assert 30 < len(in_canary) < 90  # the hash spreads users
    before = registry.version_for(users[0], T0 - timedelta(days=1))
    assert before.version is None and before.variant == "fallback"
    mid = t_canary + timedelta(minutes=30)
    for u in users[:12] + in_canary[:12]:
        served = registry.version_for(u, mid)
        assert (served.version, served.variant) == (
            ("v2", "challenger") if routes_to_challenger(u, 0.3) else ("v1", "champion")
        )
    assert registry.version_for(users[0], t_promote).version == "v2"
    with pytest.raises(InputError):
        registry.version_for("u", datetime(2026, 1, 1))


def test_weights_are_validated(registry: Registry, tmp_path: Path) -> None:
    registry.register(make_bundle(tmp_path, "a"), "v1")
    with pytest.raises(ConflictError, match="no challenger"):
        registry.set_canary_weight(0.5)
    with pytest.raises(InputError):
        registry.start_canary("v1", 1.5)
    with pytest.raises(NotFoundError):
        registry.start_canary("v9", 0.1)
    with pytest.raises(ConflictError, match="already the champion"):
        registry.start_canary("v1", 0.1)


def test_download_round_trip_verifies(registry: Registry, tmp_path: Path) -> None:
    registry.register(make_bundle(tmp_path, "a"), "v1")
    out = registry.download("v1", tmp_path / "dl")
    assert (out / "model.onnx").read_bytes() == (tmp_path / "a" / "model.onnx").read_bytes()


def test_champion_rollback_during_canary_restores_previous(registry: Registry, tmp_path: Path) -> None:
    cmp = {"version": "v1", "metrics": {"ndcg@10": 0.2}}
    registry.register(make_bundle(tmp_path, "a"), "v1")
    registry.register(make_bundle(tmp_path, "b", champion=cmp), "v2")
    registry.promote("v2")
    registry.register(
        make_bundle(tmp_path, "c", champion={"version": "v2", "metrics": {"ndcg@10": 0.2}}), "v3"
    )
    registry.start_canary("v3", 0.1)
    assert registry.rollback("champion alarm", scope="champion") == Aliases("v1", None, None, 0.0)
    with pytest.raises(ConflictError):
        registry.rollback("x", scope="canary")


def test_models_cli_list_show_canary_promote_rollback_served(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shelfwise.cli import models as registry_cli

    registry.register(make_bundle(tmp_path, "a"), "v1")
    registry.register(
        make_bundle(tmp_path, "b", champion={"version": "v1", "metrics": {"ndcg@10": 0.2}}), "v2"
    )
    base = ["--bucket", BUCKET, "--env", "test", "--model-name", "recs"]

    def run(*args: str) -> Any:
        assert registry_cli.main([*base, *args]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    listed = run("list")
    assert [v["version"] for v in listed["versions"]] == ["v1", "v2"]
    assert run("show", "v2")["registration"]["offered_for_canary"] is True
    assert run("canary", "v2", "--weight", "0.2")["challenger"] == "v2"
    assert run("weight", "0.5")["canary_weight"] == 0.5
    assert run("promote")["champion"] == "v2"
    assert run("rollback", "--reason", "test")["champion"] == "v1"
    # served lists are read from the curated bucket (tests/unit/test_queries.py); none here
    monkeypatch.delenv("CURATED_BUCKET", raising=False)
    assert registry_cli.main([*base, "served", "--user", "u1", "--at", "2030-01-01T00:00:00Z"]) == 2
    assert "--curated-bucket" in capsys.readouterr().err
    assert [r["action"] for r in run("history")][-1] == "ModelRolledBack"
    # A version that does not exist is bad input: exit 2, one line on stderr, a JSON error object.
    assert registry_cli.main([*base, "show", "v9"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["exit_code"] == 2
    assert err.count("\n") == 1 and "v9" in err


def test_the_off_policy_half_of_the_gate_keeps_a_candidate_worse_online_from_the_canary(
    registry: Registry, tmp_path: Path
) -> None:
    from shelfwise.offpolicy_gate import OffPolicyVerdict

    calls: list[Path] = []

    def worse(bundle: Path) -> OffPolicyVerdict:
        calls.append(bundle)
        return OffPolicyVerdict(
            True, False, ["off-policy: estimated 0.1 clicks per list against 0.5"], {"lists": 9}
        )

    first = registry.register(make_bundle(tmp_path, "a"), "v1", off_policy=worse)
    assert first.became_champion and calls == []  # nothing to compare with yet
    same_window = {"version": "v1", "metrics": {"ndcg@10": 0.2}}
    refused = registry.register(make_bundle(tmp_path, "b", champion=same_window), "v2", off_policy=worse)
    assert not refused.offered_for_canary and calls == [tmp_path / "b"]
    assert refused.gate.reasons == ["off-policy: estimated 0.1 clicks per list against 0.5"]
    assert registry.registration("v2")["gate"]["off_policy"]["lists"] == 9
    with pytest.raises(GateError, match="off-policy"):
        registry.start_canary("v2", 0.1)
    fine = registry.register(
        make_bundle(tmp_path, "c", champion=same_window),
        "v3",
        off_policy=lambda b: OffPolicyVerdict(True, True, [], {"lists": 9}),
    )
    assert fine.offered_for_canary and fine.gate.off_policy == {
        "applied": True,
        "passed": True,
        "reasons": [],
        "lists": 9,
    }


def test_registering_the_same_content_again_answers_with_the_registration(
    registry: Registry, clock: Clock, tmp_path: Path
) -> None:
    """A retried run registers the version it already registered: the same answer, nothing written."""
    bundle = make_bundle(tmp_path, "a")
    first = registry.register(bundle, "v20261101T120000Z-1a2b3c4d")
    clock.advance(minutes=5)
    retry = shutil.copytree(bundle, tmp_path / "retry")  # the retry's bundle: the same bytes
    again = registry.register(retry, "v20261101T120000Z-1a2b3c4d")
    assert again == first and again.registered_at == T0.isoformat()
    assert [r["action"] for r in registry.history()] == ["ModelRegistered", "ModelPromoted"]
    assert [v["version"] for v in registry.versions()] == ["v20261101T120000Z-1a2b3c4d"]


def test_a_committed_version_is_never_overwritten_by_other_content(
    registry: Registry, tmp_path: Path
) -> None:
    registry.register(make_bundle(tmp_path, "a"), "v1")
    manifest = registry.manifest("v1")
    other = make_bundle(tmp_path, "other", best=0.3)
    with pytest.raises(
        ConflictError, match=r"already registered with different content \(differs in .*evaluation"
    ):
        registry.register(other, "v1")
    assert registry.manifest("v1") == manifest
    assert [r["action"] for r in registry.history()] == ["ModelRegistered", "ModelPromoted"]


def test_a_retry_completes_a_registration_stopped_after_its_commit(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the manifest and the ModelRegistered record: the retry records and promotes, once."""
    real_record = registry._record

    def killed(*args: Any, **kw: Any) -> Any:
        raise SystemExit("killed")

    monkeypatch.setattr(registry, "_record", killed)
    bundle = make_bundle(tmp_path, "a")
    with pytest.raises(SystemExit):
        registry.register(bundle, "v1")
    monkeypatch.setattr(registry, "_record", real_record)
    assert registry.exists("v1") and registry.history() == [] and registry.aliases() == Aliases()
    reg = registry.register(bundle, "v1")
    assert reg.became_champion and registry.aliases() == Aliases(champion="v1")
    assert [r["action"] for r in registry.history()] == ["ModelRegistered", "ModelPromoted"]
    # and a third delivery changes nothing
    assert registry.resume_registration("v1") == reg
    assert [r["action"] for r in registry.history()] == ["ModelRegistered", "ModelPromoted"]


def test_an_uncommitted_attempts_registration_record_is_replaced(
    registry: Registry, aws: dict[str, Any], tmp_path: Path
) -> None:
    """Killed after writing registration.json (its gate and time), before the commit: the retry's
    own record replaces it; the data files, identical, are kept."""
    aws["s3"].put_object(Bucket=BUCKET, Key="models/recs/v1/registration.json", Body=b'{"gate": "stale"}')
    reg = registry.register(make_bundle(tmp_path, "a"), "v1")
    assert registry.registration("v1")["registered_at"] == reg.registered_at
    assert registry.registration("v1")["gate"]["passed"] is True
