"""Drift and beyond-accuracy statistics: golden numbers and properties."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.errors import InputError
from shelfwise.monitoring import drift


def test_psi_golden() -> None:
    # (0.5-0.25)ln(0.5/0.25) + (0.5-0.75)ln(0.5/0.75)
    expected = 0.25 * math.log(2) + (-0.25) * math.log(0.5 / 0.75)
    assert drift.psi([1, 3], [2, 2], eps=0) == pytest.approx(expected)
    assert drift.psi([5, 5, 5], [1, 1, 1]) == pytest.approx(0.0, abs=1e-12)


def test_js_golden_and_bounds() -> None:
    assert drift.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0, abs=1e-6)
    assert drift.js_divergence([1, 1], [1, 1]) == pytest.approx(0.0, abs=1e-12)


def test_bin_counts_clip_outliers_into_edge_bins() -> None:
    counts = drift.bin_counts(np.array([-5, 0.1, 0.5, 0.99, 1.0, 7, np.nan]), [0, 0.5, 1.0])
    assert counts.tolist() == [2, 4]


def test_gini_golden() -> None:
    assert drift.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    # one of four items gets everything: (n + 1 - 2*sum(cum)/total)/n = (5 - 2*10/4... ) -> 0.75
    assert drift.gini([0, 0, 0, 4]) == pytest.approx(0.75)


def test_score_psi_guard_and_detection() -> None:
    ref = drift.Histogram.parse(
        {"bins": [0, 0.25, 0.5, 0.75, 1.0], "counts": [10, 20, 40, 30]}, "score_histogram"
    )
    rng = np.random.default_rng(0)
    assert drift.score_psi(rng.uniform(0, 1, 100), ref, min_samples=500) is None
    same = np.concatenate(
        [rng.uniform(a, a + 0.25, n) for a, n in ((0, 100), (0.25, 200), (0.5, 400), (0.75, 300))]
    )
    assert drift.score_psi(same, ref, min_samples=500) < 0.01
    low = rng.uniform(0, 0.25, 1000)
    assert drift.score_psi(low, ref, min_samples=500) > 1.0


def test_category_psi_counts_new_categories_as_other() -> None:
    ref = {"shoes": 0.5, "books": 0.5}
    same = pa.array(["shoes", "books"] * 300)
    assert drift.category_psi(same, ref, min_samples=500) < 0.01
    new = pa.array(["toys"] * 600)
    assert drift.category_psi(new, ref, min_samples=500) > 1.0
    assert drift.category_psi(pa.array(["toys"] * 10), ref, min_samples=500) is None


def test_reference_from_manifest_accepts_the_contract_shape() -> None:
    ref = drift.DriftReference.from_manifest(
        {
            "reference": {
                "score_histogram": {"bins": [0, 1, 2], "counts": [3, 4]},
                "category_mix": {"a": 0.7, "b": 0.3},
                "history_popularity": {"bins": [0, 1, 2], "counts": [1, 1]},
            }
        }
    )
    assert ref.score_histogram is not None and ref.score_histogram.edges == (0.0, 1.0, 2.0)
    assert ref.category_mix == {"a": 0.7, "b": 0.3}
    with pytest.raises(InputError):
        drift.DriftReference.from_manifest(
            {"reference": {"score_histogram": {"bins": [0, 1], "counts": [1, 2]}}}
        )


def test_popularity_buckets_put_unknown_items_in_the_cold_bucket() -> None:
    ranks = drift.popularity_rank(pa.array(["a"] * 5 + ["b"] * 3 + ["c"]))
    assert ranks == {"a": 0, "b": 1, "c": 2}
    b = drift.popularity_buckets(pa.array(["a", "a", "zzz"]), ranks, buckets=3)
    assert b.tolist() == [2, 0, 1]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1000), min_size=2, max_size=20), st.data())
def test_psi_and_js_are_non_negative_and_symmetric_js(ref: list[float], data: st.DataObject) -> None:
    act = data.draw(st.lists(st.floats(0, 1000), min_size=len(ref), max_size=len(ref)))
    assert drift.psi(ref, act) >= -1e-12
    js = drift.js_divergence(ref, act)
    assert 0.0 <= js <= 1.0
    assert js == pytest.approx(drift.js_divergence(act, ref), abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 100), min_size=1, max_size=50))
def test_gini_in_unit_interval(counts: list[int]) -> None:
    assert 0.0 <= drift.gini(counts) < 1.0


def test_popularity_percentiles_rank_the_window_and_put_unknown_items_last() -> None:
    ranks = drift.popularity_rank(pa.array(["a", "a", "a", "b", "b", "c"]))
    got = drift.popularity_percentiles(pa.array(["a", "b", "c", "zz"]), ranks)
    assert got.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_popularity_shift_bound_golden() -> None:
    # Challenger: shoppers with means 0.8, 0.6, 0.7; champion: four shoppers with means 0.2, 0.2, 0.0, 0.4.
    c, cu = np.array([0.8, 0.8, 0.6, 0.7]), np.array(["0", "0", "1", "2"])
    b, bu = np.array([0.1, 0.3, 0.2, 0.2, 0.0, 0.4]), np.array(["a", "a", "b", "b", "c", "d"])
    got = drift.popularity_shift_bound(c, cu, b, bu, alpha=0.05, min_units=3)
    assert got is not None and got.shift == pytest.approx(0.7 - 0.2)
    v_c, v_b = 0.01 / 3, (0.08 / 3) / 4  # sample variances of the shoppers' means / shoppers
    df = (v_c + v_b) ** 2 / (v_c**2 / 2 + v_b**2 / 3)
    t = drift._t_quantile(0.975, df)
    assert got.lower == pytest.approx(0.5 - t * math.sqrt(v_c + v_b))
    assert 0 < got.lower < 0.5
    assert drift.popularity_shift_bound(c, cu, b, bu, alpha=0.05, min_units=4) is None


def test_t_quantile_matches_tables() -> None:
    # Student-t table values: t(0.975, 10) = 2.228, t(0.995, 5) = 4.032, t(0.9995, 20) = 3.850.
    assert drift._t_quantile(0.975, 10) == pytest.approx(2.228, abs=2e-3)
    assert drift._t_quantile(0.995, 5) == pytest.approx(4.032, abs=1e-2)
    assert drift._t_quantile(0.9995, 20) == pytest.approx(3.850, abs=5e-3)


def _shoppers(
    rng: np.random.Generator, n: int, centre: float, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    """Served items' percentiles of ``n`` shoppers with 1-8 lists of 10 items each, clustered by shopper."""
    taste = centre + spread * rng.standard_normal(n)
    units = np.repeat(np.arange(n), 10 * rng.integers(1, 9, n))
    return np.clip(taste[units] + 0.1 * rng.standard_normal(len(units)), 0, 1), units


