"""The sequential model's served graph: the int8 candidate stage against the exact graph, the
exporter's check that chooses between them, and a bundle with it loading in serving. (The exact
graph against the PyTorch model: tests/unit/test_sequential.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from shelfwise import onnx_export as ox
from shelfwise import onnx_sequential as osq


def random_model(
    n: int = 3000, d: int = 16, users: int = 50, seed: int = 0, bias: float = 0.5
) -> osq.SequentialModel:
    """A 2-block model with random weights over clustered items, 12 stored events per user."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(8, d))
    items = (centroids[rng.integers(0, 8, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32) / 4

    def w(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) / np.sqrt(shape[0])).astype(np.float32)

    def block() -> osq.Block:
        sizes = {"w1": (d, 2 * d), "b1": (2 * d,), "w2": (2 * d, d)}
        return osq.Block(
            **{
                f.name: w(*sizes.get(f.name, (d, d)))
                if f.name.startswith("w")
                else (1 + 0.1 * rng.normal(size=sizes.get(f.name, (d,)))).astype(np.float32)
                if f.name.endswith("_g")
                else (0.1 * rng.normal(size=sizes.get(f.name, (d,)))).astype(np.float32)
                for f in dataclasses.fields(osq.Block)
            }
        )

    stored = rng.integers(0, n, users * 12).astype(np.int32)
    return osq.SequentialModel(
        item_emb=items,
        item_bias=(bias * rng.normal(size=n)).astype(np.float32),
        type_emb=w(osq.N_TYPE_TOKENS, d),
        pos_emb=w(10, d),
        blocks=(block(), block()),
        ln_g=np.ones(d, np.float32),
        ln_b=np.zeros(d, np.float32),
        heads=2,
        user_indptr=np.arange(0, (users + 1) * 12, 12, dtype=np.int64),
        user_items=stored,
        user_types=rng.integers(1, osq.N_TYPE_TOKENS, stored.size).astype(np.int8),
    )


def session(graph: Any) -> Any:
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model() -> osq.SequentialModel:
    return random_model()


def test_type_table_with_or_without_visit_ends_and_stored_types_within_it(model: osq.SequentialModel) -> None:
    """A graph reads stored types from its own type table: one without visit ends (an older model)
    still exports; a stored type beyond the table is refused before export."""
    plain = model.type_emb[: osq.N_TYPES]
    older = dataclasses.replace(
        model, type_emb=plain, user_types=np.minimum(model.user_types, osq.N_TYPES - 1)
    )
    assert older.validate() is older
    with pytest.raises(ox.ExportError, match="user_types must lie in"):
        dataclasses.replace(model, type_emb=plain).validate()
    with pytest.raises(ox.ExportError, match="type_emb"):
        dataclasses.replace(model, type_emb=model.type_emb[:4]).validate()


def test_int8_candidates_answer_like_the_exact_graph(model: osq.SequentialModel) -> None:
    """Known users, known users with request events, anonymous sessions, empty ones, masks from none
    to all but a few items, k from 1 to past the allowed items: same top-k (ties aside), 1e-4."""
    n = model.n_items
    exact = session(osq.build_sequential_model(model))
    cand_graph = osq.build_sequential_model(model, scoring="int8-candidates")
    cand = session(cand_graph)
    meta = {p.key: p.value for p in cand_graph.metadata_props}
    assert meta[ox.META_SCORING] == "int8-candidates" and meta[ox.META_ITEMS] == str(n)
    rng = np.random.default_rng(1)
    for i in range(120):
        user = int(rng.integers(-1, model.n_users))
        length = int(rng.integers(0, 14))
        items = rng.integers(0, n, length)
        weights = rng.choice([1.0, 2.0, 4.0, 8.0], length).astype(np.float32)
        share = (0.0, 0.3, 0.95, 0.999)[i % 4]
        mask = rng.random(n) < share
        k = int((1, 10, 20, 200)[i % 4 if i % 8 < 4 else 3 - i % 4])
        feed = ox.feeds(
            n, user_index=user, history_items=items, history_weights=weights, exclude_mask=mask, k=k
        )
        ref_s, ref_i = exact.run(None, feed)
        got_s, got_i = cand.run(None, feed)
        finite = np.isfinite(ref_s)
        assert np.array_equal(finite, np.isfinite(got_s)), (i, share, k)
        np.testing.assert_allclose(got_s[finite], ref_s[finite], atol=1e-4)
        differ = got_i[finite] != ref_i[finite]
        assert np.allclose(got_s[finite][differ], ref_s[finite][differ], atol=1e-5)
        assert not set(got_i[finite].tolist()) & set(np.flatnonzero(mask).tolist())


def test_exporter_keeps_the_int8_graph_only_when_its_check_passes(model: osq.SequentialModel) -> None:
    graph, record = osq.export_sequential_model(model, check_ks=(10, 200), check_requests=60)
    assert record["graph"] == "int8-candidates" and record["candidate_check"]["ok"]
    assert record["candidate_check"]["requests_checked"] == 120
    assert any(o.domain == ox.CONTRIB_DOMAIN for o in graph.opset_import)
    # one item whose embedding is 1000x the others: every other item's code rounds to 0, so the
    # codes rank by bias alone and miss the exact top-k; the exporter falls back to the exact graph
    items = model.item_emb.copy()
    items[0] *= 1000
    skewed = dataclasses.replace(model, item_emb=items, item_bias=np.zeros(model.n_items, np.float32))
    graph, record = osq.export_sequential_model(skewed, check_requests=30)
    assert record["graph"] == "exact" and not record["candidate_check"]["ok"]
    assert {p.key: p.value for p in graph.metadata_props}[ox.META_SCORING] == "exact"
    _, off = osq.export_sequential_model(model, int8_candidates=False)
    assert off == {"graph": "exact", "candidate_check": None}
    with pytest.raises(ox.ExportError, match="scoring must be one of"):
        osq.build_sequential_model(model, scoring="int4")


def test_bundle_with_the_int8_sequential_graph_serves(model: osq.SequentialModel, tmp_path: Path) -> None:
    from shelfwise import bundle as bundle_io
    from shelfwise.serving.model import LoadedModel

    graph, record = osq.export_sequential_model(model, check_requests=30)
    n = model.n_items
    bundle_io.write_bundle(
        tmp_path,
        model=graph,
        items={"item_id": np.array([f"i{i}" for i in range(n)]), "popularity": np.ones(n, np.float32)},
        manifest={"algorithm": "sequential", "onnx_graph": record},
        users=np.array([f"u{u:03d}" for u in range(model.n_users)]),
        parquet=False,
    )
    loaded = LoadedModel.from_directory(tmp_path, "v1")
    assert loaded.kind == "sequential"
    mask = np.zeros(n, bool)
    mask[:100] = True
    scores, indices = loaded.score(3, np.array([5, 6], np.int64), np.array([1.0, 8.0], np.float32), mask, 20)
    assert len(indices) == 20 and indices.min() >= 100 and np.all(np.diff(scores) <= 0)
