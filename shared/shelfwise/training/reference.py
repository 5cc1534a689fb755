"""The drift references a bundle carries: served-score histogram, category mix, history popularity.

Monitoring compares what serving answers against these; they are computed at training time from
the requests serving will see, by the paths serving takes (known shoppers and anonymous visits in
their real mix), so a healthy model's served-score PSI sits near 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.evaluation import popularity_percentile
from shelfwise.training.base import Recommender, item_popularity
from shelfwise.training.data import Interactions


def anonymous_actors(table: pa.Table, data: Interactions) -> np.ndarray | None:
    """Per user index of ``data``: whether the actor had only a session id (serving folds it in)."""
    if "session_id" not in table.column_names:
        return None
    if "user_id" not in table.column_names:
        return np.ones(data.n_users, dtype=bool)
    anon = pc.unique(
        pc.drop_null(pc.filter(pc.cast(table["session_id"], pa.string()), pc.is_null(table["user_id"])))
    )
    return np.isin(data.user_ids, np.asarray(anon.to_pylist(), dtype=object).astype(str))


# What serving does by default (ServingRules): a known shopper's stored purchases (the most recent
# this many) are not offered again, nor items bought in a session's history; a front end sends a
# session's recent history (the simulator's and the demo's clients the last 20 events).
REFERENCE_STORED_PURCHASES = 500
REFERENCE_HISTORY_LIMIT = 20


def served_scores(
    model: Recommender,
    data: Interactions,
    k: int,
    seed: int,
    anonymous: np.ndarray | None = None,
    n: int = 1500,
    unavailable: np.ndarray | None = None,
) -> np.ndarray:
    """Top-k scores of the requests serving will see, in their real mix and by the paths serving
    takes: visits (sessions) of the log's last fifth, each asking once, at a random event of the
    visit (one request per visit; a visit of a known shopper and an anonymous one alike).

    Known shopper (``GET /v1/users/{id}/recommendations``): the stored representation, with the
    items the bundle stores as bought excluded (serving's ``exclude_purchased``; what they only
    viewed stays eligible, as in serving). Anonymous visit (``anonymous[user]``: the actor had
    only a session id): fold-in of the visit's events before the request (its last
    ``REFERENCE_HISTORY_LIMIT``, weighted by event type as serving weighs them), the items bought
    in them excluded. A request without any signal gets the popularity fallback, which is
    monitored as its own variant, and is left out. ``unavailable``: items serving never offers
    (out of stock or inactive in the catalogue), excluded everywhere.
    """
    rng = np.random.default_rng(seed)
    cut = data.time_quantile(0.8)
    by_session = np.lexsort((data.ts, data.session))
    sessions = data.session[by_session]
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    ends = np.r_[starts[1:], sessions.size]
    last_ts = data.ts[by_session[ends - 1]] if sessions.size else np.zeros(0, data.ts.dtype)
    visits = np.flatnonzero(last_ts >= cut)
    if visits.size == 0:
        return np.zeros(0, np.float32)
    picks = np.sort(rng.choice(visits, size=min(n, visits.size), replace=False))
    indptr, bought = data.purchases_by_user()
    purchase = data.purchase if data.purchase is not None else np.zeros(data.n_events, dtype=bool)
    base = np.zeros(data.n_items, dtype=bool) if unavailable is None else unavailable.astype(bool)
    kk = min(k, data.n_items)
    none_i, none_w = np.zeros(0, np.int64), np.zeros(0, np.float32)
    out = []
    for v in picks:
        lo, hi = int(starts[v]), int(ends[v])
        # the request's place in the visit: any of its events in the last fifth
        recent = lo + np.flatnonzero(data.ts[by_session[lo:hi]] >= cut)
        at = int(rng.choice(recent))
        u = int(data.user[by_session[at]])
        exclude = base.copy()
        if anonymous is not None and anonymous[u]:
            before = by_session[max(lo, at - REFERENCE_HISTORY_LIMIT) : at]
            if before.size == 0:
                continue
            exclude[data.item[before][purchase[before]]] = True
            items, weights = data.item[before].astype(np.int64), data.weight[before].astype(np.float32)
            scores, _ = model.reference(-1, items, weights, exclude, kk)
        else:
            exclude[bought[indptr[u] : indptr[u + 1]][:REFERENCE_STORED_PURCHASES]] = True
            scores, _ = model.reference(u, none_i, none_w, exclude, kk)
        out.append(np.asarray(scores, np.float32)[np.isfinite(scores)])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def reference_distributions(
    model: Recommender,
    data: Interactions,
    k: int,
    seed: int,
    anonymous: np.ndarray | None = None,
    unavailable: np.ndarray | None = None,
) -> dict[str, Any]:
    """Baselines for drift monitoring: served-population score histogram, category mix, history popularity.

    The score histogram is of :func:`served_scores` (the population serving will see: known
    shoppers and sessions in their real mix), so a healthy model's served-score PSI sits near 0.
    """
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(data.n_users, size=min(2000, data.n_users), replace=False)).astype(np.int64)
    from shelfwise.evaluation import rank_users

    seen = data.matrix("user")
    ranked = rank_users(model.score_users, users, seen, data.n_items, k)
    top = served_scores(model, data, k, seed, anonymous, unavailable=unavailable)
    if top.size == 0:
        scores = np.asarray(model.score_users(users[:500]), dtype=np.float32)
        top = np.take_along_axis(scores, np.maximum(ranked[:500], 0), axis=1)[ranked[:500] >= 0]
    # Ten bins at the sample's quantiles: every bin holds mass, so PSI is not dominated by empty
    # tail bins (a fixed-width grid over min..max leaves most near-empty for skewed scores), and a
    # window's sampling noise (about (bins - 1) / lists) stays well under the 0.1 warning level.
    qs = np.unique(np.round(np.quantile(top, np.linspace(0.0, 1.0, 11)), 6)) if top.size else np.zeros(1)
    edges = qs if qs.size >= 2 else np.array([float(qs[0]), float(qs[0]) + 1.0])
    counts = np.histogram(top, bins=edges)[0]
    cats = data.item_info["category"][ranked[ranked >= 0]]
    values, cat_counts = np.unique(cats, return_counts=True)
    order = np.argsort(-cat_counts)[:50]
    pct = popularity_percentile(item_popularity(data))
    hist_counts, hist_edges = np.histogram(pct[data.item], bins=10, range=(0.0, 1.0))
    return {
        "score_histogram": {"bins": [round(float(e), 6) for e in edges], "counts": counts.tolist()},
        "category_mix": {
            (str(values[i]) or "(none)"): round(float(cat_counts[i] / max(cat_counts.sum(), 1)), 6)
            for i in order
        },
        "history_popularity": {
            "bins": [round(float(e), 3) for e in hist_edges],
            "counts": hist_counts.tolist(),
        },
    }
