"""Training: data, models, ONNX parity with the numpy reference, the job end to end, the trigger, CLIs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from shelfwise import bundle as bundle_io
from shelfwise.cli import train as training_cli
from shelfwise.errors import InputError
from shelfwise.events import EVENT_WEIGHTS
from shelfwise.registry import Registry
from shelfwise.training.data import interactions_from_table, temporal_split
from shelfwise.training.itemknn import ItemKNN, top_neighbours
from shelfwise.training.job import Progress, TrainConfig, run_training
from shelfwise.training.mf import ALS
from shelfwise.training.parity import check_parity
from shelfwise.training.popularity import Popularity
from shelfwise.training.search import evaluate_model
from shelfwise.training.trigger import decide, parquet_rows

T0 = datetime(2026, 9, 1, tzinfo=UTC)
BUCKET = "shelfwise-models-unit"
CURATED = "shelfwise-curated-unit"


def synthetic_events(n_users: int = 120, n_items: int = 60, days: int = 40, seed: int = 0) -> pa.Table:
    """Users with a taste for one of four item groups browse, cart and buy mostly within it."""
    rng = np.random.default_rng(seed)
    groups = 4
    rows: dict[str, list[Any]] = {
        k: [] for k in ("event_type", "user_id", "session_id", "item_id", "ts", "cat")
    }
    for u in range(n_users):
        taste = u % groups
        for s in range(rng.integers(2, 6)):
            start = T0 + timedelta(days=float(rng.uniform(0, days)))
            for e in range(rng.integers(2, 7)):
                in_taste = rng.random() < 0.85
                g = taste if in_taste else rng.integers(groups)
                item = int(g + groups * rng.integers(n_items // groups))
                kind = rng.choice(["view", "view", "click", "add_to_cart", "purchase", "search"])
                rows["event_type"].append(str(kind))
                rows["user_id"].append(f"user{u:03d}")
                rows["session_id"].append(f"user{u:03d}-s{s}")
                rows["item_id"].append(None if kind == "search" else f"item{item:03d}")
                rows["ts"].append(start + timedelta(minutes=3 * e))
                rows["cat"].append(f"cat{item % groups}")
    n = len(rows["ts"])
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_type": pa.array(rows["event_type"]).dictionary_encode(),
            "user_id": rows["user_id"],
            "session_id": rows["session_id"],
            "item_id": rows["item_id"],
            "timestamp": pa.array(rows["ts"], pa.timestamp("ms", tz="UTC")),
            "price": pa.array(rng.uniform(1, 50, n)),
            "category": rows["cat"],
            "properties": [json.dumps({"title": f"Thing {i}"}) for i in range(n)],
            "weight": pa.array([EVENT_WEIGHTS[t] for t in rows["event_type"]], pa.float32()),
        }
    )


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synthetic_events()


def test_interactions_drop_itemless_and_zero_weight_and_sort_ids(table: pa.Table) -> None:
    data = interactions_from_table(table)
    kept = sum(1 for t in table["event_type"].to_pylist() if EVENT_WEIGHTS[t] > 0)
    assert data.n_events == kept
    assert list(data.user_ids) == sorted(data.user_ids) and list(data.item_ids) == sorted(data.item_ids)
    assert np.all(np.diff(data.ts) >= 0)
    assert data.item_info["title"][0].startswith("Thing ")
    assert data.item_info["category"][0] == f"cat{int(data.item_ids[0][4:]) % 4}"
    with pytest.raises(InputError, match="lacks curated columns"):
        interactions_from_table(table.drop_columns(["weight"]))
    # Anonymous events fall back to the session as the user key.
    anon = table.set_column(2, "user_id", pa.nulls(table.num_rows, pa.string()))
    sessions = {
        s
        for s, t in zip(table["session_id"].to_pylist(), table["event_type"].to_pylist(), strict=True)
        if EVENT_WEIGHTS[t] > 0
    }
    assert interactions_from_table(anon).n_users == len(sessions)


def test_popularity_window_counts_recent_weight() -> None:
    rows = [("u1", "a", 0, "purchase"), ("u1", "b", 9, "view"), ("u2", "b", 10, "view")]
    t = pa.table(
        {
            "event_type": [r[3] for r in rows],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": pa.array([T0 + timedelta(days=r[2]) for r in rows], pa.timestamp("ms", tz="UTC")),
            "weight": pa.array([EVENT_WEIGHTS[r[3]] for r in rows], pa.float32()),
        }
    )
    data = interactions_from_table(t)
    recent = Popularity(window_days=3).fit(data).scores
    overall = Popularity(window_days=None).fit(data).scores
    assert recent is not None and overall is not None
    assert recent[1] > recent[0]  # b: 2 recent views; a: an old purchase
    assert overall[0] > overall[1]  # all-time: the purchase weighs 8


def test_top_neighbours_matches_dense_cosine() -> None:
    rng = np.random.default_rng(3)
    import scipy.sparse as sp

    x = (rng.random((40, 15)) < 0.25).astype(np.float32)
    idx, val = top_neighbours(sp.csr_matrix(x), 4, shrink=0.0, block_budget=45)  # several blocks
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    dense = co / (np.outer(norms, norms) + 1e-12)
    np.fill_diagonal(dense, 0)
    for i in range(15):
        expected = np.sort(dense[i])[::-1][:4]
        np.testing.assert_allclose(val[i], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dense[i, idx[i]][val[i] > 0], val[i][val[i] > 0], rtol=1e-5)


def test_top_neighbours_same_table_with_threads() -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    x = sp.csr_matrix((rng.random((300, 120)) < 0.1).astype(np.float32))
    one = top_neighbours(x, 10, shrink=2.0, block_budget=400)
    two = top_neighbours(x, 10, shrink=2.0, block_budget=400, threads=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    assert np.all(np.diff(one[1], axis=1) <= 0)  # best first


@pytest.mark.parametrize(
    "model",
    [
        Popularity(7),
        ItemKNN(10, "session"),
        ItemKNN(10, "user", half_life_days=7, popularity_prior=0.2),
        ALS(factors=8, iterations=5, threads=1),
    ],
    ids=["popularity", "itemknn", "itemknn_recent", "als"],
)
def test_onnx_matches_numpy_reference(table: pa.Table, model: Any) -> None:
    """The served graph scores like the training side (1e-4, same top-k but ties) — users and fold-in."""
    data = interactions_from_table(table)
    model.fit(data)
    graph = model.to_onnx()
    parity = check_parity(model, graph, data, k=10, n_users=20, seed=1)
    assert parity["ok"], parity
    assert parity["requests"] == 60  # known user, fold-in, known user + request events
    # And directly: a fold-in request from an anonymous session, with an exclusion mask.
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    hist = np.array([3, 5, 5, 9], np.int64)
    w = np.array([1.0, 4.0, 8.0, 2.0], np.float32)
    mask = np.zeros(data.n_items, bool)
    mask[[0, 3]] = True
    feeds = {
        "user_index": np.array([-1], np.int64),
        "history_items": hist,
        "history_weights": w,
        "exclude_mask": mask,
        "k": np.array([7], np.int64),
    }
    scores, indices = sess.run(["scores", "indices"], feeds)
    ref_scores, ref_indices = model.reference(-1, hist, w, mask, 7)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-4)
    differ = indices != ref_indices
    assert np.allclose(scores[differ], ref_scores[differ], rtol=1e-4, atol=1e-5)
    assert not set(indices.tolist()) & {0, 3}


def test_models_beat_random_on_planted_tastes(table: pa.Table) -> None:
    split = temporal_split(interactions_from_table(table), 0.8)

    class Random:
        def __init__(self, n: int) -> None:
            self.rng = np.random.default_rng(0)
            self.n = n

        def score_users(self, users: np.ndarray) -> np.ndarray:
            return self.rng.random((len(users), self.n)).astype(np.float32)

    rnd = evaluate_model(Random(split.train.n_items), split, 10)  # type: ignore[arg-type]
    knn = evaluate_model(ItemKNN(20, "user").fit(split.train), split, 10)
    als = evaluate_model(ALS(factors=8, iterations=10, threads=1).fit(split.train), split, 10)
    assert knn["recall@10"] > rnd["recall@10"] and als["recall@10"] > rnd["recall@10"]
    assert {"warm", "cold"} == set(knn["segments"])


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        for b in (BUCKET, CURATED):
            s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield {
            "s3": s3,
            "ssm": boto3.client("ssm", region_name="eu-west-1"),
            "events": boto3.client("events", region_name="eu-west-1"),
        }


def test_job_trains_exports_registers_and_gates_against_champion(
    table: pa.Table, aws: dict[str, Any], tmp_path: Path
) -> None:
    registry = Registry(aws["s3"], aws["ssm"], aws["events"], BUCKET, "test", "recs")
    config = TrainConfig(search="none", threads=1, parity_users=8)
    log = io.StringIO()
    first = run_training(
        table, tmp_path / "b1", config, registry=registry, version="v1", progress=Progress(log)
    )
    manifest = first.manifest
    assert set(manifest["evaluation"]["models"]) == {
        "popularity",
        "popularity_all",
        "itemknn",
        "itemknn_recent",
        "als",
    }
    assert manifest["evaluation"]["champion"] is None
    assert manifest["parity"]["ok"] and manifest["algorithm"] == manifest["evaluation"]["best"]
    assert (
        "score_histogram" in manifest["reference"] and "<svg" in (tmp_path / "b1" / "report.html").read_text()
    )
    loaded = bundle_io.verify_bundle(tmp_path / "b1")
    assert loaded.users is not None and loaded.similar_indices is not None
    assert "[" in log.getvalue() and "register" in log.getvalue()
    assert first.registration is not None and first.registration.version == "v1"
    assert first.registration.gate.passed, first.registration.gate.reasons
    if first.registration.gate.passed:
        assert registry.aliases().champion == "v1"
        second = run_training(
            table, tmp_path / "b2", config, registry=registry, version="v2", progress=Progress(None)
        )
        champ = second.manifest["evaluation"]["champion"]
        assert champ["version"] == "v1" and "ndcg@10" in champ["metrics"]
        assert second.registration is not None
        # Same data, same recipe: the refit champion scores exactly like the candidate.
        assert second.registration.gate.champion == pytest.approx(second.registration.gate.candidate)
        assert second.registration.offered_for_canary
    else:
        assert registry.aliases().champion is None
        assert first.registration.gate.reasons


def test_trigger_counts_new_rows_from_parquet_footers(table: pa.Table, aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3.put_object(Bucket=CURATED, Key="curated/events/event_date=2026-09-01/a.parquet", Body=buf.getvalue())
    objects = s3.list_objects_v2(Bucket=CURATED)["Contents"]
    from shelfwise.training.trigger import CuratedObject

    obj = CuratedObject(objects[0]["Key"], objects[0]["Size"], objects[0]["LastModified"])
    assert parquet_rows(s3, CURATED, obj) == table.num_rows
    common = {"in_process_max_bytes": 10**9, "can_train_here": True}
    few = decide(s3, CURATED, mode="if_new_data", last_trained_at=None, min_new_events=10**6, **common)
    assert few.action == "skip" and few.new_events == table.num_rows
    enough = decide(s3, CURATED, mode="if_new_data", last_trained_at=None, min_new_events=10, **common)
    assert enough.action == "train_here"
    later = datetime.now(UTC) + timedelta(hours=1)
    assert (
        decide(s3, CURATED, mode="if_new_data", last_trained_at=later, min_new_events=10, **common).new_events
        == 0
    )
    big = decide(
        s3,
        CURATED,
        mode="train",
        last_trained_at=None,
        min_new_events=0,
        in_process_max_bytes=10,
        can_train_here=True,
    )
    assert big.action == "submit_batch"


def test_evaluate_cli_prints_protocol_json_last(
    table: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    rc = training_cli.evaluate_main(
        ["--events", str(path), "--format", "curated", "--k", "5", "--search", "none", "--threads", "1"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) >= {"protocol", "models", "best"}
    assert out["best"] in out["models"]
    for metrics in out["models"].values():
        assert {
            "ndcg@5",
            "recall@5",
            "map@5",
            "hitrate@5",
            "mrr",
            "coverage",
            "popularity_bias",
            "users",
        } <= set(metrics)
    # every family also answers mid-visit, as served; a second figure beside the first; ItemKNN and
    # ALS also through their fold-in route, on the training items + the visit, and on the visit alone
    folded = {
        f"{f}+{route}" for f in ("itemknn", "als") if f in out["models"] for route in ("visit", "session")
    }
    assert folded and set(out["in_session"]) == set(out["models"]) | folded
    assert "in_session" in out["protocol"]
    for metrics in out["in_session"].values():
        assert {"ndcg@5", "recall@5", "mrr", "users"} <= set(metrics) and metrics["users"] > 0


def test_float16_only_when_topk_is_unchanged(table: pa.Table) -> None:
    from shelfwise.training.job import float16_check

    data = interactions_from_table(table)
    model = ALS(factors=8, iterations=5, threads=1).fit(data)
    check = float16_check(model, data, TrainConfig(float16=True))
    assert check["users_checked"] == data.n_users
    assert check["used"] == (check["users_with_changed_topk"] == 0)
    if check["used"]:
        assert len(model.to_onnx(float16=True).SerializeToString()) < len(model.to_onnx().SerializeToString())
