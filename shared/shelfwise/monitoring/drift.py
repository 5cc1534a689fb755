"""Distribution drift and beyond-accuracy statistics of served lists.

PSI and Jensen-Shannon between a reference (the bundle manifest's ``reference`` section) and what a
window served or saw; coverage, Gini popularity concentration and fallback share of served lists.
Every drift function returns None below its minimum sample size: small windows must not alarm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.errors import InputError

OTHER = "__other__"


def _normalise(counts: Sequence[float] | np.ndarray, eps: float) -> np.ndarray:
    a = np.asarray(counts, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0 or np.any(a < 0) or not np.all(np.isfinite(a)):
        raise InputError("counts must be a non-empty 1-D array of finite non-negative numbers")
    total = a.sum()
    p = a / total if total > 0 else np.full(len(a), 1.0 / len(a))
    # Smoothing keeps empty bins finite: an empty bin on one side is a large but bounded term.
    p = p + eps
    return p / p.sum()


def psi(
    reference: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = 1e-4
) -> float:
    """Population stability index, sum((a - r) * ln(a / r)) over aligned bins (0 = identical)."""
    r, a = _normalise(reference, eps), _normalise(actual, eps)
    if len(r) != len(a):
        raise InputError("reference and actual need the same bins")
    return float(np.sum((a - r) * np.log(a / r)))


def js_divergence(
    p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray, eps: float = 1e-12
) -> float:
    """Jensen-Shannon divergence in bits, in [0, 1]."""
    pp, qq = _normalise(p, eps), _normalise(q, eps)
    if len(pp) != len(qq):
        raise InputError("both distributions need the same bins")
    m = 0.5 * (pp + qq)

    def kl(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.sum(x * np.log2(x / y)))

    return max(0.0, min(1.0, 0.5 * kl(pp, m) + 0.5 * kl(qq, m)))


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts of ``values`` in the reference bins; values outside fall into the edge bins."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0):
        raise InputError("histogram edges must be strictly increasing with at least two edges")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    idx = np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)
    return np.bincount(idx, minlength=len(e) - 1).astype(np.float64)


@dataclass(frozen=True)
class Histogram:
    edges: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def parse(cls, raw: Any, name: str) -> Histogram:
        """From ``{"bins": edges, "counts": counts}`` (edges has one more entry than counts)."""
        if not isinstance(raw, Mapping) or "bins" not in raw or "counts" not in raw:
            raise InputError(f"reference.{name} must be an object with bins and counts")
        edges, counts = [float(x) for x in raw["bins"]], [float(x) for x in raw["counts"]]
        if len(edges) != len(counts) + 1:
            raise InputError(f"reference.{name}: {len(edges)} edges for {len(counts)} counts")
        return cls(tuple(edges), tuple(counts))


@dataclass(frozen=True)
class DriftReference:
    """The bundle manifest's reference distributions (docs/contracts.md, manifest ``reference``)."""

    score_histogram: Histogram | None = None
    category_mix: dict[str, float] = field(default_factory=dict)
    history_popularity: Histogram | None = None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> DriftReference:
        ref = manifest.get("reference") or {}
        if not isinstance(ref, Mapping):
            raise InputError("manifest.reference must be an object")
        mix = ref.get("category_mix") or {}
        if isinstance(mix, Mapping) and "categories" in mix and "counts" in mix:
            mix = dict(zip(mix["categories"], mix["counts"], strict=True))
        if not isinstance(mix, Mapping):
            raise InputError("manifest.reference.category_mix must map category -> share")
        return cls(
            score_histogram=Histogram.parse(ref["score_histogram"], "score_histogram")
            if ref.get("score_histogram")
            else None,
            category_mix={str(k): float(v) for k, v in mix.items()},
            history_popularity=Histogram.parse(ref["history_popularity"], "history_popularity")
            if ref.get("history_popularity")
            else None,
        )


def score_psi(scores: np.ndarray, reference: Histogram, min_samples: int, eps: float = 1e-4) -> float | None:
    """PSI of served scores against the bundle's score histogram, or None below ``min_samples``."""
    if len(scores) < min_samples:
        return None
    return psi(reference.counts, bin_counts(scores, reference.edges), eps)


def category_psi(
    categories: pa.Array | pa.ChunkedArray,
    reference: Mapping[str, float],
    min_samples: int,
    eps: float = 1e-4,
) -> float | None:
    """PSI of the category mix of a window's behaviour events against the reference mix.

    Categories absent from the reference share one ``__other__`` bin, so a brand-new category
    shows up as drift instead of being dropped.
    """
    values = pc.drop_null(categories)
    if len(values) < min_samples or not reference:
        return None
    vc = pc.value_counts(values)
    seen = dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))
    keys = sorted(reference)
    ref = [reference[k] for k in keys] + [reference.get(OTHER, 0.0)]
    act = [float(seen.get(k, 0)) for k in keys] + [
        float(sum(v for k, v in seen.items() if k not in reference))
    ]
    return psi(ref, act, eps)


