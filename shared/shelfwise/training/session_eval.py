"""The in-session view of the temporal protocol: every family as it is served mid-visit.

The main protocol ranks each test user's items from their history up to the cut, which is the
request a shopper makes on arrival, before any event of the visit. Most requests come later, with
the visit's events in the request (``history`` beside the known user). Here each test user's
first event after the cut is that request's event, every family answers through its
``reference`` (the exported graph's semantics, so a family whose graph ignores a known user's
request events is scored as it is served), and the targets are the user's other new items of the
test window. Same cut, same models, same targets rule: a second figure beside the first, never an
input of the guarded selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shelfwise.evaluation import metrics_from_hits
from shelfwise.training.base import Recommender
from shelfwise.training.data import Interactions, Split

ROUTES = ("served", "visit", "session")


@dataclass
class SessionRequests:
    """Per evaluated user (train encoding): the request's event and the targets left to find."""

    users: np.ndarray  # [U] int64
    items: np.ndarray  # [U] int64, the first event after the cut (an item of the training catalogue)
    weights: np.ndarray  # [U] float32, its event weight (the request's event type)
    targets: list[np.ndarray]  # the user's other new items of the test window

    def __len__(self) -> int:
        return len(self.users)


def session_requests(
    data: Interactions, split: Split, max_users: int = 2000, seed: int = 0
) -> SessionRequests:
    """The first event after the cut of each of ``split``'s test users, as a request (seeded sample
    of at most ``max_users``; users whose only target is that event have nothing left to find)."""
    train = split.train
    after = np.flatnonzero(data.ts >= split.cut_ms)
    u = _encode(train.user_ids, data.user_ids[data.user[after]])
    i = _encode(train.item_ids, data.item_ids[data.item[after]])
    ok = (u >= 0) & (i >= 0)
    first_user, first = np.unique(u[ok], return_index=True)  # data is time-sorted: the first event
    first_item = i[ok][first]
    first_weight = data.weight[after[ok][first]].astype(np.float32)
    where = np.searchsorted(first_user, split.users)
    where = np.minimum(where, max(len(first_user) - 1, 0))
    users, items, weights, targets = [], [], [], []
    for j, user in enumerate(split.users.tolist()):
        if not len(first_user) or first_user[where[j]] != user:
            continue
        rest = split.targets[j][split.targets[j] != first_item[where[j]]]
        if len(rest):
            users.append(user)
            items.append(int(first_item[where[j]]))
            weights.append(float(first_weight[where[j]]))
            targets.append(rest)
    pick = np.arange(len(users))
    if 0 < max_users < len(users):
        pick = np.sort(np.random.default_rng(seed).choice(len(users), size=max_users, replace=False))
    return SessionRequests(
        np.asarray(users, dtype=np.int64)[pick],
        np.asarray(items, dtype=np.int64)[pick],
        np.asarray(weights, dtype=np.float32)[pick],
        [targets[int(p)] for p in pick],
    )


def _encode(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices of ``ids`` in ``sorted_ids`` (-1 where absent)."""
    if not len(sorted_ids):
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


def evaluate_in_session(
    model: Recommender, requests: SessionRequests, split: Split, k: int, *, route: str = "served"
) -> dict[str, Any]:
    """Mean metrics at ``k`` of ``model`` answering each request as served (training items and the
    request's item excluded).

    ``route``: ``"served"`` (the known user's route, as served); ``"visit"``, the graph's anonymous
    route on the user's training items (their summed event weights) followed by the request's event,
    which is what a graph that read a known user's visit beside the stored history would see;
    ``"session"``, the anonymous route on the request's event alone (an anonymous visit). The last
    two are the fair mid-visit baselines for a family whose served route ignores the visit.
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    seen = split.train.matrix("user")
    n_items = split.train.n_items
    ranked = np.full((len(requests), k), -1, dtype=np.int64)
    reference = model.reference
    for r, (user, item, weight) in enumerate(
        zip(requests.users.tolist(), requests.items.tolist(), requests.weights.tolist(), strict=True)
    ):
        exclude = np.zeros(n_items, dtype=bool)
        exclude[seen.indices[seen.indptr[user] : seen.indptr[user + 1]]] = True
        exclude[item] = True
        items, weights, who = np.array([item]), np.array([weight], dtype=np.float32), user
        if route == "visit":
            lo, hi = seen.indptr[user], seen.indptr[user + 1]
            items = np.concatenate([seen.indices[lo:hi].astype(np.int64), items])
            weights = np.concatenate([seen.data[lo:hi].astype(np.float32), weights])
        if route != "served":
            who = -1
        _, top = reference(who, items, weights, exclude, min(k, n_items))
        ranked[r, : len(top)] = top
    n = np.array([len(t) for t in requests.targets], dtype=np.int64)
    hits = np.zeros(ranked.shape, dtype=bool)
    for r, t in enumerate(requests.targets):
        hits[r] = np.isin(ranked[r], t) & (ranked[r] >= 0)
    per_user = metrics_from_hits(hits, n)
    out: dict[str, Any] = {
        f"{name}@{k}" if name != "mrr" else name: round(float(v.mean()), 6) for name, v in per_user.items()
    }
    out["users"] = len(requests)
    return out
