"""The training job's ranker stage: train the neural ranker on the chosen retrieval family, let the
guard decide whether it is served, score it once on the test window, and train the served one.

1. The chosen retrieval family is refit on the validation window's training part; the validation
   users are split in three seeded parts (``ranker.user_parts``): the ranker fits on the first
   (or on served lists in the validation window, when the log has them), stops early on the second,
   and the guard compares it with the retrieval model alone on the third (paired bootstrap over
   those users, one-sided, as between families).
2. The ranker from (1) re-ranks the test-window retrieval model (fitted on the test split's
   training part) and is scored once on the test window, next to the families.
3. When served, the ranker is trained again on the latest labelled window (the test split) and
   put on the final retrieval model (fitted on all events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from shelfwise.training.base import Recommender
from shelfwise.training.data import Interactions, Split
from shelfwise.training.guard import ALPHA, paired_bootstrap
from shelfwise.training.ranker import RANKER, Ranker, per_user_values, train_ranker, user_parts
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
    fit_u, stop_u, guard_u = user_parts(len(validation.users), seed)
    ranker = train_ranker(
        retrieval,
        validation,
        fit_u,
        stop_u,
        metric=metric,
        params={"seed": seed, **(params or {})},
        table=table,
        progress=progress,
    )
    idx, vals, x = ranker.candidate_lists(validation.users[guard_u])
    alone = np.where(np.isfinite(vals[:, :k]), idx[:, :k], -1)
    base = per_user_values(alone, validation, guard_u, metric)
    ranked = per_user_values(ranker.rerank(idx, vals, x, k), validation, guard_u, metric)
    test = paired_bootstrap(base, ranked, seed=seed)
    chosen = test["gain"] > 0 and test["p_value"] < ALPHA
    reason = (
        f"the ranker beats {family} alone on validation (gain {test['gain']:+.4f}, p={test['p_value']:.3f})"
        if chosen
        else f"the ranker does not beat {family} alone significantly on validation "
        f"(gain {test['gain']:+.4f}, p={test['p_value']:.3f} >= {ALPHA})"
    )
    on_test = ranker.on(test_retrieval, split.train)
    test_metrics = evaluate_model(on_test, split, k, threads=1)
    progress("test", {"family": f"{family}+{RANKER}", metric: test_metrics[metric]})
    progress("select", {"ranker": chosen, "gain": test["gain"], "p": test["p_value"]})
    record = {
        "retrieval": family,
        "against": f"{family} alone, on validation users the ranker neither fitted nor stopped on",
        **test,
        "replaces": chosen,
        "reason": reason,
        "training_data": ranker.training_data,
        "training_users": len(fit_u),
        "early_stopping_users": len(stop_u),
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
    fit_u, stop_u, guard_u = user_parts(len(split.users), outcome.params["seed"])
    params = {key: v for key, v in outcome.params.items() if key != "epochs"}
    ranker = train_ranker(
        outcome.test_retrieval,
        split,
        np.sort(np.concatenate([fit_u, guard_u])),
        stop_u,
        metric=metric,
        params=params,
        table=table,
        progress=progress,
    )
    return ranker.on(retrieval, data)
