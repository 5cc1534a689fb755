"""A monitoring pass end to end on synthetic traffic: label-free signals, cumulative comparison,
publishing to (moto) CloudWatch and the S3 history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from shelfwise.errors import InputError
from shelfwise.monitoring.comparison import compare_user_rates, user_sums
from shelfwise.monitoring.config import MonitoringConfig, alarm, breaches
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.passes import PassTargets, health_metrics, run_pass
from shelfwise.monitoring.publish import MetricDatum, put_metrics, read_history, write_history
from shelfwise.monitoring.state import Deployment, MemoryStateStore, stage_impressions

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
EDGES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
# Beta(5, 2) mass per bin (CDF 6x^5 - 5x^6): what the synthetic good models serve.
REF = {"bins": EDGES, "counts": [1.6, 39.4, 192.3, 422.1, 344.6]}
CATS = ["a", "b", "c", "d"]
MANIFESTS = {
    v: {"reference": {"score_histogram": REF, "category_mix": {c: 0.25 for c in CATS}}}
    for v in ("v1", "v2", "v3")
}


class Manifests:
    def manifest(self, version: str) -> dict | None:
        return MANIFESTS.get(version)


class TableSource:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def read(self, start: datetime, end: datetime) -> pa.Table:
        ts = self.table["timestamp"]
        lo = pa.scalar(start, pa.timestamp("ms", tz="UTC"))
        hi = pa.scalar(end, pa.timestamp("ms", tz="UTC"))
        return self.table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


def traffic(
    start: datetime,
    minutes: int,
    lists_per_minute: int,
    share: float,
    ctr: dict[str, float],
    versions: dict[str, str],
    seed: int = 0,
    broken_scores: bool = False,
    category_weights: list[float] | None = None,
    random_items: bool = False,
) -> pa.Table:
    """Synthetic curated rows: k=5 impressions per list, at most one click, exponential delays."""
    rng = np.random.default_rng(seed)
    n = minutes * lists_per_minute
    t = start.timestamp() * 1000 + rng.uniform(0, minutes * 60_000, n)
    variant = np.where(rng.uniform(size=n) < share, "challenger", "champion")
    k = 5
    rid = np.array([f"r{seed}-{i}" for i in range(n)])
    items = rng.zipf(1.5, size=(n, k)) % 500
    if random_items:  # the challenger's items drawn at random from a 5,000-item catalogue
        items = np.where((variant == "challenger")[:, None], rng.integers(0, 5000, (n, k)), items)
    rows: dict[str, list] = {
        c: []
        for c in (
            "event_type",
            "recommendation_id",
            "item_id",
            "timestamp",
            "position",
            "score",
            "variant",
            "model_version",
            "category",
        )
    }

    def add(et, r, item, ts, pos, score, var, ver, cat):
        for c, v in zip(rows, (et, r, item, ts, pos, score, var, ver, cat), strict=True):
            rows[c].append(v)

    for i in range(n):
        var = str(variant[i])
        scores = np.sort(
            rng.uniform(0.0, 0.25, k) if (broken_scores and var == "challenger") else rng.beta(5, 2, k)
        )[::-1]
        for p in range(k):
            add("impression", rid[i], f"i{items[i, p]}", t[i], p, float(scores[p]), var, versions[var], None)
        if rng.uniform() < ctr[var]:
            p = int(rng.integers(0, k))
            add(
                "click",
                rid[i],
                f"i{items[i, p]}",
                t[i] + rng.exponential(60_000),
                p,
                None,
                None,
                None,
                CATS[int(rng.choice(4, p=category_weights))],
            )
        add(
            "view",
            None,
            f"i{items[i, 0]}",
            t[i] - 1000,
            None,
            None,
            None,
            None,
            CATS[int(rng.choice(4, p=category_weights))],
        )
    rows["timestamp"] = [int(x) for x in rows["timestamp"]]
    table = pa.table(rows)
    return table.set_column(3, "timestamp", pc.cast(table["timestamp"], pa.timestamp("ms", tz="UTC")))


def run_windows(
    table: pa.Table, deployment: Deployment, first: datetime, count: int
) -> list[dict[str, float]]:
    job = MonitoringJob(TableSource(table), Manifests(), MemoryStateStore(), MonitoringConfig())
    return [job.fast_pass(first + timedelta(minutes=5 * i), deployment).values() for i in range(count)]


DEPLOY = Deployment(champion="v1", challenger="v2", canary_weight=0.1)
VERSIONS = {"champion": "v1", "challenger": "v2"}


def test_broken_challenger_is_flagged_in_the_first_window_by_label_free_signals() -> None:
    table = traffic(T0, 10, 400, 0.1, {"champion": 0.3, "challenger": 0.01}, VERSIONS, broken_scores=True)
    first = run_windows(table, DEPLOY, T0 + timedelta(minutes=5, seconds=30), 1)[0]
    assert breaches(alarm("challenger-early-clicks"), first["EarlyCtrDropLCB/challenger"])
    assert first["ScorePSI/challenger"] > alarm("challenger-score-drift").threshold
    assert first["ScorePSI/champion"] < 0.1


def test_equal_challenger_raises_no_model_alarm_over_many_windows() -> None:
    table = traffic(T0, 60, 100, 0.1, {"champion": 0.2, "challenger": 0.2}, VERSIONS, seed=3)
    values = run_windows(table, DEPLOY, T0 + timedelta(minutes=5), 12)
    for v in values:
        for suffix in (
            "challenger-quality",
            "challenger-early-clicks",
            "challenger-score-drift",
            "challenger-coverage-shift",
            "champion-score-drift",
        ):
            spec = alarm(suffix)
            key = f"{spec.metric}/{spec.variant}"
            assert key not in v or not breaches(spec, v[key]), (suffix, v.get(key))
    assert any("CtrDropLCB/challenger" in v for v in values)  # the comparison was published
    psi = [v["InputCategoryPSI"] for v in values if "InputCategoryPSI" in v]
    assert psi and max(psi) < alarm("input-drift").threshold


def test_a_challenger_serving_random_items_trips_the_popularity_shift_in_its_first_window() -> None:
    # A 4% probation: about 50 challenger lists, each its own shopper, in the first window.
    table = traffic(
        T0 - timedelta(hours=1),
        70,
        250,
        0.04,
        {"champion": 0.2, "challenger": 0.2},
        VERSIONS,
        random_items=True,
    )
    store = MemoryStateStore()
    job = MonitoringJob(TableSource(table), Manifests(), store, MonitoringConfig())
    first = job.fast_pass(T0 + timedelta(minutes=5, seconds=30), Deployment("v1", "v2", 0.04)).values()
    spec = alarm("challenger-coverage-shift")
    assert breaches(spec, first[f"{spec.metric}/{spec.variant}"])
    # The same traffic with the challenger serving what the champion serves: no shift.
    same = traffic(T0 - timedelta(hours=1), 70, 250, 0.04, {"champion": 0.2, "challenger": 0.2}, VERSIONS)
    job = MonitoringJob(TableSource(same), Manifests(), MemoryStateStore(), MonitoringConfig())
    quiet = job.fast_pass(T0 + timedelta(minutes=5, seconds=30), Deployment("v1", "v2", 0.04)).values()
    assert not breaches(spec, quiet[f"{spec.metric}/{spec.variant}"])


def test_small_windows_publish_no_decision_metrics() -> None:
    table = traffic(T0, 10, 5, 0.1, {"champion": 0.2, "challenger": 0.0}, VERSIONS, broken_scores=True)
    v = run_windows(table, DEPLOY, T0 + timedelta(minutes=5), 2)[-1]
    assert not any(k.startswith(("EarlyCtrDropLCB", "CtrDropLCB", "ScorePSI", "InputCategoryPSI")) for k in v)


def test_state_tracks_stage_impressions_and_resets_on_new_challenger() -> None:
    table = traffic(T0, 15, 100, 0.1, {"champion": 0.2, "challenger": 0.2}, VERSIONS)
    store = MemoryStateStore()
    job = MonitoringJob(TableSource(table), Manifests(), store, MonitoringConfig())
    for i in range(1, 4):
        job.fast_pass(T0 + timedelta(minutes=5 * i), DEPLOY)
    imps = table.filter(
        pc.and_(pc.equal(table["event_type"], "impression"), pc.equal(table["variant"], "challenger"))
    )
    assert stage_impressions(store.state, since=T0) == imps.num_rows
    # By default the stage starts when the monitor first saw it (end of the first window).
    after = pa.scalar(T0 + timedelta(minutes=5), pa.timestamp("ms", tz="UTC"))
    late = imps.filter(pc.greater_equal(imps["timestamp"], after))
    assert stage_impressions(store.state) == late.num_rows
    job.fast_pass(T0 + timedelta(minutes=20), Deployment("v1", "v3", 0.1))
    assert store.state["challenger"] == "v3" and stage_impressions(store.state) == 0


def test_health_metrics_guard_and_validation() -> None:
    data = health_metrics(T0, 3.0, 10, 500, 2)
    assert {d.name for d in data} == {"MinutesSinceNewestPartition", "IngestDLQDepth"}
    assert {d.name: d.value for d in health_metrics(T0, None, 10, 2000, None)} == {"QuarantineRate": 0.005}
    with pytest.raises(InputError):
        health_metrics(T0, 1.0, 20, 10, 0)


def test_metric_datum_rejects_high_cardinality_dimensions() -> None:
    with pytest.raises(InputError, match="not allowed"):
        MetricDatum("CTR", 0.1, T0, {"ModelVersion": "v2"})
    with pytest.raises(InputError, match="not finite"):
        MetricDatum("CTR", float("nan"), T0)


@mock_aws
def test_put_metrics_batches_and_history_round_trips() -> None:
    cw = boto3.client("cloudwatch", region_name="eu-west-1")
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="mon", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    data = [MetricDatum("Impressions", float(i), T0, {"Variant": "champion"}, "Count") for i in range(2500)]
    assert put_metrics(cw, data) == 3
    stats = cw.get_metric_statistics(
        Namespace="Shelfwise",
        MetricName="Impressions",
        Dimensions=[{"Name": "Variant", "Value": "champion"}],
        StartTime=T0 - timedelta(minutes=5),
        EndTime=T0 + timedelta(minutes=5),
        Period=300,
        Statistics=["SampleCount"],
    )
    assert stats["Datapoints"][0]["SampleCount"] == 2500
    key = write_history(s3, "mon", T0, "fast", data[:3], {"note": 1})
    assert write_history(s3, "mon", T0, "fast", data[:3]) == key  # same window, same key
    assert [r["value"] for r in read_history(s3, "mon")] == [0.0, 1.0, 2.0]


@mock_aws
def test_run_pass_reads_curated_parquet_from_s3_and_publishes() -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    cw = boto3.client("cloudwatch", region_name="eu-west-1")
    for b in ("cur", "mon", "mod"):
        s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    table = traffic(T0, 10, 300, 0.1, {"champion": 0.3, "challenger": 0.01}, VERSIONS, broken_scores=True)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    s3.put_object(
        Bucket="cur",
        Key="curated/events/event_date=2026-11-28/abc.parquet",
        Body=sink.getvalue().to_pybytes(),
    )
    import json

    for v, m in MANIFESTS.items():
        s3.put_object(Bucket="mod", Key=f"models/recs/{v}/manifest.json", Body=json.dumps(m).encode())
    s3.put_object(
        Bucket="cur",
        Key="curated/_summaries/abc.json",
        Body=json.dumps({"rows_in": 5000, "quarantined": 50}).encode(),
    )
    targets = PassTargets("cur", "mon", "mod", "recs")
    summary = run_pass(
        ("fast",),
        T0 + timedelta(minutes=5, seconds=30),
        targets=targets,
        deployment=DEPLOY,
        s3=s3,
        cloudwatch=cw,
    )
    values = summary["fast"]["values"]
    assert values["EarlyCtrDropLCB/challenger"] > 0.3
    assert values["QuarantineRate"] == pytest.approx(0.01)
    assert 0 <= values["MinutesSinceNewestPartition"] < 6
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="Shelfwise")["Metrics"]}
    assert {"EarlyCtrDropLCB", "ScorePSI", "Impressions", "QuarantineRate"} <= names
    # The summary was counted once: a second pass sees no new ingest summaries.
    again = run_pass(
        ("fast",),
        T0 + timedelta(minutes=10, seconds=30),
        targets=targets,
        deployment=DEPLOY,
        s3=s3,
        cloudwatch=cw,
    )
    assert "QuarantineRate" not in again["fast"]["values"]
    with pytest.raises(InputError):
        run_pass(("hourly",), T0, targets=targets, deployment=DEPLOY, s3=s3, cloudwatch=cw)


def test_deep_pass_publishes_conversion_only_for_the_mature_hour() -> None:
    rows = traffic(T0, 60, 20, 0.5, {"champion": 0.5, "challenger": 0.5}, VERSIONS, seed=5)
    clicks = rows.filter(pc.equal(rows["event_type"], "click"))
    purchases = clicks.set_column(0, "event_type", pa.array(["purchase"] * clicks.num_rows))
    table = pa.concat_tables([rows, purchases])
    job = MonitoringJob(
        TableSource(table), Manifests(), MemoryStateStore(), MonitoringConfig(min_lists_for_rates=10)
    )
    result = job.deep_pass(T0 + timedelta(hours=25, minutes=1))
    assert result.window_start == T0
    values = result.values()
    assert values["ConversionRate/champion"] == pytest.approx(0.5, abs=0.1)
    assert "CTR/champion" not in values


def test_taste_drift_moves_the_input_mix_against_the_frozen_baseline() -> None:
    before = traffic(T0, 60, 40, 0.0, {"champion": 0.2, "challenger": 0.2}, VERSIONS, seed=8)
    after = traffic(
        T0 + timedelta(hours=1),
        60,
        40,
        0.0,
        {"champion": 0.2, "challenger": 0.2},
        VERSIONS,
        seed=9,
        category_weights=[0.55, 0.15, 0.15, 0.15],
    )
    job = MonitoringJob(
        TableSource(pa.concat_tables([before, after])),
        Manifests(),
        MemoryStateStore(),
        MonitoringConfig(input_baseline_events=1500),
    )
    champion_only = Deployment(champion="v1")
    values = [
        job.fast_pass(T0 + timedelta(minutes=5 * i, seconds=10), champion_only).values() for i in range(1, 25)
    ]
    stable = [v["InputCategoryPSI"] for v in values[:12] if "InputCategoryPSI" in v]
    drifted = [v.get("InputCategoryPSI", 0.0) for v in values[-3:]]
    assert stable and max(stable) < 0.05  # the baseline froze within the first hour, and it is quiet
    assert min(drifted) > alarm("input-drift").threshold
    # A new champion starts a new baseline: nothing is published until it has frozen again.
    assert (
        "InputCategoryPSI"
        not in job.fast_pass(T0 + timedelta(hours=2, minutes=5), Deployment(champion="v2")).values()
    )


def test_champion_losing_clicks_against_its_own_baseline_is_taste_drift() -> None:
    before = traffic(T0, 60, 60, 0.0, {"champion": 0.25, "challenger": 0.25}, VERSIONS, seed=10)
    after = traffic(
        T0 + timedelta(hours=1), 60, 60, 0.0, {"champion": 0.15, "challenger": 0.15}, VERSIONS, seed=11
    )
    cfg = MonitoringConfig(champion_baseline_lists=1000, champion_lookback_windows=4)
    job = MonitoringJob(TableSource(pa.concat_tables([before, after])), Manifests(), MemoryStateStore(), cfg)
    champion_only = Deployment(champion="v1")
    values = [
        job.fast_pass(T0 + timedelta(minutes=5 * i, seconds=10), champion_only).values() for i in range(1, 31)
    ]
    lcb = [
        (i, v["ChampionCtrDropLCB/champion"])
        for i, v in enumerate(values, 1)
        if "ChampionCtrDropLCB/champion" in v
    ]
    spec = alarm("champion-ctr-drift")
    # Early clicks: each window counts at its own pass; the first drifted window is the 13th.
    quiet = [x for i, x in lcb if i <= 12]
    assert quiet and not any(breaches(spec, x) for x in quiet)
    assert breaches(spec, lcb[-1][1])
    # Detected within the hour after the drop (the old matured-click signal waited 30 min more).
    first = next(i for i, x in lcb if breaches(spec, x))
    assert 12 < first <= 24


def test_a_fresh_stack_without_models_or_data_passes_quietly() -> None:
    empty = traffic(T0, 1, 1, 0.0, {"champion": 0.0, "challenger": 0.0}, VERSIONS).slice(0, 0)
    job = MonitoringJob(TableSource(empty), Manifests(), MemoryStateStore(), MonitoringConfig())
    for i in range(1, 3):
        assert job.fast_pass(T0 + timedelta(minutes=5 * i), Deployment(champion=None)).values() == {}


def test_ingest_summary_fields_of_the_ingest_contract() -> None:
    from shelfwise.monitoring.health import summary_counts

    ingest = {"rows_read": 1000, "rows_valid": 950, "rows_quarantined": 30, "duplicates": 20}
    assert summary_counts(ingest) == (30, 1000)
    assert summary_counts({"quarantined": 5, "valid": 95}) == (5, 100)


def test_quality_comparison_counts_immature_windows_of_this_canary_only() -> None:
    """CtrDropLCB uses the clicks seen so far in windows that have not matured, from the canary's
    first window on (a champion window before the canary would bring longer-observed lists)."""
    before = traffic(T0, 10, 60, 0.0, {"champion": 0.6, "challenger": 0.6}, VERSIONS, seed=4)
    during = traffic(
        T0 + timedelta(minutes=10), 10, 100, 0.3, {"champion": 0.3, "challenger": 0.1}, VERSIONS, seed=5
    )
    table = pa.concat_tables([before, during])
    job = MonitoringJob(TableSource(table), Manifests(), MemoryStateStore(), MonitoringConfig())
    for i in (1, 2):
        job.fast_pass(T0 + timedelta(minutes=5 * i, seconds=20), Deployment(champion="v1"))
    job.fast_pass(T0 + timedelta(minutes=15, seconds=20), DEPLOY)  # notices the canary
    now = T0 + timedelta(minutes=20, seconds=20)
    values = job.fast_pass(now, DEPLOY).values()
    # By hand: lists served from 12:10 to 12:20 and those clicked before `now`, per variant.
    imp = during.filter(pc.equal(during["event_type"], "impression"))
    clicks = during.filter(
        pc.and_(
            pc.equal(during["event_type"], "click"),
            pc.less(during["timestamp"], pa.scalar(now, pa.timestamp("ms", tz="UTC"))),
        )
    )
    clicked = set(clicks["recommendation_id"].to_pylist())
    sums = {}
    for var in ("challenger", "champion"):
        rids = sorted(set(imp.filter(pc.equal(imp["variant"], var))["recommendation_id"].to_pylist()))
        # No shopper ids in these lists: each list is its own shopper, no pre-canary covariate.
        flags = [1 if r in clicked else 0 for r in rids]
        sums[var] = user_sums([1] * len(rids), flags, [0] * len(rids))
    cfg = MonitoringConfig()
    expected = compare_user_rates(
        sums["challenger"], sums["champion"], cfg.alpha, cfg.tau, cfg.quality_margin, adjust=False
    )
    assert values["CtrRatio/challenger"] == pytest.approx(expected.ratio)
    assert values["CtrDropLCB/challenger"] == pytest.approx(expected.drop_lcb)
    # No window has matured yet (30 minutes), and a 67% drop is already beyond the threshold.
    assert breaches(alarm("challenger-quality"), values["CtrDropLCB/challenger"])


def interleaved_traffic(
    start: datetime, minutes: int, per_minute: int, share: float, challenger_pick: float, seed: int
) -> pa.Table:
    """Lists of 4; ``share`` of them interleaved (v1, v2 alternating from a coin), the rest v1's.

    A clicked interleaved list's click goes to a challenger item with probability ``challenger_pick``.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    for i in range(minutes * per_minute):
        t = start.timestamp() * 1000 + rng.uniform(0, minutes * 60_000)
        rid = f"i{seed}-{i}"
        ilv = rng.uniform() < share
        first = int(rng.integers(0, 2))
        sources = [("v1", "v2")[(first + p) % 2] for p in range(4)] if ilv else ["v1"] * 4
        for p, src in enumerate(sources):
            rows.append(
                ("impression", rid, f"{rid}-{p}", t, p, 0.5, "interleaved" if ilv else "champion", src)
            )
        if rng.uniform() < 0.5:
            want = "v2" if rng.uniform() < challenger_pick else "v1"
            p = next((p for p, s in enumerate(sources) if s == want), 0)
            rows.append(("click", rid, f"{rid}-{p}", t + rng.uniform(2_000, 60_000), p, None, None, None))
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "event_type": list(cols[0]),
            "recommendation_id": list(cols[1]),
            "item_id": list(cols[2]),
            "timestamp": pa.array([int(x) for x in cols[3]]).cast(pa.timestamp("ms", tz="UTC")),
            "position": pa.array(list(cols[4]), pa.int32()),
            "score": pa.array(list(cols[5]), pa.float64()),
            "variant": pa.array(list(cols[6]), pa.string()),
            "model_version": pa.array(list(cols[7]), pa.string()),
            "category": pa.nulls(len(rows), pa.string()),
        }
    )


