"""Offline metrics: golden values computed by hand, properties with hypothesis, the split protocol."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.errors import InputError
from shelfwise.evaluation import (
    coverage,
    evaluate_ranking,
    hits_matrix,
    metrics_from_hits,
    popularity_percentile,
    summarise,
    top_k,
)
from shelfwise.training.data import interactions_from_table, temporal_split


def test_golden_values_two_users() -> None:
    # User 0: ranked [1, 2, 3, 4], targets {2, 4}: hits at ranks 2 and 4.
    #   DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606
    #   IDCG (2 targets) = 1 + 1/log2(3) = 1.630930  -> ndcg = 0.650921
    #   recall = 2/2; AP = (1/2 + 2/4) / min(2, 4) = 0.5; hit = 1; RR = 1/2
    # User 1: ranked [5, 6, 7, 8], target {9}: nothing.
    rec = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    targets = [np.array([2, 4]), np.array([9])]
    per = metrics_from_hits(hits_matrix(rec, targets), np.array([2, 1]))
    assert per["ndcg"][0] == pytest.approx(0.650921, abs=1e-6)
    assert per["recall"].tolist() == [1.0, 0.0]
    assert per["map"].tolist() == [0.5, 0.0]
    assert per["hitrate"].tolist() == [1.0, 0.0]
    assert per["mrr"].tolist() == [0.5, 0.0]
    out = summarise(rec, targets, n_items=20, popularity=np.arange(20, dtype=float), k=4)
    assert out["ndcg@4"] == pytest.approx(0.650921 / 2, abs=1e-6)
    assert out["recall@4"] == 0.5 and out["map@4"] == 0.25 and out["hitrate@4"] == 0.5 and out["mrr"] == 0.25
    assert out["coverage"] == pytest.approx(8 / 20)
    # popularity percentile of item i in 0..19 is i/20; mean over items 1..8 = 4.5/20
    assert out["popularity_bias"] == pytest.approx(4.5 / 20)
    assert out["users"] == 2


def test_golden_more_targets_than_k() -> None:
    # ranked [1, 2], targets {1, 2, 3}, K = 2: ideal DCG uses min(3, 2) = 2 slots -> ndcg 1.
    per = metrics_from_hits(hits_matrix(np.array([[1, 2]]), [np.array([1, 2, 3])]), np.array([3]))
    assert per["ndcg"][0] == pytest.approx(1.0)
    assert per["recall"][0] == pytest.approx(2 / 3)
    assert per["map"][0] == pytest.approx(1.0)  # (1/1 + 2/2) / min(3, 2)


def test_golden_single_hit_at_rank_three() -> None:
    per = metrics_from_hits(np.array([[False, False, True]]), np.array([1]))
    assert per["ndcg"][0] == pytest.approx(1 / math.log2(4))  # 0.5
    assert per["map"][0] == pytest.approx(1 / 3)
    assert per["mrr"][0] == pytest.approx(1 / 3)


def test_coverage_and_popularity_percentile() -> None:
    assert coverage(np.array([[0, 1], [1, 2], [-1, -1]]), 10) == pytest.approx(0.3)
    assert popularity_percentile(np.array([5, 1, 3, 3])).tolist() == [0.75, 0.0, 0.25, 0.25]
    with pytest.raises(InputError):
        metrics_from_hits(np.zeros((1, 3), bool), np.array([0]))


def test_top_k_ties_exclusion_and_padding() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    exclude = np.array([[False, False, True, False, False]])
    assert top_k(scores, exclude, 3).tolist() == [[1, 4, 3]]  # tie 1 vs 4: lower index first
    assert top_k(scores, np.ones((1, 5), bool), 2).tolist() == [[-1, -1]]
    assert top_k(scores, None, 7).tolist() == [[1, 2, 4, 3, 0, -1, -1]]


rankings = st.integers(1, 6).flatmap(
    lambda users: st.tuples(
        st.lists(st.permutations(list(range(12))), min_size=users, max_size=users),
        st.lists(st.sets(st.integers(0, 14), min_size=1, max_size=6), min_size=users, max_size=users),
        st.integers(1, 12),
    )
)


@settings(max_examples=60, deadline=None)
@given(rankings)
def test_metrics_are_bounded_and_consistent(case: tuple[list[list[int]], list[set[int]], int]) -> None:
    perms, target_sets, k = case
    rec = np.array(perms)[:, :k]
    targets = [np.array(sorted(t)) for t in target_sets]
    per = metrics_from_hits(hits_matrix(rec, targets), np.array([len(t) for t in targets]))
    for name, values in per.items():
        assert np.all((values >= 0) & (values <= 1 + 1e-12)), name
    # hitrate is 1 exactly when recall > 0 and when mrr > 0
    assert np.array_equal(per["hitrate"] > 0, per["recall"] > 0)
    assert np.array_equal(per["hitrate"] > 0, per["mrr"] > 0)
    # ndcg is 1 exactly when the first min(|T|, k) slots are all targets
    for row, t in enumerate(targets):
        perfect = all(x in set(t.tolist()) for x in rec[row, : min(len(t), k)])
        assert (abs(per["ndcg"][row] - 1) < 1e-9) == perfect


@settings(max_examples=40, deadline=None)
@given(rankings, st.randoms(use_true_random=False))
def test_user_order_and_target_order_do_not_matter(case: tuple, rnd) -> None:  # type: ignore[no-untyped-def]
    perms, target_sets, k = case
    rec = np.array(perms)
    targets = [np.array(sorted(t)) for t in target_sets]
    pop = np.arange(15, dtype=float)
    base = summarise(rec, targets, 15, pop, k)
    order = list(range(len(targets)))
    rnd.shuffle(order)
    shuffled_targets = [np.array(rnd.sample(sorted(target_sets[i]), len(target_sets[i]))) for i in order]
    other = summarise(rec[order], shuffled_targets, 15, pop, k)
    assert other == pytest.approx(base)


@settings(max_examples=40, deadline=None)
@given(rankings)
def test_recall_and_hitrate_grow_with_k(case: tuple) -> None:  # type: ignore[type-arg]
    perms, target_sets, _ = case
    rec = np.array(perms)
    targets = [np.array(sorted(t)) for t in target_sets]
    n = np.array([len(t) for t in targets])
    prev = None
    for k in range(1, 13):
        per = metrics_from_hits(hits_matrix(rec[:, :k], targets), n)
        if prev is not None:
            assert np.all(per["recall"] >= prev["recall"] - 1e-12)
            assert np.all(per["hitrate"] >= prev["hitrate"])
        prev = per


def _table(rows: list[tuple[str, str, int, str]]) -> pa.Table:
    """(user, item, day offset, event_type) rows in the curated schema's relevant columns."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    weights = {"view": 1.0, "purchase": 8.0, "impression": 0.0}
    return pa.table(
        {
            "event_type": pa.array([r[3] for r in rows]).dictionary_encode(),
            "user_id": [r[0] for r in rows],
            "session_id": [f"{r[0]}-{r[2]}" for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": pa.array([t0 + timedelta(days=r[2]) for r in rows], pa.timestamp("ms", tz="UTC")),
            "weight": pa.array([weights[r[3]] for r in rows], pa.float32()),
        }
    )


def test_temporal_split_targets_by_hand() -> None:
    rows = [
        ("u1", "a", 0, "view"),
        ("u1", "b", 1, "purchase"),
        ("u2", "a", 2, "view"),
        ("u2", "c", 3, "view"),
        ("u3", "c", 4, "view"),
        ("u3", "a", 5, "impression"),  # weight 0: ignored
        ("u1", "a", 6, "view"),
        ("u2", "b", 6, "view"),
        ("u1", "b", 7, "purchase"),  # seen before the cut: not a target
        ("u1", "c", 8, "view"),  # new for u1: target
        ("u2", "z", 8, "view"),  # unknown item: unreachable
        ("u9", "a", 9, "view"),  # unknown user: not evaluated
    ]
    data = interactions_from_table(_table(rows))
    assert data.n_events == 11 and data.user_ids.tolist() == ["u1", "u2", "u3", "u9"]
    split = temporal_split(data, 0.5)
    # 11 events; the 'lower' 50% quantile is the 6th event's time (day 6): before = days 0..4.
    assert split.info["cut"].startswith("2026-01-07")
    assert split.train.item_ids.tolist() == ["a", "b", "c"]
    got = {
        split.train.user_ids[u]: sorted(split.train.item_ids[t].tolist())
        for u, t in zip(split.users, split.targets, strict=True)
    }
    assert got == {"u1": ["c"], "u2": ["b"]}
    assert split.info["unreachable_targets"] == 1
    # evaluate_ranking splits warm/cold by training history size (all cold here: < 5 items).
    rec = np.array([[2, 0, 1], [1, 0, 2]])
    out = evaluate_ranking(rec, split.targets, np.array([2, 2]), 3, np.ones(3), 3)
    assert out["segments"]["cold"]["users"] == 2 and out["segments"]["warm"] == {"users": 0}
    assert out["hitrate@3"] == 1.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=8, max_size=8),
    st.lists(st.lists(st.booleans(), min_size=8, max_size=8), min_size=1, max_size=5),
    st.integers(1, 9),
)
def test_rank_global_equals_top_k_on_broadcast_scores(
    scores: list[int], seen: list[list[bool]], k: int
) -> None:
    import scipy.sparse as sp

    from shelfwise.evaluation import rank_global

    s = np.array(scores, dtype=np.float32)
    ex = sp.csr_matrix(np.array(seen, dtype=np.float32))
    users = np.arange(len(seen))
    expected = top_k(np.tile(s, (len(seen), 1)), ex, k)
    assert rank_global(s, users, ex, k).tolist() == expected.tolist()


