"""Candidate families, their hyper-parameter grids, and the search on a validation window.

The training window is split again in time (its first 80% fit, the rest validates); each
family's grid is scored there and the winner per family is chosen on validation only. The test
window is touched once per family afterwards, by the job, so the reported numbers are honest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from shelfwise.errors import InputError
from shelfwise.evaluation import evaluate_ranking, rank_global, rank_users
from shelfwise.training.base import Recommender, item_popularity
from shelfwise.training.data import Split
from shelfwise.training.itemknn import ItemKNN
from shelfwise.training.mf import ALS
from shelfwise.training.popularity import Popularity

BASELINE_FAMILIES = ("popularity", "itemknn")

# family -> (model class, grids by search level). "none" is the single default configuration.
GRIDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "popularity": {
        "none": [{"window_days": 30}],
        "small": [{"window_days": w} for w in (7, 30, None)],
        "full": [{"window_days": w} for w in (3, 7, 14, 30, 90, None)],
    },
    # All-time popularity: no candidate, the reference the "ItemKNN ~2x popularity" folklore uses.
    "popularity_all": {level: [{"window_days": None}] for level in ("none", "small", "full")},
    "itemknn": {
        "none": [{"neighbours": 100, "basis": "user"}],
        "small": [{"neighbours": n, "basis": b} for n in (20, 200) for b in ("user", "session")],
        "full": [
            {"neighbours": n, "basis": b, "shrink": s}
            for n in (20, 50, 100, 200)
            for b in ("user", "session")
            for s in (0.0, 10.0)
        ],
    },
    "itemknn_recent": {
        "none": [{"neighbours": 100, "basis": "user", "half_life_days": 30, "popularity_prior": 0.05}],
        "small": [
            {"neighbours": n, "basis": b, "half_life_days": h, "popularity_prior": p}
            for n, b in ((20, "user"), (200, "session"))
            for h in (14, 60)
            for p in (0.05, 0.2)
        ],
        "full": [
            {"neighbours": n, "basis": b, "half_life_days": h, "popularity_prior": p, "prior_window_days": w}
            for n in (50, 100)
            for b in ("user", "session")
            for h in (7, 14, 30, 90)
            for p in (0.02, 0.05, 0.2)
            for w in (7, 30)
        ],
    },
    "als": {
        "none": [{"factors": 64, "regularization": 0.1, "alpha": 1.0}],
        "small": [
            {"factors": f, "regularization": 0.1, "alpha": a, "half_life_days": h}
            for f in (64,)
            for a in (1.0, 5.0)
            for h in (None, 30)
        ],
        "full": [
            {"factors": f, "regularization": r, "alpha": a, "half_life_days": h}
            for f in (32, 64, 128)
            for r in (0.01, 0.1, 1.0)
            for a in (1.0, 5.0, 20.0)
            for h in (None, 30)
        ],
    },
}
FAMILIES: tuple[str, ...] = tuple(GRIDS)


def make_model(family: str, params: dict[str, Any], *, threads: int = 2) -> Recommender:
    """A fresh, unfitted model of ``family`` with ``params``."""
    if family in {"popularity", "popularity_all"}:
        pop = Popularity(**params)
        pop.algorithm = family
        return pop
    if family in {"itemknn", "itemknn_recent"}:
        knn = ItemKNN(**params, threads=threads)
        knn.algorithm = family
        return knn
    if family == "als":
        return ALS(**params, threads=threads)
    raise InputError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


def evaluate_model(model: Recommender, split: Split, k: int, *, threads: int = 1) -> dict[str, Any]:
    """Fit-free: rank every test user of ``split`` with a model fitted on ``split.train``.

    ``threads`` score-and-rank batches of users run concurrently, each with a single-threaded
    BLAS (one GEMM per batch is small; nested BLAS threads would only contend for the cores).
    """
    train = split.train
    seen = train.matrix("user")
    family = str(getattr(model, "algorithm", ""))
    global_scores = getattr(model, "scores", None) if family.startswith("popularity") else None
    if global_scores is not None:
        ranked = rank_global(global_scores, split.users, seen, k)
    else:
        with threadpool_limits(1 if threads > 1 else None, "blas"):
            ranked = rank_users(model.score_users, split.users, seen, train.n_items, k, threads=threads)
    sizes = np.diff(seen.indptr)[split.users]
    return evaluate_ranking(ranked, split.targets, sizes, train.n_items, item_popularity(train), k)


@dataclass
class Trial:
    family: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    seconds: float


@dataclass
class SearchResult:
    """Per family: the winning params on validation, and every trial for the report."""

    best_params: dict[str, dict[str, Any]]
    best_metrics: dict[str, dict[str, Any]]
    trials: list[Trial] = field(default_factory=list)


def search(
    validation: Split,
    families: tuple[str, ...],
    level: str,
    k: int,
    metric: str,
    *,
    threads: int = 2,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Grid search per family on ``validation`` (fit on its train part, score its targets)."""
    if level not in {"none", "small", "full"}:
        raise InputError("search level must be none, small or full")
    result = SearchResult({}, {})
    total = sum(len(GRIDS[f][level]) for f in families)
    done = 0
    for family in families:
        if family not in GRIDS:
            raise InputError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
        best_value = -1.0
        for params in GRIDS[family][level]:
            t0 = time.perf_counter()
            model = make_model(family, params, threads=threads).fit(validation.train)
            metrics = evaluate_model(model, validation, k, threads=threads)
            seconds = time.perf_counter() - t0
            result.trials.append(Trial(family, params, metrics, seconds))
            done += 1
            if progress:
                progress(
                    "search",
                    {"family": family, "params": params, metric: metrics[metric], "trial": done, "of": total},
                )
            if metrics[metric] > best_value:
                best_value = metrics[metric]
                result.best_params[family] = dict(params)
                result.best_metrics[family] = metrics
    return result
