"""The page-index (ANN) factor graph: exact filters, full lists, stored-row scores, recall, export choice."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from shelfwise import ann
from shelfwise import onnx_ann as oa
from shelfwise import onnx_export as ox

N, D, U = 6000, 16, 40


@pytest.fixture(scope="module")
def model() -> ox.FactorModel:
    rng = np.random.default_rng(3)
    cats = rng.integers(0, 12, size=N)
    centroids = rng.normal(size=(12, D))
    items = (centroids[cats] + 0.5 * rng.normal(size=(N, D))) / np.sqrt(D)
    users = centroids[rng.integers(0, 12, U)] + 0.3 * rng.normal(size=(U, D))
    return ox.FactorModel.create(items, users, ox.als_projection(items, 1.0))


@pytest.fixture(scope="module")
def index(model: ox.FactorModel) -> ann.PageIndex:
    return ann.build_page_index(model.item_factors, page=32)


@pytest.fixture(scope="module")
def session(model: ox.FactorModel, index: ann.PageIndex) -> ort.InferenceSession:
    graph = oa.build_factor_ann_model(model, index, probe=40)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def test_index_is_a_permutation_with_sound_bounds(model: ox.FactorModel, index: ann.PageIndex) -> None:
    flat = index.order.reshape(-1)[~index.padding.reshape(-1)]
    assert np.array_equal(np.sort(flat), np.arange(N))
    pos = index.position()
    assert np.array_equal(index.order.reshape(-1)[pos], np.arange(N))
    # every member's distance to its page centroid is within the page radius
    page_of = pos // index.page
    dist = np.linalg.norm(model.item_factors - index.centroids[page_of], axis=1)
    assert np.all(dist <= index.radius[page_of])


def test_two_level_codes_are_finer_than_float16(model: ox.FactorModel, index: ann.PageIndex) -> None:
    rows = oa.stored_rows(model, index)
    err = np.abs(rows - model.item_factors).max()
    half = np.abs(model.item_factors.astype(np.float16).astype(np.float32) - model.item_factors).max()
    assert err <= half


def _run(session: ort.InferenceSession, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    scores, indices = session.run(None, ox.feeds(N, **kw))  # type: ignore[arg-type]
    return scores, indices


def _assert_exact_and_full(
    model: ox.FactorModel, index: ann.PageIndex, session: ort.InferenceSession, share: float, k: int
) -> None:
    rng = np.random.default_rng(int(share * 1000) + k)
    rows = oa.stored_rows(model, index)
    for user in (0, 7, -1):
        mask = rng.random(N) < share
        hist = rng.integers(0, N, 4) if user < 0 else np.zeros(0, np.int64)
        weights = np.ones(hist.size, np.float32)
        scores, indices = _run(
            session, user_index=user, history_items=hist, history_weights=weights, exclude_mask=mask, k=k
        )
        assert scores.shape == (k,) and indices.shape == (k,)
        served = indices[np.isfinite(scores)]
        assert not mask[served].any()
        assert served.size == min(k, int((~mask).sum()))
        assert np.unique(served).size == served.size
        vec = model.user_factors[user] if user >= 0 else (weights @ rows[hist]) @ model.projection
        np.testing.assert_allclose(scores[np.isfinite(scores)], rows[served] @ vec, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores[np.isfinite(scores)]) <= 0)


@pytest.mark.parametrize("share", [0.0, 0.2, 0.45, 0.6, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("k", [1, 20, 500])
def test_filters_are_exact_and_lists_full(
    model: ox.FactorModel, index: ann.PageIndex, session: ort.InferenceSession, share: float, k: int
) -> None:
    """No excluded item is ever served, the list has min(k, allowed) items, and each score is the
    item's exact score on the stored rows."""
    _assert_exact_and_full(model, index, session, share, k)


