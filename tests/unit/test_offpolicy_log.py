"""Off-policy evaluation on a curated served-list log: serve with exploration, ingest, read, evaluate."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_serving import Aliased, _recommender, remote  # noqa: F401  (fixture)

from shelfwise.cli.train import evaluate_main
from shelfwise.ingest import ingest_file, read_events
from shelfwise.offpolicy import evaluate
from shelfwise.offpolicy_log import bundle_scorer, candidate_lists, logged_lists
from shelfwise.serving import ImpressionSink, ServingRules
from shelfwise.serving.config import REQUEST_TIME, ExplorationRules
from shelfwise.serving.model import LoadedModel

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def served_log(remote: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """v1 serving 400 lists to known users with exploration; clicks on every item whose id ends in
    an even digit at positions 0-1, purchases on those ending in 0; ingested to curated Parquet."""
    tmp = tmp_path_factory.mktemp("ope")
    out = io.StringIO()
    rules = ServingRules(exploration=ExplorationRules(share=0.5, epsilon=0.3, pool=5, seed=9))
    rec = _recommender(remote, tmp, Aliased(champion="v1"), rules=rules, impressions=ImpressionSink(out))
    feedback = []
    for i in range(400):
        t = T0 + timedelta(seconds=30 * i)
        token = REQUEST_TIME.set(t.timestamp())
        try:
            got = rec.recommend(user_id=f"user-{i % 50 + 1:06d}", k=5)
        finally:
            REQUEST_TIME.reset(token)
        for pos, item in enumerate(got.item_ids):
            if pos < 2 and item[-1] in "02468":
                for kind, delay in (("click", 20), ("purchase", 600)):
                    if kind == "purchase" and item[-1] != "0":
                        continue
                    feedback.append(
                        {
                            "event_type": kind,
                            "user_id": f"user-{i % 50 + 1:06d}",
                            "item_id": item,
                            "recommendation_id": got.recommendation_id,
                            "position": pos,
                            "timestamp": (t + timedelta(seconds=delay)).isoformat().replace("+00:00", "Z"),
                            **({"price": 1.0, "quantity": 1} if kind == "purchase" else {}),
                        }
                    )
    (tmp / "lists.jsonl").write_text(out.getvalue())
    (tmp / "feedback.jsonl").write_text("".join(json.dumps(f) + "\n" for f in feedback))
    for name in ("lists.jsonl", "feedback.jsonl"):
        s = ingest_file(tmp / name, tmp / "lake")
        assert s.rows_quarantined == 0
    return tmp


def test_the_curated_log_gives_back_the_lists_propensities_and_feedback(served_log: Path) -> None:
    table = read_events(served_log / "lake" / "curated" / "events")
    data = logged_lists(table)
    lines = [json.loads(x) for x in (served_log / "lists.jsonl").read_text().splitlines()]
    assert data.lists.n == len(lines) == 400
    by_id = {d["recommendation_id"]: d for d in lines}
    for row in range(data.lists.n):
        doc = by_id[data.recommendation_ids[row]]
        assert [data.item_ids[c] for c in data.lists.items[row]] == doc["items"]
        assert data.lists.propensity[row].tolist() == pytest.approx(doc["propensities"])
        assert data.lists.spread[row].tolist() == doc["spread"]
        assert data.lists.list_propensity[row] == pytest.approx(doc["list_propensity"])
        assert data.user_refs[row] == doc["user"]
        expected_clicks = [1.0 if p < 2 and it[-1] in "02468" else 0.0 for p, it in enumerate(doc["items"])]
        assert data.lists.clicks[row].tolist() == expected_clicks
        expected_conv = [1.0 if p < 2 and it[-1] == "0" else 0.0 for p, it in enumerate(doc["items"])]
        assert data.lists.conversions[row].tolist() == expected_conv
    assert 0.3 < data.explored_share < 0.6


def test_the_logging_model_evaluated_off_policy_is_close_to_its_logged_figures(
    served_log: Path,
    remote: Path,  # noqa: F811
) -> None:
    data = logged_lists(read_events(served_log / "lake" / "curated" / "events"))
    model = LoadedModel.from_directory(remote / "v1", "v1")
    usable, target, n_items = candidate_lists(data, bundle_scorer(model))
    # popularity fallbacks went to users the bundle does not know: the candidate cannot score them
    assert usable.lists.n == int((data.variants != "fallback").sum()) > 200
    # the candidate's lists are the unexplored ones: where a list was not explored, they match
    unexplored = ~usable.lists.spread.any(axis=1)
    assert (usable.lists.items[unexplored] == target[unexplored]).all()
    from shelfwise.offpolicy import OpeConfig

    report = evaluate(usable.lists, target, n_items=n_items, config=OpeConfig(min_lists=100, min_ess=50))
    dr = report.get("dr")
    assert dr.refused is None and report.coverage > 0.9
    assert (
        dr.lower <= report.logged["clicks_per_list"] * 1.3
        and dr.upper >= report.logged["clicks_per_list"] * 0.7
    )


def test_the_cli_prints_every_estimate(
    served_log: Path,
    remote: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    curated = served_log / "lake" / "curated" / "events"
    code = evaluate_main(
        [
            "--off-policy",
            "--events",
            str(curated),
            "--candidate",
            str(remote / "v2"),
            "--logging-model",
            str(remote / "v1"),
            "--min-lists",
            "100",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["lists_in_log"] == 400 and len(out["estimates"]) == 12
    pos = [e for e in out["estimates"] if e["level"] == "position"]
    # v2 is another model (different factors): the log barely covers it, and says so
    assert all(e["refused"] is None or "support" in e["refused"] for e in pos)


def test_a_log_without_impressions_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "e.jsonl").write_text(
        json.dumps(
            {"event_type": "view", "user_id": "u", "item_id": "i", "timestamp": "2026-01-01T00:00:00Z"}
        )
        + "\n"
    )
    code = evaluate_main(
        [
            "--off-policy",
            "--events",
            str(tmp_path / "e.jsonl"),
            "--format",
            "native",
            "--candidate",
            str(tmp_path),
        ]
    )
    assert code == 2  # bad input
    assert "no impressions" in capsys.readouterr().err


def test_exploration_cost_is_published_per_variant_for_the_window(served_log: Path) -> None:
    from shelfwise.monitoring.exploration import exploration_metrics

    table = read_events(served_log / "lake" / "curated" / "events")
    got = exploration_metrics(table, T0, T0 + timedelta(hours=4), 1800, min_lists=50)
    by_name = {d.name: d for d in got}
    assert set(by_name) == {"ExplorationCtrCost", "ExploredSlotShare"}
    assert by_name["ExplorationCtrCost"].dimensions == {"Variant": "champion"}
    assert 0 < by_name["ExploredSlotShare"].value < 0.3
    # too few lists: nothing published
    assert exploration_metrics(table, T0, T0 + timedelta(hours=4), 1800, min_lists=10_000) == []


def test_the_gate_passes_the_champion_s_own_model_and_refuses_one_the_log_does_not_cover(
    served_log: Path,
    remote: Path,  # noqa: F811
) -> None:
    from shelfwise.offpolicy import OpeConfig
    from shelfwise.offpolicy_gate import off_policy_check

    data = logged_lists(read_events(served_log / "lake" / "curated" / "events"))
    champion = bundle_scorer(LoadedModel.from_directory(remote / "v1", "v1"))
    check = off_policy_check(data, champion, 0.05, OpeConfig(min_lists=100, min_ess=50))
    same = check(remote / "v1")
    assert same.applied and same.passed and same.details["coverage"] > 0.9
    other = check(remote / "v2")  # other factors: its lists are items the log never showed
    assert other.applied and not other.passed
    assert "do not cover the candidate" in other.reasons[0]


def test_the_registry_check_uses_the_champion_s_explored_lists(
    served_log: Path,
    remote: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    from moto import mock_aws

    from shelfwise.offpolicy import OpeConfig
    from shelfwise.offpolicy_gate import registry_off_policy_check

    table = read_events(served_log / "lake" / "curated" / "events")
    cfg = OpeConfig(min_lists=100, min_ess=50)
    with mock_aws():
        reg = moto_registry("ope-models", "t")
        assert registry_off_policy_check(table, reg, tmp_path, cfg) is None  # no champion yet
        reg.register(remote / "v1", "v1")
        reg.promote("v1", force=True)
        check = registry_off_policy_check(table, reg, tmp_path, cfg)
        assert check is not None
        assert check(remote / "v1").passed and not check(remote / "v2").passed
        # without exploration the log vouches for nothing else: the check is not built
        plain = table.set_column(
            table.schema.get_field_index("properties"), "properties", pa.nulls(table.num_rows, pa.string())
        )
        assert registry_off_policy_check(plain, reg, tmp_path, cfg) is None


def test_train_register_on_the_command_line_applies_the_same_off_policy_gate(
    served_log: Path,
    remote: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from moto import mock_aws

    from shelfwise.cli.train import train_main

    curated = sorted((served_log / "lake" / "curated" / "events").rglob("*.parquet"))
    with mock_aws():
        reg = moto_registry("cli-models", "dev")
        reg.register(remote / "v1", "v1")
        reg.promote("v1", force=True)
        argv = [
            "--events",
            str(curated[0].parent.parent),
            "--format",
            "curated",
            "--register",
            "--models-bucket",
            "cli-models",
            "--env",
            "dev",
            "--model-name",
            "recs",
            "--search",
            "none",
            "--families",
            "als",
            "--threads",
            "1",
            "--version",
            "v9",
            "--out",
            str(tmp_path / "v9"),
        ]
        assert train_main([*argv, "--ope-min-lists", "0"]) == 2  # bad input, nothing trained
        assert "positive" in capsys.readouterr().err
        assert train_main([*argv, "--ope-min-lists", "100", "--ope-min-ess", "50"]) == 0
        ope = reg.registration("v9")["gate"]["off_policy"]
    # The v1 champion's explored lists judged the new model (trained on the served log itself, so
    # other items on top): applied, on the lists v1 served, and refused for the support it lacks.
    assert ope is not None and ope["applied"] and not ope["passed"], ope
    assert ope["lists"] > 100 and ope["champion"] is not None
    assert "do not cover the candidate" in ope["reasons"][0]


def moto_registry(bucket: str, env: str) -> Any:
    """A registry of model ``recs`` on moto (inside ``mock_aws``), its bucket created."""
    import boto3

    from shelfwise.registry import Registry

    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return Registry(
        s3, boto3.client("ssm", "eu-west-1"), boto3.client("events", "eu-west-1"), bucket, env, "recs"
    )
