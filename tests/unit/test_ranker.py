"""The neural ranker: features, training lists (candidates and served lists), its one-graph export
against the PyTorch reference, and the job's guarded decision to serve it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from shelfwise.onnx_export import feeds
from shelfwise.served_lists import user_hash
from shelfwise.training.data import Interactions, Split, interactions_from_table, temporal_split
from shelfwise.training.itemknn import ItemKNN
from shelfwise.training.mf import ALS

torch = pytest.importorskip("torch", reason="the ranker needs PyTorch (make torch)")

from shelfwise.training import ranker_stage  # noqa: E402
from shelfwise.training.ranker import (  # noqa: E402
    FEATURES,
    ITEM_FEATURES,
    ItemTable,
    item_table,
    list_features,
    merge_lists,
    train_ranker,
    user_parts,
)
from tests.unit.test_sequential import assert_same  # noqa: E402
from tests.unit.test_training import T0, synthetic_events  # noqa: E402

TINY = {"candidates": 20, "hidden": (8,), "epochs": 3, "patience": 2, "seed": 5}


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(interactions_from_table(synthetic_events(n_users=120, n_items=50)), 0.8)


def fitted(split: Split, retrieval: Any) -> Any:
    retrieval.fit(split.train)
    fit_u, stop_u = user_parts(len(split.users), 0)
    return train_ranker(retrieval, split, fit_u, stop_u, metric="ndcg@10", params=TINY)


@pytest.fixture(scope="module")
def ranker(split: Split) -> Any:
    return fitted(split, ItemKNN(20, "user", threads=1))


def session(model: Any) -> Any:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_features_read_the_list_the_history_and_the_item_table() -> None:
    width = len(ITEM_FEATURES)
    table = ItemTable(np.arange(4 * width, dtype=np.float32).reshape(4, width), np.array([0, 0, 1, 2]))
    cand = np.array([2, 0, 3])
    x, valid = list_features(
        table, cand, np.array([3.0, 1.0, -np.inf], np.float32), np.array([0, 1, 2]), np.array([1.0, 1.0, 2.0])
    )
    assert x.shape == (3, len(FEATURES)) and valid.tolist() == [True, True, False]
    np.testing.assert_allclose(x[:2, 0], [1.0, -1.0], atol=1e-5)  # z within the valid candidates
    np.testing.assert_allclose(x[:, 1], np.log1p([0, 1, 2]), atol=1e-6)  # rank
    np.testing.assert_allclose(x[:, 2], [0.5, 0.5, 0.0], atol=1e-5)  # weight share of the category
    np.testing.assert_allclose(x[:, 3], np.log1p(3), atol=1e-6)
    np.testing.assert_array_equal(x[:, 4], [1.0, 0.0, 0.0])  # in the last event's category (1)
    np.testing.assert_array_equal(x[:, 5:], table.features[cand])
    empty, _ = list_features(
        table, cand, np.array([3.0, 1.0, 0.5], np.float32), np.array([], int), np.array([])
    )
    np.testing.assert_array_equal(empty[:, 4], 0.0)


def test_category_share_is_the_items_part_of_its_category(split: Split) -> None:
    data = split.train
    table = item_table(data)
    pop = np.bincount(data.item, weights=data.weight.astype(np.float64), minlength=data.n_items)
    col = table.features[:, ITEM_FEATURES.index("category_share")]
    for c in np.unique(table.category)[:3]:
        members = np.flatnonzero(table.category == c)
        expected = np.log((pop[members] + 1.0) / (pop[members].sum() + 1.0))
        np.testing.assert_allclose(col[members], expected, rtol=2e-3, atol=2e-3)  # float16 in the graph
        # inside a category it orders items as their popularity does
        assert np.all(np.diff(col[members][np.argsort(pop[members], kind="stable")]) >= 0)


def test_a_feature_constant_in_training_keeps_unit_scale() -> None:
    from shelfwise.training.ranker import Lists, Ranker

    rng = np.random.default_rng(3)
    x = rng.random((30, 12, len(FEATURES))).astype(np.float32)
    last = FEATURES.index("last_category")
    x[:, :, last] = 1.0  # a log without categories: every candidate shares the last event's
    label = (rng.random((30, 12)) < 0.2).astype(np.float32)
    label[:, 0] = 1.0
    lists = Lists(x, label, np.ones_like(label), np.ones_like(label, dtype=bool), None, "candidates")
    model = Ranker(**{**TINY, "epochs": 1}).fit_lists(lists, lambda _: 0.0)
    assert model.sigma[last] == 1.0 and model.mu[last] == 1.0
    others = [i for i in range(len(FEATURES)) if i != last]
    np.testing.assert_allclose(
        model.sigma[others], x.reshape(-1, len(FEATURES))[:, others].std(axis=0), rtol=1e-5
    )


def test_training_is_seeded_and_stops_early(split: Split, ranker: Any) -> None:
    again = fitted(split, ItemKNN(20, "user", threads=1))
    users = split.users[:10]
    np.testing.assert_array_equal(ranker.score_users(users), again.score_users(users))
    assert ranker.training_data == "candidates"
    assert 1 <= ranker.params["epochs"] <= TINY["epochs"]
    assert len(ranker.validation_curve) == len(ranker.loss_curve) >= 1


@pytest.mark.parametrize("retrieval", ["itemknn", "als"])
def test_one_graph_matches_the_pytorch_reference(split: Split, ranker: Any, retrieval: str) -> None:
    model = ranker if retrieval == "itemknn" else fitted(split, ALS(factors=8, threads=1))
    graph = model.to_onnx()
    assert [i.name for i in graph.graph.input] == [
        "user_index",
        "history_items",
        "history_weights",
        "exclude_mask",
        "k",
    ]
    assert [o.name for o in graph.graph.output] == ["scores", "indices"]
    sess = session(graph)
    n = split.train.n_items
    rng = np.random.default_rng(0)
    for user in (0, 7, 40, -1):
        for hist_len in (0, 1, 5):
            h = rng.choice(n, size=hist_len, replace=False)
            w = rng.choice([1.0, 4.0, 8.0], size=hist_len).astype(np.float32)
            mask = rng.random(n) < 0.2
            for k in (5, 20, 35, n):  # below, at and above the candidate count, and the whole catalogue
                f = feeds(n, user_index=user, history_items=h, history_weights=w, exclude_mask=mask, k=k)
                got = sess.run(["scores", "indices"], f)
                assert_same(got, model.reference(user, h, w, mask, k))
                assert not mask[got[1][np.isfinite(got[0])]].any()


def test_few_allowed_items_leave_the_tail_at_minus_inf(split: Split, ranker: Any) -> None:
    n = split.train.n_items
    mask = np.ones(n, dtype=bool)
    mask[[3, 9, 11]] = False
    scores, idx = session(ranker.to_onnx()).run(
        ["scores", "indices"], feeds(n, user_index=2, exclude_mask=mask, k=10)
    )
    assert sorted(idx[np.isfinite(scores)].tolist()) == [3, 9, 11]
    assert np.isneginf(scores[3:]).all()


def test_served_lists_train_with_a_position_bias_and_inverse_propensities(split: Split) -> None:
    """Impressions after the cut, joined with clicks by recommendation id, are the training lists."""
    data = split.train
    rows: list[dict[str, Any]] = []
    at = T0 + timedelta(days=39)
    for r, user in enumerate(data.user_ids[:30].tolist()):
        for pos, item in enumerate(data.item_ids[r % 10 : r % 10 + 5].tolist()):
            logged: dict[str, Any] = {"user_hash": user_hash(user)} if r % 2 else {}
            if pos == 4:
                logged |= {"propensity": 0.5, "spread": False, "list_propensity": 0.5}
            props = json.dumps(logged) if logged else None
            rows.append(
                {
                    "event_type": "impression",
                    "user_id": None if r % 2 else user,  # served lists name the shopper by user_hash
                    "item_id": item,
                    "rec": f"r{r}",
                    "pos": pos,
                    "ts": at,
                    "props": props,
                }
            )
        rows.append(
            {
                "event_type": "click",
                "user_id": user,
                "item_id": data.item_ids[r % 10 + r % 5],
                "rec": f"r{r}",
                "pos": None,
                "ts": at + timedelta(minutes=1),
                "props": None,
            }
        )
    table = pa.table(
        {
            "event_type": [x["event_type"] for x in rows],
            "user_id": [x["user_id"] for x in rows],
            "item_id": [x["item_id"] for x in rows],
            "recommendation_id": [x["rec"] for x in rows],
            "position": pa.array([x["pos"] for x in rows], pa.int32()),
            "timestamp": pa.array([x["ts"] for x in rows], pa.timestamp("ms", tz="UTC")),
            "properties": [x["props"] for x in rows],
        }
    )
    retrieval = ItemKNN(20, "user", threads=1).fit(data)
    fit_u, stop_u = user_parts(len(split.users), 0)
    model = train_ranker(retrieval, split, fit_u, stop_u, metric="ndcg@10", params=TINY, table=table)
    assert model.training_data == "impressions+candidates"
    lists = model.lists_from_impressions(table, split.cut_ms, split.end_ms + 1)
    assert lists is not None and lists.position is not None
    assert lists.x.shape == (30, 5, len(FEATURES))
    assert lists.label.sum() == 30
    np.testing.assert_allclose(lists.weight[:, 4], 2.0)  # 1 / propensity of the explored slot
    np.testing.assert_allclose(lists.weight[:, :4], 1.0)
    # trained together with the candidate lists (what the ranker meets at serving), at position 0
    cand, _ = model.lists_from_candidates(split, fit_u)
    merged = merge_lists(lists, cand)
    assert merged.x.shape == (30 + len(cand.x), cand.x.shape[1], len(FEATURES))
    assert (merged.position[30:] == 0).all() and not merged.valid[:30, 5:].any()
    assert merged.source == "impressions+candidates"
    # the position term is not part of the served graph: its answer is the reference's
    n = data.n_items
    f = feeds(n, user_index=3, k=10)
    assert_same(
        session(model.to_onnx()).run(["scores", "indices"], f),
        model.reference(3, f["history_items"], f["history_weights"], f["exclude_mask"], 10),
    )
    # outside the window: no lists, the candidates are used
    assert model.lists_from_impressions(table, split.end_ms + 1, split.end_ms + 2) is None


@pytest.fixture
def significant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's bootstrap answers "significant gain", so the served path runs on a tiny log."""
    monkeypatch.setattr(
        ranker_stage,
        "paired_bootstrap",
        lambda a, b, **_: {
            "gain": 0.01,
            "relative_gain": 0.1,
            "p_value": 0.0,
            "ci_low": 0.0,
            "ci_high": 0.02,
            "users": len(a),
        },
    )


