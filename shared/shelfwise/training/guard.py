"""Guarded model selection: a more complex family replaces a simpler one only on a significant gain.

Picking the family with the highest validation mean rewards noise: on a small or seasonal log a
complex model can win validation by a hair and lose to popularity on the test window. So the
families are walked from the simplest (popularity) to the most complex (``COMPLEXITY``), and the
current choice is replaced only when the challenger's per-user validation metric beats it in a
paired bootstrap over validation users (one-sided, ``alpha``): the gain's bootstrap lower bound
is above zero. Every comparison is recorded with its reason, for the manifest and the report.

After the test window has been scored once per family, a last safety net (:func:`fallback_on_test`)
serves popularity when the chosen family scores below it there: the platform never ships a model
that loses to its own fallback on the held-out window. It can only move to the simplest model,
so it never selects a complex model on the test window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shelfwise.errors import InputError

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 1000
# All-time popularity is the usual reference point, never a candidate (the fallback serves a window).
NOT_CANDIDATES = frozenset({"popularity_all"})


@dataclass(frozen=True)
class FamilyOverride:
    """An operator's decision to serve ``family`` whatever the guarded selection picks.

    The training job trains ``family`` beside the others (an optional family is added to them)
    and bundles it; the selection record keeps what the guard would have served. With
    ``past_gate`` the registry also offers it for canary when the offline gate's comparisons
    with other models fail (:func:`shelfwise.gate.evaluate_gate`), never when it loses to
    popularity on the test window.
    """

    family: str
    reason: str = ""
    past_gate: bool = False

    def __post_init__(self) -> None:
        if not self.family.strip():
            raise InputError("the override names no family")
        if len(self.reason) > MAX_REASON:
            raise InputError(f"the override reason is at most {MAX_REASON} characters")

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "reason": self.reason, "past_gate": self.past_gate}


MAX_REASON = 500


def paired_bootstrap(
    simpler: np.ndarray, complex_: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict[str, float]:
    """Mean per-user gain of ``complex_`` over ``simpler`` and its one-sided bootstrap p-value.

    Users are resampled with replacement ``samples`` times (the same users for both models: the
    pairing removes the between-user variance, which dwarfs the difference between models).
    ``p_value`` is the share of resamples whose mean gain is at most zero.
    """
    a = np.asarray(simpler, dtype=np.float64)
    b = np.asarray(complex_, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired values need the same users, in the same order")
    n = a.size
    if n == 0:
        return {"gain": 0.0, "relative_gain": 0.0, "p_value": 1.0, "ci_low": 0.0, "ci_high": 0.0, "users": 0}
    diff = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // n)
    for lo in range(0, samples, chunk):
        m = min(chunk, samples - lo)
        means[lo : lo + m] = diff[rng.integers(0, n, size=(m, n))].mean(axis=1)
    base = float(a.mean())
    gain = float(diff.mean())
    return {
        "gain": round(gain, 6),
        "relative_gain": round(gain / base, 4) if base > 0 else 0.0,
        "p_value": round(float(np.mean(means <= 0.0)), 4),
        "ci_low": round(float(np.quantile(means, 0.025)), 6),
        "ci_high": round(float(np.quantile(means, 0.975)), 6),
        "users": int(n),
    }


def guarded_choice(
    families: tuple[str, ...],
    per_user: dict[str, np.ndarray],
    order: tuple[str, ...],
    *,
    alpha: float = ALPHA,
    seed: int = 0,
) -> tuple[str, dict[str, Any]]:
    """The family to serve and the record of every comparison that led to it."""
    rank = {f: i for i, f in enumerate(order)}
    candidates = sorted(
        (f for f in families if f in per_user and f not in NOT_CANDIDATES),
        key=lambda f: (rank.get(f, len(order)), f),
    )
    if not candidates:
        raise ValueError("no candidate family to choose from")
    chosen = candidates[0]
    steps = []
    for family in candidates[1:]:
        test = paired_bootstrap(per_user[chosen], per_user[family], seed=seed)
        replaces = test["gain"] > 0 and test["p_value"] < alpha
        steps.append(
            {
                "challenger": family,
                "against": chosen,
                **test,
                "replaces": replaces,
                "reason": (
                    f"{family} beats {chosen} on validation (gain {test['gain']:+.4f}, p={test['p_value']:.3f})"
                    if replaces
                    else f"{family} does not beat {chosen} significantly on validation "
                    f"(gain {test['gain']:+.4f}, p={test['p_value']:.3f} >= {alpha})"
                ),
            }
        )
        if replaces:
            chosen = family
    record = {
        "method": "simplest first; a more complex family replaces the current choice only when a "
        f"one-sided paired bootstrap over validation users ({BOOTSTRAP_SAMPLES} resamples) "
        f"gives p < {alpha}",
        "order": candidates,
        "steps": steps,
        "chosen_on_validation": chosen,
    }
    return chosen, record


def fallback_on_test(
    chosen: str, test_metrics: dict[str, dict[str, Any]], metric: str, baseline: str = "popularity"
) -> tuple[str, str | None]:
    """``baseline`` instead of ``chosen`` when ``chosen`` scores below it on the test window (and why)."""
    if chosen == baseline or baseline not in test_metrics or chosen not in test_metrics:
        return chosen, None
    got, floor = float(test_metrics[chosen][metric]), float(test_metrics[baseline][metric])
    if got < floor:
        return baseline, (
            f"{chosen} scores {metric} {got:.4f} on the test window, below {baseline}'s {floor:.4f}: "
            f"{baseline} is served"
        )
    return chosen, None
