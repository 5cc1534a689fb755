"""Exploration of a served list, and the propensities its served-list record carries.

With ``ServingRules.exploration`` configured, a model's list is explored by the policy of
:mod:`shelfwise.exploration` (a coin per list, slot swaps from the model's next items), and
every served list logs the policy's propensities: an explored list its own, a list served as
ranked probability 1 at every slot. Popularity fallbacks and interleaved lists are never explored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shelfwise.exploration import ExplorationPolicy, deterministic, explore
from shelfwise.serving.config import ExplorationRules
from shelfwise.serving.impressions import ListLogging
from shelfwise.serving.model import LoadedModel


class Explorer:
    """The exploration policy of a recommender (None when not configured) and its random stream."""

    def __init__(self, rules: ExplorationRules | None) -> None:
        self.policy = (
            None
            if rules is None
            else ExplorationPolicy(share=rules.share, epsilon=rules.epsilon, pool=rules.pool, seed=rules.seed)
        )
        self.rng = np.random.default_rng(None if rules is None else rules.seed)

    @property
    def explores(self) -> bool:
        """Some lists are explored (a policy with a budget)."""
        policy = self.policy
        return policy is not None and policy.share > 0 and policy.epsilon > 0

    def rank(
        self,
        model: LoadedModel,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        mask: np.ndarray,
        k: int,
        allowed: Callable[[], int],
    ) -> tuple[np.ndarray, np.ndarray, ListLogging]:
        """``model``'s top-k, explored when the list's coin says so, with the policy's propensities
        (``allowed``: how many items the mask leaves, asked only for a list served as ranked)."""
        policy = self.policy
        assert policy is not None
        # The list's coin first: only an explored list needs the pool from the graph.
        explored = bool(self.rng.random() < policy.share)
        if explored:
            scores, indices = model.score(user_index, history_items, history_weights, mask, k + policy.pool)
            n_candidates = int(indices.size)
        else:
            scores, indices = model.score(user_index, history_items, history_weights, mask, k)
            n_candidates = min(k + policy.pool, allowed())
        return self._explore(scores, indices, k, explored, n_candidates)

    def _explore(
        self,
        scores: np.ndarray,
        indices: np.ndarray,
        k: int,
        explored: bool,
        n_candidates: int,
    ) -> tuple[np.ndarray, np.ndarray, ListLogging]:
        """Apply the exploration policy to the model's ranked candidates (top-k, then the pool
        when the list is explored); propensities are those of the policy, whatever the coin said."""
        policy = self.policy
        assert policy is not None
        ex = explore(n_candidates, k, policy, self.rng, explored)
        params = {**policy.params(), "pool": ex.pool}
        logging = ListLogging(ex.propensities, ex.spread, ex.list_propensity, params)
        return scores[ex.order], indices[ex.order], logging

    def logging(self, logging: ListLogging | None, n_new: int, n: int) -> ListLogging | None:
        """What the record of a served list of ``n`` items (the last ``n_new`` of them new items)
        logs: a list served as ranked, probability 1 at every slot when exploration is configured."""
        if logging is None and self.policy is not None:
            d = deterministic(n)
            return ListLogging(d.propensities, d.spread, 1.0, {"policy": "ranked"})
        if logging is not None and len(logging.propensities) != n:
            return with_new_items(logging, n_new, n)
        return logging


def with_new_items(logging: ListLogging, n_new: int, n: int) -> ListLogging:
    """An explored list whose last places went to new items (``ServingRules.new_item_slots``): the
    model's slots keep their propensities (a position's marginal does not depend on later ones),
    the new items were placed deterministically (1); the whole list's probability is no longer
    known (null: the list level is refused for it)."""
    kept = n - n_new
    return ListLogging(
        [*logging.propensities[:kept], *([1.0] * n_new)],
        [*logging.spread[:kept], *([False] * n_new)],
        None,
        logging.policy,
    )