def test_job_serves_the_ranker_in_one_graph_when_the_guard_says_so(tmp_path: Any, significant: None) -> None:
    from shelfwise.serving.model import LoadedModel
    from shelfwise.training.job import Progress, TrainConfig, run_training

    result = run_training(
        synthetic_events(n_users=100, n_items=40),
        tmp_path / "bundle",
        TrainConfig(search="none", families=("popularity", "itemknn", "ranker"), threads=1, parity_users=8),
        progress=Progress(stream=None),
    )
    m = result.manifest
    assert m["ranker"]["used"] is True and m["ranker"]["retrieval"] == m["algorithm"] == "itemknn"
    assert m["evaluation"]["selection"]["served"] == "itemknn+ranker"
    assert "ranker" in m["evaluation"]["models"] and "ranker" in m["evaluation"]["curves"]
    assert m["parity"]["ok"] and m["parity"]["max_abs_score_diff"] <= 1e-4
    report = (tmp_path / "bundle" / "report.html").read_text()
    assert "ranker on itemknn vs itemknn alone" in report and "itemknn+ranker" in report
    loaded = LoadedModel.from_directory(tmp_path / "bundle", result.version)
    assert loaded.kind == "ranker"
    scores, idx = loaded.score(
        0, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(loaded.n_items, bool), 10
    )
    assert len(idx) == 10 and np.all(np.diff(scores) <= 0)
    scores, idx = loaded.score(
        -1, np.array([1, 2]), np.array([1.0, 8.0], np.float32), np.zeros(loaded.n_items, bool), 5
    )
    assert len(idx) == 5