def _top_k_by_sorting(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """The definition, row by row: stable sort by -score (ties to the lower index), -1 for excluded."""
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for r in range(scores.shape[0]):
        s = np.where(exclude[r], -np.inf, scores[r]).astype(np.float32)
        order = np.argsort(-s, kind="stable")[:k]
        order = order[np.isfinite(s[order])]
        out[r, : order.size] = order
    return out


@pytest.mark.parametrize("levels", [None, 3, 50, 5000])
def test_top_k_pruned_path_matches_the_definition(levels: int | None) -> None:
    # Rows of 3,000 items take the chunk-pruned fast path; few score levels force exact-path rows
    # (ties at the chunk threshold), and dense exclusions leave some rows with fewer than k items.
    rng = np.random.default_rng(levels or 0)
    scores = rng.random((40, 3000))
    if levels is not None:
        scores = np.round(scores * levels)
    scores[3, rng.integers(0, 3000, 4)] = 99.0  # several equal maxima
    exclude = rng.random((40, 3000)) < rng.random((40, 1)) ** 4
    exclude[5, :-2] = True  # two allowed items only
    for k in (1, 10, 25):
        assert top_k(scores, exclude, k).tolist() == _top_k_by_sorting(scores, exclude, k).tolist()


def test_rank_users_threads_give_the_same_ranking() -> None:
    import scipy.sparse as sp

    from shelfwise.evaluation import rank_users

    rng = np.random.default_rng(7)
    factors = rng.random((300, 8), dtype=np.float32)
    items = rng.random((8, 2000), dtype=np.float32)
    seen = sp.random(300, 2000, density=0.01, format="csr", random_state=3, dtype=np.float32)
    users = rng.permutation(300)[:250]

    def score(u: np.ndarray) -> np.ndarray:
        return factors[u] @ items

    one = rank_users(score, users, seen, 2000, 10, batch_items_budget=20_000)
    two = rank_users(score, users, seen, 2000, 10, batch_items_budget=20_000, threads=2)
    assert one.tolist() == two.tolist()
    assert one.tolist() == _top_k_by_sorting(score(users), seen[users].toarray() > 0, 10).tolist()
