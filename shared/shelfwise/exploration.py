"""Exploration in serving: epsilon-greedy slot swaps within a budget, with exact propensities.

A list is explored with probability ``share``; in an explored list each of the model's top-k
slots is swapped, with probability ``epsilon``, for an item drawn uniformly (without replacement)
from the next ``pool`` items of the model's own ranking. Items come from the model's filtered
top-(k + pool), so a filtered item is never shown; a request that asks for no exploration gets
the model's list.

Why slot swaps rather than Plackett-Luce sampling: the probability that the policy put an item at
a position (what off-policy evaluation needs, :mod:`shelfwise.offpolicy`) is exact and cheap:
the model's item at rank p is at p with probability ``1 - share * q`` and nowhere else, a pool
item is at any given slot with probability ``share * q / m`` (by symmetry), where ``q`` is the
chance a slot is swapped once the swaps are capped at the ``m`` pool items available. Plackett-Luce
marginals have no closed form and would need Monte Carlo per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

POLICY = "slot_swap"


@dataclass(frozen=True)
class ExplorationPolicy:
    """The budget: ``share`` of lists explored, ``epsilon`` of their slots swapped from ``pool``."""

    share: float = 0.0
    epsilon: float = 0.1
    pool: int = 30
    seed: int | None = None

    @property
    def budget(self) -> float:
        """Expected share of slots that show a pool item instead of the model's own."""
        return self.share * self.epsilon

    def params(self) -> dict[str, Any]:
        return {"policy": POLICY, "share": self.share, "epsilon": self.epsilon, "pool": self.pool}


@dataclass(frozen=True)
class Explored:
    """What the policy served: indices into the candidates, per-slot propensities, and more."""

    order: np.ndarray  # indices into the ranked candidates, in served order
    propensities: list[float]
    spread: list[bool]  # the item's probability is the same at every slot (a pool item)
    list_propensity: float
    explored: bool
    pool: int  # pool items actually available


@lru_cache(maxsize=4096)
def _swap_law(n: int, m: int, eps: float) -> tuple[float, tuple[float, ...]]:
    """(q, p_set[s]): q = P(a given slot ends up swapped); p_set[s] = P(a given set of s slots is
    exactly the swapped set), for n slots, m pool items (swaps capped at m: when more slots come up,
    m of them are kept uniformly at random)."""
    binom = [math.comb(n, t) * eps**t * (1 - eps) ** (n - t) for t in range(n + 1)]
    q = sum(min(t, m) * b for t, b in enumerate(binom)) / n if n else 0.0
    p_set = []
    for s in range(min(n, m) + 1):
        if s < m:
            p_set.append(eps**s * (1 - eps) ** (n - s))
        else:  # s == m: any larger draw containing this set, thinned to m
            p_set.append(
                sum(
                    math.comb(n - m, t - m) * eps**t * (1 - eps) ** (n - t) / math.comb(t, m)
                    for t in range(m, n + 1)
                )
            )
    return q, tuple(p_set)


def deterministic(n: int) -> Explored:
    """A list served as ranked: probability 1 at every slot."""
    return Explored(np.arange(n), [1.0] * n, [False] * n, 1.0, False, 0)


def explore(
    n_candidates: int,
    k: int,
    policy: ExplorationPolicy,
    rng: np.random.Generator,
    explored: bool | None = None,
) -> Explored:
    """Choose the served order among ``n_candidates`` ranked candidates (top-k first, then the pool).

    ``explored``: the list's coin, when the caller drew it first (``rng.random() < share``) to
    fetch the pool only for explored lists; ``n_candidates`` is then what the pool would have held.
    """
    n = min(k, n_candidates)
    m = max(0, min(policy.pool, n_candidates - n))
    if n == 0 or m == 0 or policy.share <= 0 or policy.epsilon <= 0:
        return deterministic(n)
    q, p_set = _swap_law(n, m, policy.epsilon)
    keep = 1.0 - policy.share * q
    swap_p = policy.share * q / m
    if explored is None:
        explored = bool(rng.random() < policy.share)
    order = np.arange(n)
    swapped = np.zeros(0, dtype=np.int64)
    if explored:
        swapped = np.flatnonzero(rng.random(n) < policy.epsilon)
        if swapped.size > m:
            swapped = np.sort(rng.choice(swapped, m, replace=False))
        if swapped.size:
            # an ordered uniform sample without replacement (argsort of uniform keys: a few us,
            # where Generator.choice(replace=False) costs ~17 us on this path)
            order[swapped] = n + np.argsort(rng.random(m))[: swapped.size]
    s = int(swapped.size)
    if s == 0:
        list_p = (1.0 - policy.share) + policy.share * p_set[0]
    else:
        list_p = policy.share * p_set[s] / math.perm(m, s)
    spread = [False] * n
    props = [keep] * n
    for pos in swapped.tolist():
        spread[pos] = True
        props[pos] = swap_p
    return Explored(order, props, spread, list_p, explored, m)