def test_job_records_why_the_ranker_is_not_served(tmp_path: Any) -> None:
    from shelfwise.training.job import Progress, TrainConfig, evaluate_log

    data: Interactions = interactions_from_table(synthetic_events(n_users=100, n_items=40))
    ev = evaluate_log(
        data,
        TrainConfig(search="none", families=("popularity", "itemknn", "ranker"), threads=1),
        Progress(stream=None),
    )
    record = ev.selection["ranker"]
    assert record["retrieval"] == ev.best
    assert record["training_data"] == "candidates"
    assert ("beats" in record["reason"]) == record["replaces"]
    assert ev.to_json()["ranker"] == (record["replaces"] and ev.selection["served"].endswith("+ranker"))


@pytest.mark.parametrize("kind", ["ranker", "sequential-ranker"])
def test_bench_bundle_with_the_ranker_graph_serves_and_keeps_its_retrieval_graph(
    tmp_path: Any, kind: str
) -> None:
    import onnx

    from shelfwise.serving.model import LoadedModel
    from shelfwise_local.bench.serve.ranker import RETRIEVAL_GRAPH
    from shelfwise_local.bench.serve.synthetic import build_synthetic_bundle

    bundle = build_synthetic_bundle(
        tmp_path / "bundle",
        n_items=300,
        dim=8,
        n_users=20,
        model_kind=kind,
        save_items=tmp_path / "items.npy",
        history=12,
    )
    retrieval = onnx.load(str(tmp_path / RETRIEVAL_GRAPH))
    # the ranker wraps the model it names: ALS factors, or the sequential transformer
    assert any(n.op_type == "Softmax" for n in retrieval.graph.node) == kind.startswith("sequential")
    loaded = LoadedModel.from_directory(bundle, "v1")
    assert loaded.kind == "ranker"
    mask = np.zeros(300, dtype=bool)
    mask[:150] = True
    scores, idx = loaded.score(3, np.array([5, 6]), np.array([1.0, 2.0], np.float32), mask, 20)
    assert len(idx) == 20 and (idx >= 150).all() and np.all(np.diff(scores) <= 0)
