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
from shelfwise.evaluation import evaluate_ranking, hits_matrix, metrics_from_hits, rank_global, rank_users
from shelfwise.training.base import Recommender, item_popularity
from shelfwise.training.data import Split
from shelfwise.training.itemknn import ItemKNN
from shelfwise.training.mf import ALS
from shelfwise.training.popularity import Popularity
from shelfwise.training.ranker import RANKER
from shelfwise.training.sequential import Sequential

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
    # PyTorch, trained only when asked for (--families): the demo and the default job stay torch-free.
    # The epoch count is not searched: each fit stops early on the validation window.
    "sequential": {
        # "none" is the quick level: at most 8 epochs (early stopping may end sooner)
        "none": [{"dim": 64, "blocks": 2, "max_len": 50, "epochs": 8}],
        "small": [{"dim": 64, "blocks": 2, "max_len": 50}],
        "full": [
            {"dim": d, "blocks": b, "max_len": 50, "dropout": p, "targets": t}
            for d in (64, 128)
            for b in (1, 2)
            for p in (0.2, 0.5)
            for t in ("new", "future")
        ],
    },
}
# Trained unless the caller names families; the optional ones must be asked for. The ranker is no
# retrieval family: it re-ranks the chosen one's candidates (``shelfwise.training.ranker``).
OPTIONAL_FAMILIES: tuple[str, ...] = ("sequential", RANKER)
FAMILIES: tuple[str, ...] = tuple(f for f in GRIDS if f not in OPTIONAL_FAMILIES)
ALL_FAMILIES: tuple[str, ...] = (*GRIDS, RANKER)
# Simplest first: model selection moves to a more complex family only on a significant gain.
COMPLEXITY: tuple[str, ...] = (
    "popularity",
    "popularity_all",
    "itemknn",
    "itemknn_recent",
    "als",
    "sequential",
)


def parse_families(value: str, extra: str = "") -> tuple[str, ...]:
    """A ``--families`` value (empty: the default families) plus ``extra`` families, e.g. the
    stack's ``TrainingFamilies``; the baselines are always trained and reported."""
    named = [f.strip() for f in value.split(",") if f.strip()]
    named = [*(BASELINE_FAMILIES if named else FAMILIES), *named]
    named += [f.strip() for f in extra.split(",") if f.strip()]
    unknown = [f for f in named if f not in ALL_FAMILIES]
    if unknown:
        raise InputError(f"unknown model family {unknown[0]!r}; known: {', '.join(ALL_FAMILIES)}")
    return tuple(dict.fromkeys(named))


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
    if family == "sequential":
        return Sequential(**params, threads=threads)
    if family == RANKER:
        raise InputError("the ranker re-ranks a retrieval family's candidates; it is not fitted alone")
    raise InputError(f"unknown model family {family!r}; known: {', '.join(ALL_FAMILIES)}")


def rank_split(model: Recommender, split: Split, k: int, *, threads: int = 1) -> np.ndarray:
    """Top-``k`` item indices [users, k] of every test user of ``split`` (training items excluded).

    ``threads`` score-and-rank batches of users run concurrently, each with a single-threaded
    BLAS (one GEMM per batch is small; nested BLAS threads would only contend for the cores).
    """
    train = split.train
    seen = train.matrix("user")
    family = str(getattr(model, "algorithm", ""))
    global_scores = getattr(model, "scores", None) if family.startswith("popularity") else None
    if global_scores is not None:
        return rank_global(global_scores, split.users, seen, k)
    with threadpool_limits(1 if threads > 1 else None, "blas"):
        return rank_users(model.score_users, split.users, seen, train.n_items, k, threads=threads)


def evaluate_model(model: Recommender, split: Split, k: int, *, threads: int = 1) -> dict[str, Any]:
    """Fit-free: rank every test user of ``split`` with a model fitted on ``split.train``."""
    return _metrics(rank_split(model, split, k, threads=threads), split, k)


def _metrics(ranked: np.ndarray, split: Split, k: int) -> dict[str, Any]:
    train = split.train
    sizes = np.diff(train.matrix("user").indptr)[split.users]
    return evaluate_ranking(ranked, split.targets, sizes, train.n_items, item_popularity(train), k)


def per_user_metric(ranked: np.ndarray, split: Split, metric: str) -> np.ndarray:
    """One user's value of ``metric`` (e.g. ``ndcg@10``) per test user: the unit of the paired bootstrap."""
    name = metric.split("@")[0]
    n = np.array([len(t) for t in split.targets], dtype=np.int64)
    return metrics_from_hits(hits_matrix(ranked, split.targets), n)[name]


@dataclass
class Trial:
    family: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    seconds: float


@dataclass
class SearchResult:
    """Per family: the winning params on validation, and every trial for the report.

    ``per_user`` holds each winner's per-user validation values of the metric (the guard's
    paired bootstrap compares families on the same users); ``curves`` the training curves of
    families that have them (loss and validation metric per epoch).
    """

    best_params: dict[str, dict[str, Any]]
    best_metrics: dict[str, dict[str, Any]]
    trials: list[Trial] = field(default_factory=list)
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    """Grid search per family on ``validation`` (fit on its train part, score its targets).

    Models with ``fit_validated`` (the sequential family) see the validation split while they
    train, to stop early on it; the epoch count they stopped at becomes part of their params.
    """
    if level not in {"none", "small", "full"}:
        raise InputError("search level must be none, small or full")
    for family in families:
        if family not in GRIDS:
            raise InputError(f"unknown model family {family!r}; known: {', '.join(ALL_FAMILIES)}")
    result = SearchResult({}, {})
    total = sum(len(GRIDS[f][level]) for f in families)
    done = 0
    for family in families:
        best_value = -1.0
        for params in GRIDS[family][level]:
            t0 = time.perf_counter()
            model = make_model(family, params, threads=threads)
            if hasattr(model, "fit_validated"):
                model.progress = progress  # type: ignore[attr-defined]
                model.fit_validated(
                    validation, metric, lambda m: float(evaluate_model(m, validation, k, threads=1)[metric])
                )
            else:
                model.fit(validation.train)
            ranked = rank_split(model, validation, k, threads=threads)
            metrics = _metrics(ranked, validation, k)
            seconds = time.perf_counter() - t0
            fitted_params = dict(model.params)
            result.trials.append(Trial(family, fitted_params, metrics, seconds))
            done += 1
            if progress:
                progress(
                    "search",
                    {"family": family, "params": params, metric: metrics[metric], "trial": done, "of": total},
                )
            if metrics[metric] > best_value:
                best_value = metrics[metric]
                result.best_params[family] = (
                    fitted_params if hasattr(model, "fit_validated") else dict(params)
                )
                result.best_metrics[family] = metrics
                result.per_user[family] = per_user_metric(ranked, validation, metric)
                details = model.describe()
                if "validation_curve" in details:
                    result.curves[family] = {
                        "loss": details["loss_curve"],
                        f"validation_{metric}": details["validation_curve"],
                        "epochs": details.get("epochs"),
                    }
    return result