def test_an_interleaved_canary_is_judged_on_its_wins_and_leaves_evidence() -> None:
    broken = interleaved_traffic(T0, 15, 60, 0.1, challenger_pick=0.02, seed=1)
    job = MonitoringJob(TableSource(broken), Manifests(), MemoryStateStore(), MonitoringConfig())
    first = job.fast_pass(T0 + timedelta(minutes=5, seconds=30), DEPLOY)
    values = first.values()
    assert values["InterleavedLists/challenger"] > 20
    assert values["EarlyCtrDropLCB/challenger"] > 0.3  # a challenger that wins nothing: out in one window
    assert first.summary["evidence"]["design"] == "interleaved"
    # Equal models: the same traffic with fair credit raises nothing; the evidence shows a ratio near 1.
    fair = interleaved_traffic(T0, 60, 60, 0.1, challenger_pick=0.5, seed=2)
    job = MonitoringJob(TableSource(fair), Manifests(), MemoryStateStore(), MonitoringConfig())
    for i in range(12):
        result = job.fast_pass(T0 + timedelta(minutes=5 * (i + 1), seconds=30), DEPLOY)
        assert result.values().get("EarlyCtrDropLCB/challenger", -1) <= 0.3
        assert result.values().get("CtrDropLCB/challenger", -1) <= 0.02
    ev = result.summary["evidence"]
    assert ev["mature_windows"] >= 5 and ev["wins_challenger"] + ev["wins_champion"] > 50
    assert ev["lower"] < 1.0 < ev["upper"] and 0.6 < ev["estimate"] < 1.6


