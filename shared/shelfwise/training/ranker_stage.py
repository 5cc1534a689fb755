"""The training job's ranker stage: train the neural ranker on the chosen retrieval family, let the
guard decide whether it is served, score it once on the test window, and train the served one.

1. The chosen retrieval family is refit on the validation window's training part and proposes
   every validation user's candidates. Cross-fitting: the validation users are split in two
   seeded halves; a ranker fitted on one half (its lists, or the served lists shown to its users
   when the log has them; early stopping on a fifth of that half) re-ranks the other half's
   candidates, and the other way round. So every validation user is scored by a ranker that never
   saw them, and the guard compares that with the retrieval model alone over all of them (paired
   bootstrap, one-sided, as between families).
2. A ranker fitted on all validation users re-ranks the test-window retrieval model (fitted on the
   test split's training part) and is scored once on the test window, next to the families.
3. When served, the ranker is trained again on the latest labelled window (the test split) and
   put on the final retrieval model (fitted on all events).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from shelfwise.training.base import Recommender
from shelfwise.training.data import Interactions, Split
from shelfwise.training.guard import ALPHA, paired_bootstrap
from shelfwise.training.ranker import RANKER, Ranker, folds, per_user_values, train_ranker, user_parts
from shelfwise.training.search import evaluate_model, make_model

Progress = Any


@dataclass
class RankerOutcome:
    """The guard's decision on the ranker, its test metrics and what the final fit needs."""

    chosen: bool
    record: dict[str, Any]
    test_metrics: dict[str, Any]
    params: dict[str, Any]
    curves: dict[str, Any]
    test_retrieval: Recommender | None = field(default=None, repr=False)


def evaluate_ranker(
    family: str,
    family_params: dict[str, Any],
    validation: Split,
    split: Split,
    test_retrieval: Recommender,
    *,
    k: int,
    metric: str,
    seed: int,
    threads: int,
    table: pa.Table | None,
    progress: Progress,
    params: dict[str, Any] | None = None,
) -> RankerOutcome:
    """Steps 1 and 2 of the module doc on ``family`` (already chosen by the guard)."""
    retrieval = make_model(family, family_params, threads=threads).fit(validation.train)
    params = {"seed": seed, **(params or {})}
    candidates = Ranker(**params).attach(retrieval, validation.train).candidate_lists(validation.users)
    idx, vals, x = candidates
    n = len(validation.users)
    every = np.arange(n)
    alone = per_user_values(np.where(np.isfinite(vals[:, :k]), idx[:, :k], -1), validation, every, metric)
    ranked = np.zeros(n)
    sources = set()

    def fit(users: np.ndarray) -> Ranker:
        """A ranker fitted on ``validation.users[users]`` (a fifth of them stop early)."""
        fit_u, stop_u = user_parts(len(users), seed)
        return train_ranker(
            retrieval,
            validation,
            users[fit_u],
            users[stop_u],
            metric=metric,
            params=params,
            table=table,
            progress=progress,
            candidates=candidates,
        )

    for learn, held_out in itertools.permutations(folds(n, seed)):
        fold = fit(learn)
        sources.add(fold.training_data)
        top = fold.rerank(idx[held_out], vals[held_out], x[held_out], k)
        ranked[held_out] = per_user_values(top, validation, held_out, metric)
    test = paired_bootstrap(alone, ranked, seed=seed)
    chosen = test["gain"] > 0 and test["p_value"] < ALPHA
    reason = (
        f"the ranker beats {family} alone on validation (gain {test['gain']:+.4f}, p={test['p_value']:.3f})"
        if chosen
        else f"the ranker does not beat {family} alone significantly on validation "
        f"(gain {test['gain']:+.4f}, p={test['p_value']:.3f} >= {ALPHA})"
    )
    ranker = fit(every)
    on_test = ranker.on(test_retrieval, split.train)
    test_metrics = evaluate_model(on_test, split, k, threads=1)
    progress("test", {"family": f"{family}+{RANKER}", metric: test_metrics[metric]})
    progress("select", {"ranker": chosen, "gain": test["gain"], "p": test["p_value"]})
    record = {
        "retrieval": family,
        "against": f"{family} alone; each validation user re-ranked by a ranker fitted on the other half",
        **test,
        "replaces": chosen,
        "reason": reason,
        "training_data": "+".join(sorted(sources)),
        "candidates": ranker.params["candidates"],
        "epochs": ranker.params["epochs"],
    }
    curves = {
        "loss": ranker.loss_curve,
        f"validation_{metric}": ranker.validation_curve,
        "epochs": ranker.params["epochs"],
    }
    return RankerOutcome(chosen, record, test_metrics, dict(ranker.params), curves, test_retrieval)


def final_ranker(
    outcome: RankerOutcome,
    split: Split,
    retrieval: Recommender,
    data: Interactions,
    *,
    metric: str,
    table: pa.Table | None,
    progress: Progress,
) -> Ranker:
    """Step 3: trained on the test split's lists (early stopping on a fifth of its users), put on
    ``retrieval`` fitted on all of ``data``."""
    if outcome.test_retrieval is None:
        raise ValueError("the outcome keeps no test-window retrieval model")
    fit_u, stop_u = user_parts(len(split.users), outcome.params["seed"])
    params = {key: v for key, v in outcome.params.items() if key != "epochs"}
    ranker = train_ranker(
        outcome.test_retrieval,
        split,
        fit_u,
        stop_u,
        metric=metric,
        params=params,
        table=table,
        progress=progress,
    )
    return ranker.on(retrieval, data)
