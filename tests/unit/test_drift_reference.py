"""The served-score reference samples the requests serving answers, by the paths serving takes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shelfwise.training.data import interactions_from_table
from shelfwise.training.itemknn import ItemKNN
from shelfwise.training.reference import REFERENCE_HISTORY_LIMIT, anonymous_actors, served_scores
from tests.unit.test_training import synthetic_events

pytestmark = pytest.mark.unit


class Recording:
    """A fitted model whose reference calls are recorded (user, history, exclusion mask)."""

    def __init__(self, model: ItemKNN) -> None:
        self.model, self.calls = model, []  # type: ignore[var-annotated]

    def reference(self, u: int, items: np.ndarray, weights: np.ndarray, mask: np.ndarray, k: int) -> Any:
        self.calls.append((u, items.copy(), weights.copy(), mask.copy()))
        return self.model.reference(u, items, weights, mask, k)


def _table_with_anonymous_sessions() -> pa.Table:
    table = synthetic_events(n_users=80, n_items=40, days=20, seed=3)
    # a third of the shoppers browse without logging in: only their session ids
    anon = pc.is_in(table["user_id"], pa.array([f"user{u:03d}" for u in range(0, 80, 3)]))
    return table.set_column(
        table.schema.get_field_index("user_id"), "user_id", pc.if_else(anon, None, table["user_id"])
    )


def test_known_shoppers_lose_only_their_purchases_and_sessions_fold_in_their_recent_history() -> None:
    table = _table_with_anonymous_sessions()
    data = interactions_from_table(table)
    anonymous = anonymous_actors(table, data)
    assert anonymous is not None and anonymous.any() and not anonymous.all()
    unavailable = np.zeros(data.n_items, dtype=bool)
    unavailable[:3] = True
    spy = Recording(ItemKNN(20, "session").fit(data))
    scores = served_scores(spy, data, 5, seed=1, anonymous=anonymous, unavailable=unavailable)
    assert scores.size and np.isfinite(scores).all()
    indptr, bought = data.purchases_by_user()
    hist = data.history_matrix().tocsr()
    known = [c for c in spy.calls if c[0] >= 0]
    folded = [c for c in spy.calls if c[0] < 0]
    assert known and folded
    for u, items, _, mask in known:
        assert not anonymous[u] and items.size == 0
        expected = unavailable.copy()
        expected[bought[indptr[u] : indptr[u + 1]]] = True
        assert np.array_equal(mask, expected)  # purchases and unavailable items, nothing else
    # what known shoppers only viewed stays eligible, as serving leaves it (exclude_seen off)
    assert any(
        (~known_mask[hist.indices[hist.indptr[u] : hist.indptr[u + 1]]]).any()
        for u, _, _, known_mask in known
    )
    for _, items, weights, mask in folded:
        assert 1 <= items.size <= REFERENCE_HISTORY_LIMIT and (weights > 0).all()
        assert mask[:3].all()
    # one request per visit: never more requests than visits reaching the last fifth
    cut = data.time_quantile(0.8)
    visits = len(np.unique(data.session[data.ts >= cut]))
    assert len(spy.calls) <= visits


def test_items_bought_in_a_session_are_excluded_from_its_fold_in() -> None:
    table = _table_with_anonymous_sessions()
    data = interactions_from_table(table)
    anonymous = anonymous_actors(table, data)
    assert data.purchase is not None
    spy = Recording(ItemKNN(20, "session").fit(data))
    served_scores(spy, data, 5, seed=2, anonymous=anonymous, n=5000)
    purchased_items = set(data.item[data.purchase].tolist())
    excluded = [set(np.flatnonzero(mask).tolist()) for u, _, _, mask in spy.calls if u < 0]
    assert any(e for e in excluded) and all(e <= purchased_items for e in excluded)