def test_a_split_canary_leaves_non_inferiority_evidence_on_matured_windows() -> None:
    table = traffic(T0, 80, 100, 0.3, {"champion": 0.3, "challenger": 0.3}, VERSIONS, seed=5)
    job = MonitoringJob(TableSource(table), Manifests(), MemoryStateStore(), MonitoringConfig())
    first = job.fast_pass(T0 + timedelta(minutes=5, seconds=30), DEPLOY)
    assert first.summary["evidence"]["estimate"] is None  # nothing matured yet: promotion holds
    for i in range(1, 14):
        result = job.fast_pass(T0 + timedelta(minutes=5 * (i + 1), seconds=30), DEPLOY)
    ev = result.summary["evidence"]
    cfg = MonitoringConfig()
    assert ev["design"] == "split" and ev["margin"] == cfg.noninferiority_margin
    assert ev["mature_windows"] >= 6 and ev["lists_challenger"] == ev["n_challenger"] > 500
    assert ev["lower"] < ev["estimate"] < ev["upper"] and 0.8 < ev["estimate"] < 1.25
    # The promotion's bound is the same estimate's at the stricter confidence.
    assert ev["promotion_confidence"] == 1 - cfg.promotion_alpha > ev["confidence"]
    assert ev["promotion_lower"] < ev["lower"]