def test_popularity_shift_bound_holds_its_alpha_with_clustered_shoppers() -> None:
    rng = np.random.default_rng(3)
    alpha, runs, over, over_flat = 0.05, 1500, 0, 0
    for _ in range(runs):
        c, cu = _shoppers(rng, 12, 0.5, 0.12)
        b, bu = _shoppers(rng, 200, 0.5, 0.12)
        got = drift.popularity_shift_bound(c, cu, b, bu, alpha=alpha, min_units=5)
        assert got is not None
        over += got.lower > 0
        # Items as units (each item its own shopper) ignore the clustering and are overconfident.
        flat = drift.popularity_shift_bound(
            c, np.arange(len(c)), b, np.arange(len(b)), alpha=alpha, min_units=5
        )
        assert flat is not None
        over_flat += flat.lower > 0
    assert over / runs <= alpha * 1.3
    assert over_flat / runs > 3 * alpha


def test_a_random_item_challenger_is_far_from_a_personalised_champion_on_few_shoppers() -> None:
    rng = np.random.default_rng(4)
    c, cu = _shoppers(rng, 6, 0.95, 0.02)  # random items: almost all cold
    b, bu = _shoppers(rng, 250, 0.6, 0.15)
    got = drift.popularity_shift_bound(c, cu, b, bu, alpha=0.0025, min_units=5)
    assert got is not None and got.lower > 0.2
    with pytest.raises(ValueError):
        drift.popularity_shift_bound(c, cu, b, bu, alpha=0.0, min_units=5)
