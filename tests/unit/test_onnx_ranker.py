"""The ranker's part of the one graph, without PyTorch: over the sequential graph the serving bench
exports, against the features and the MLP in numpy on the wrapped graph's own candidates."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from shelfwise import onnx_ranker
from shelfwise.onnx_export import ExportError, _topk, feeds
from shelfwise.training.ranker import ItemTable, list_features
from shelfwise_local.bench.serve.ranker import synthetic_ranker_arrays
from shelfwise_local.bench.serve.synthetic import _synthetic_sequential, synthetic_factors
from tests.unit.test_sequential import assert_same

N, USERS, STORED, C = 400, 30, 12, 20


def _session(model: Any) -> Any:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def built() -> tuple[Any, Any, dict[str, np.ndarray]]:
    rng, cats, fav, factors = synthetic_factors(N, 16, USERS, n_categories=6, seed=3)
    retrieval, _ = _synthetic_sequential(factors.item_factors, cats, fav, STORED, rng, True, None)
    arrays = synthetic_ranker_arrays(cats, fav, STORED, rng)
    return retrieval, onnx_ranker.build_ranker_model(retrieval, arrays, C), arrays


def _reference(retrieval: Any, arrays: dict[str, np.ndarray], feed: dict[str, np.ndarray]) -> Any:
    """The retrieval graph's top-C, the features and the MLP in numpy, the masked top-k."""
    user, k = int(feed["user_index"][0]), int(feed["k"][0])
    vals, idx = retrieval.run(None, {**feed, "k": np.array([min(max(k, C), N)])})
    h, w = feed["history_items"], feed["history_weights"]
    if user >= 0:
        lo, hi = arrays["user_indptr"][user : user + 2]
        h = np.concatenate([arrays["user_items"][lo:hi].astype(np.int64), h])
        w = np.concatenate([arrays["user_weights"][lo:hi].astype(np.float16).astype(np.float32), w])
    table = ItemTable(arrays["item_features"].astype(np.float16).astype(np.float32), arrays["item_category"])
    x, valid = list_features(table, idx, vals, h, w)
    a = (x - arrays["mu"]) / arrays["sigma"]
    layers = sorted(int(key[1:]) for key in arrays if key[0] == "w" and key[1:].isdigit())
    for i in layers:
        a = a @ arrays[f"w{i}"] + arrays[f"b{i}"]
        a = np.maximum(a, 0) if i != layers[-1] else a
    scores, order = _topk(np.where(valid, a[:, 0], -np.inf).astype(np.float32), np.zeros(len(idx), bool), k)
    return scores, idx[order]


def test_ranker_over_the_sequential_graph_matches_numpy_on_its_candidates(built: Any) -> None:
    retrieval_graph, graph, arrays = built
    assert not any(n.op_type == "If" for n in graph.graph.node)
    retrieval, ranker = _session(retrieval_graph), _session(graph)
    rng = np.random.default_rng(1)
    for user in (0, 7, USERS - 1, -1):
        for hist_len in (0, 1, 9):
            h = rng.choice(N, size=hist_len, replace=False)
            w = rng.choice([1.0, 2.0, 4.0, 8.0], size=hist_len).astype(np.float32)
            for mask in (np.zeros(N, bool), rng.random(N) < 0.3):
                for k in (5, C, 35, N):  # below, at and above the candidate count, the whole catalogue
                    feed = feeds(
                        N, user_index=user, history_items=h, history_weights=w, exclude_mask=mask, k=k
                    )
                    got = ranker.run(None, feed)
                    assert_same(got, _reference(retrieval, arrays, feed))
                    assert not mask[got[1][np.isfinite(got[0])]].any()


def test_a_graph_without_stored_users_answers_sessions(built: Any) -> None:
    retrieval_graph, _, arrays = built
    empty = {
        **arrays,
        "user_indptr": np.zeros(1, np.int64),
        "user_items": np.zeros(0, np.int32),
        "user_weights": np.zeros(0, np.float32),
    }
    ranker = _session(onnx_ranker.build_ranker_model(retrieval_graph, empty, C))
    feed = feeds(N, history_items=[3, 4], history_weights=[1.0, 8.0], k=10)
    assert_same(ranker.run(None, feed), _reference(_session(retrieval_graph), empty, feed))


def test_export_refuses_negative_categories_and_old_opsets(built: Any) -> None:
    retrieval_graph, _, arrays = built
    bad = {**arrays, "item_category": np.where(np.arange(N) == 5, -1, arrays["item_category"])}
    with pytest.raises(ExportError, match="categories"):
        onnx_ranker.build_ranker_model(retrieval_graph, bad, C)
    old = onnx.ModelProto.FromString(retrieval_graph.SerializeToString())
    for opset in old.opset_import:
        if opset.domain == "":
            opset.version = 15
    with pytest.raises(ExportError, match="opset 15"):
        onnx_ranker.build_ranker_model(old, arrays, C)
