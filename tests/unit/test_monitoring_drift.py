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