def gini(counts: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of exposure over items (0 = every item equally often, ->1 = one item)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() <= 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * np.sum(cum) / cum[-1]) / n)


def coverage(distinct_items_served: int, catalogue_size: int) -> float | None:
    """Share of the catalogue that appeared in at least one served list."""
    if catalogue_size <= 0:
        return None
    return min(1.0, distinct_items_served / catalogue_size)


def popularity_buckets(
    item_ids: pa.Array | pa.ChunkedArray, popularity_rank: Mapping[str, int], buckets: int
) -> np.ndarray:
    """Histogram of served items over popularity-rank buckets (bucket 0 = the most popular items).

    Items the popularity table does not know fall into the last (coldest) bucket.
    """
    n_ranked = max(1, len(popularity_rank))
    vc = pc.value_counts(pc.drop_null(item_ids))
    out = np.zeros(buckets, dtype=np.float64)
    for item, count in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
        rank = popularity_rank.get(item)
        b = buckets - 1 if rank is None else min(buckets - 1, rank * buckets // n_ranked)
        out[b] += count
    return out


def popularity_rank(item_ids: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Rank items by how often they occur (0 = most frequent): the window's own popularity."""
    vc = pc.value_counts(pc.drop_null(item_ids))
    counts = np.asarray(vc.field("counts").to_numpy(zero_copy_only=False))
    values = vc.field("values").to_pylist()
    order = np.argsort(-counts, kind="stable")
    return {values[i]: r for r, i in enumerate(order)}


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def popularity_percentiles(
    item_ids: pa.Array | pa.ChunkedArray, popularity_rank: Mapping[str, int]
) -> np.ndarray:
    """Each served item's place in the window's popularity ranking, in [0, 1] (0 = the most popular).

    Items the window's behaviour never touched are the coldest (1.0).
    """
    n_ranked = max(1, len(popularity_rank))
    ids = item_ids.to_pylist()
    return np.fromiter(
        (1.0 if (r := popularity_rank.get(i)) is None else r / n_ranked for i in ids), np.float64, len(ids)
    )


@dataclass(frozen=True)
class ShiftBound:
    """Challenger minus champion popularity percentile of served items (each shopper's mean, averaged
    over shoppers), with its lower bound.

    ``lower`` bounds ``|shift|`` from below at confidence ``1 - alpha`` (0 when the interval holds 0).
    """

    shift: float
    lower: float
    units_challenger: int
    units_champion: int
    alpha: float


def _t_quantile(p: float, df: float) -> float:
    """Student-t quantile by the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _shopper_means(values: np.ndarray, units: np.ndarray) -> tuple[float, float, int]:
    """Mean over shoppers of each shopper's mean value, its variance, and the number of shoppers."""
    _, inverse = np.unique(units, return_inverse=True)
    g = int(inverse.max()) + 1 if len(inverse) else 0
    means = np.bincount(inverse, weights=values, minlength=g) / np.bincount(inverse, minlength=g)
    return float(means.mean()), float(means.var(ddof=1)) / g if g > 1 else 0.0, g


def popularity_shift_bound(
    challenger: np.ndarray,
    challenger_units: np.ndarray,
    champion: np.ndarray,
    champion_units: np.ndarray,
    alpha: float,
    min_units: int,
) -> ShiftBound | None:
    """Lower confidence bound of how far the challenger's served items moved in popularity.

    ``challenger`` / ``champion`` are the served items' popularity percentiles
    (:func:`popularity_percentiles`) and ``*_units`` the shopper (or list) each came from: one
    shopper's items are correlated, so shoppers are the independent units: Welch's t on the
    shoppers' means (Welch-Satterthwaite degrees of freedom, the t quantile at ``alpha / 2`` for
    ``|shift|``; an item-weighted cluster-robust variance is overconfident with a dozen shoppers of
    unequal list counts). None while either side has fewer than ``min_units`` shoppers.
    """
    if not 0 < alpha < 1:
        raise ValueError("0 < alpha < 1")
    if len(challenger) == 0 or len(champion) == 0:
        return None
    m_c, v_c, g_c = _shopper_means(challenger, challenger_units)
    m_b, v_b, g_b = _shopper_means(champion, champion_units)
    if min(g_c, g_b) < max(2, min_units):
        return None
    shift = m_c - m_b
    var = v_c + v_b
    if var <= 0:
        lower = abs(shift)
    else:
        df = var**2 / (v_c**2 / (g_c - 1) + v_b**2 / (g_b - 1)) if v_c > 0 or v_b > 0 else 1.0
        lower = max(0.0, abs(shift) - _t_quantile(1 - alpha / 2, max(df, 1.0)) * math.sqrt(var))
    return ShiftBound(shift, lower, g_c, g_b, alpha)