@pytest.fixture(scope="module")
def paged_session(model: ox.FactorModel, index: ann.PageIndex) -> ort.InferenceSession:
    """The graph with a low cut for scoring allowed items one by one: filtered requests with more
    than 100 allowed items go through the pages that hold allowed items."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oa, "EXACT_ROWS_MAX", 100)
        graph = oa.build_factor_ann_model(model, index, probe=40)
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("share", [0.55, 0.8, 0.95, 0.99])
@pytest.mark.parametrize("k", [1, 20, 500])
def test_filtered_requests_through_pages_are_exact_and_full(
    model: ox.FactorModel, index: ann.PageIndex, paged_session: ort.InferenceSession, share: float, k: int
) -> None:
    """The paged path of heavily filtered requests (and its fallback when it finds fewer than k)."""
    _assert_exact_and_full(model, index, paged_session, share, k)


def test_category_filter_opens_the_categorys_pages(
    model: ox.FactorModel, index: ann.PageIndex, paged_session: ort.InferenceSession
) -> None:
    """Everything but one cluster of items excluded (a narrow category): the answer holds only
    that cluster's items and matches the exact top-20 over them."""
    rows = oa.stored_rows(model, index)
    groups = ann.cluster_labels(model.item_factors, 12, seed=1)
    hits = []
    for user, group in ((0, 0), (3, 5), (9, 11), (21, 2)):
        mask = groups != group
        scores, indices = _run(paged_session, user_index=user, exclude_mask=mask, k=20)
        served = indices[np.isfinite(scores)]
        assert not mask[served].any() and served.size == min(20, int((~mask).sum()))
        _, ref = ox._topk(rows @ model.user_factors[user], mask, 20)
        hits.append(len(set(served.tolist()) & set(ref.tolist())) / 20)
    assert np.mean(hits) >= 0.95
    # more wanted than the cluster holds: the pages run out, the fallback serves every allowed item
    mask = groups != 4
    scores, indices = _run(paged_session, user_index=1, exclude_mask=mask, k=int((~mask).sum()) + 50)
    served = indices[np.isfinite(scores)]
    assert not mask[served].any() and np.array_equal(np.sort(served), np.flatnonzero(~mask))


def test_mostly_filtered_requests_are_answered_exactly(
    model: ox.FactorModel, index: ann.PageIndex, session: ort.InferenceSession
) -> None:
    """A mask that leaves a few items (a search pool, a narrow category) gets the exact top-k."""
    rows = oa.stored_rows(model, index)
    rng = np.random.default_rng(5)
    mask = np.ones(N, bool)
    mask[rng.choice(N, 300, replace=False)] = False
    scores, indices = _run(session, user_index=3, exclude_mask=mask, k=300)
    ref_scores, ref_indices = ox._topk(rows @ model.user_factors[3], mask, 300)
    assert set(indices.tolist()) == set(ref_indices.tolist())
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_recall_and_check(model: ox.FactorModel, index: ann.PageIndex) -> None:
    check = oa.graph_recall(model, index, 60, n_queries=30)
    assert check["served_excluded_items"] == 0 and check["short_lists"] == 0
    assert check["recall_validation_users"] >= 0.95 and check["recall_random_queries"] >= 0.9
    assert check["requests"] == 30 * 6
    sweep = oa.probe_recall(model.item_factors, index, model.user_factors, [1, 10, index.n_pages])
    assert sweep[1] <= sweep[10] <= sweep[index.n_pages] == 1.0


def test_export_chooses_by_size_and_recall(model: ox.FactorModel) -> None:
    options = {"max_probe_share": 0.6, "page": 32, "check_users": 20}
    graph, record = oa.export_factor_model(model, ann_min_bytes=1, check_users=10, ann_options=options)
    assert record["graph"] == oa.SCORING, record
    info = record["ann"]
    assert info["check"]["recall_validation_users"] >= 0.97
    assert {p.key: p.value for p in graph.metadata_props}[ox.META_SCORING] == oa.SCORING
    # an unreachable target: the exporter keeps the scan graphs and says why
    _, record = oa.export_factor_model(
        model, ann_min_bytes=1, ann_target_recall=1.01, check_users=10, ann_options=options
    )
    assert record["graph"] in ("int8-candidates", "exact") and "rejected" in record["ann"]
    # small catalogues never try the index
    _, record = oa.export_factor_model(model, check_users=10)
    assert "ann" not in record


def test_many_allowed_fallback_ranks_all_codes(
    model: ox.FactorModel, index: ann.PageIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above EXACT_ROWS_MAX allowed items the fallback ranks every item's codes, then re-scores."""
    monkeypatch.setattr(oa, "EXACT_ROWS_MAX", 100)
    graph = oa.build_factor_ann_model(model, index, probe=40)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = oa.stored_rows(model, index)
    rng = np.random.default_rng(11)
    for share, k in ((0.6, 20), (0.95, 200), (0.99, 500)):
        mask = rng.random(N) < share
        scores, indices = _run(sess, user_index=5, exclude_mask=mask, k=k)
        served = indices[np.isfinite(scores)]
        assert not mask[served].any() and served.size == min(k, int((~mask).sum()))
        ref_scores, ref_indices = ox._topk(rows @ model.user_factors[5], mask, k)
        assert (
            len(set(served.tolist()) & set(ref_indices[np.isfinite(ref_scores)].tolist()))
            >= 0.99 * served.size
        )
