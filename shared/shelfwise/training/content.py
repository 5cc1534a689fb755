"""Content-based scores for items nobody has interacted with yet, and their offline measurement.

A new item (in the catalogue, no events yet) is invisible to every model trained on interactions.
Its title, category and brand are known from the first minute, though: :class:`ContentModel`
represents each item as a TF-IDF vector of its title words (serving's tokenizer), its category
path (``c:kitchen``, ``c:kitchen/mugs``) and its brand (``b:acme``), L2-normalised; a user's
profile is the weighted sum of the vectors of what they interacted with, and an item's content
score is the cosine between profile and item. scikit-learn is not a dependency of the package
(and its TfidfVectorizer would bring a second tokenizer); the few lines of scipy.sparse here keep
the tokens exactly those search uses.

:func:`evaluate_new_items` is the offline protocol: the global temporal cut of the training
protocol (docs/evaluation.md); the *new items* are the items whose first event comes after the cut;
each user with history before the cut who touched new items after it is asked to rank all new
items, and NDCG@k/HitRate@k of that ranking are reported with the content scores and without
them (a model with no signal for new items ranks them arbitrarily: seeded random orders, averaged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from shelfwise.errors import InputError
from shelfwise.evaluation import hits_matrix, metrics_from_hits
from shelfwise.serving.catalog import tokenize
from shelfwise.training.data import Interactions


def item_tokens(title: str, category: str, brand: str = "") -> list[str]:
    """Title words, every prefix of the category path, the brand."""
    tokens = tokenize(title)
    parts = [p for p in (category or "").lower().split("/") if p]
    tokens += [f"c:{'/'.join(parts[: i + 1])}" for i in range(len(parts))]
    if brand:
        tokens.append(f"b:{brand.strip().lower()}")
    return tokens


class ContentModel:
    """TF-IDF item vectors over titles, categories and brands (rows L2-normalised, CSR)."""

    def __init__(self, titles: Sequence[str], categories: Sequence[str], brands: Sequence[str] | None = None):
        brands = brands if brands is not None else [""] * len(titles)
        vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for i, (t, c, b) in enumerate(zip(titles, categories, brands, strict=True)):
            for tok in set(item_tokens(t, c, b)):
                cols.append(vocab.setdefault(tok, len(vocab)))
                rows.append(i)
        n = len(titles)
        x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, max(len(vocab), 1)))
        df = np.asarray((x > 0).sum(axis=0)).ravel()
        idf = np.log((1 + n) / (1 + df)).astype(np.float32) + 1.0
        x = x @ sp.diags(idf)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        self.vectors = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x, dtype=np.float32)
        self.vocabulary = vocab

    def scores(self, history: sp.csr_matrix, candidates: np.ndarray) -> np.ndarray:
        """[users, candidates] cosine between each user's profile (``history`` users x items) and items."""
        profile = history @ self.vectors
        norms = np.sqrt(np.asarray(profile.multiply(profile).sum(axis=1)).ravel())
        profile = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ profile
        return np.asarray((profile @ self.vectors[candidates].T).todense(), dtype=np.float32)


def evaluate_new_items(
    data: Interactions,
    *,
    fraction: float = 0.8,
    k: int = 10,
    brands: np.ndarray | None = None,
    titles: np.ndarray | None = None,
    categories: np.ndarray | None = None,
    random_orders: int = 5,
    seed: int = 42,
    max_users: int = 5000,
) -> dict[str, Any]:
    """NDCG@k / HitRate@k of ranking the items first seen after the cut, with and without content.

    ``titles``/``categories``/``brands`` (per item of ``data``; e.g. from the catalogue, through
    :func:`shelfwise.training.job.item_metadata`) replace what the events carried.
    """
    cut = data.time_quantile(fraction)
    before = data.ts < cut
    first_seen = np.full(data.n_items, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_seen, data.item, data.ts)
    new = np.flatnonzero(first_seen >= cut)
    if len(new) < 2:
        raise InputError("fewer than two items are first seen after the cut: nothing to rank")
    is_new = np.zeros(data.n_items, dtype=bool)
    is_new[new] = True
    known_users = np.unique(data.user[before])
    after = ~before & is_new[data.item]
    pairs = np.unique(np.stack([data.user[after], data.item[after]], 1), axis=0)
    pairs = pairs[np.isin(pairs[:, 0], known_users)]
    if len(pairs) == 0:
        raise InputError("no user with history before the cut touched a new item after it")
    users, starts = np.unique(pairs[:, 0], return_index=True)
    targets_items = np.split(pairs[:, 1], starts[1:])
    rng = np.random.default_rng(seed)
    if len(users) > max_users:
        pick = np.sort(rng.choice(len(users), max_users, replace=False))
        users, targets_items = users[pick], [targets_items[i] for i in pick]
    position = np.full(data.n_items, -1, dtype=np.int64)
    position[new] = np.arange(len(new))
    targets = [position[t] for t in targets_items]  # as indices into `new`
    n_targets = np.array([len(t) for t in targets])
    kk = min(k, len(new))

    # History before the cut, with the training protocol's weights (log1p of summed event weights).
    history = _history_rows(data, before, users)
    history.sum_duplicates()
    history.data = np.log1p(history.data)
    history = history.astype(np.float32)
    model = ContentModel(
        (data.item_info["title"] if titles is None else titles).tolist(),
        (data.item_info["category"] if categories is None else categories).tolist(),
        None if brands is None else [str(b) for b in brands],
    )
    scores = model.scores(history, new)
    # ties (e.g. no shared token) broken at random, the same way for every user
    order = np.argsort(-(scores + rng.random(scores.shape[1], dtype=np.float32) * 1e-6), axis=1)[:, :kk]
    with_content = _summary(metrics_from_hits(hits_matrix(order, targets), n_targets))
    rand: list[dict[str, float]] = []
    for r in range(random_orders):
        g = np.random.default_rng(seed + 1 + r)
        ranked = np.stack([g.permutation(len(new))[:kk] for _ in range(len(users))])
        rand.append(_summary(metrics_from_hits(hits_matrix(ranked, targets), n_targets)))
    without = {m: float(np.mean([x[m] for x in rand])) for m in rand[0]}
    return {
        "protocol": {
            "cut_fraction": fraction,
            "k": k,
            "new_items": len(new),
            "users": len(users),
            "targets": int(n_targets.sum()),
            "ranking": "all items first seen after the cut, per user with history before it",
            "without": f"random order (mean of {random_orders} seeded orders): no interaction signal exists",
            "content": "TF-IDF cosine of title words, category path and brand to the user's history",
        },
        "with_content": with_content,
        "without_content": without,
        "vocabulary": len(model.vocabulary),
    }


def _history_rows(data: Interactions, mask: np.ndarray, users: np.ndarray) -> sp.csr_matrix:
    m = sp.csr_matrix(
        (data.weight[mask].astype(np.float64), (data.user[mask], data.item[mask])),
        shape=(data.n_users, data.n_items),
    )
    return m[users]


def _summary(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    n = len(per_user["ndcg"])
    out = {m: round(float(v.mean()), 4) for m, v in per_user.items() if m in ("ndcg", "hitrate", "recall")}
    out["ndcg_se"] = round(float(per_user["ndcg"].std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0, 4)
    return out


CONTENT_FILE = "content.npz"
MAX_NEW_ITEMS = 20_000


def content_arrays(
    item_ids: np.ndarray, titles: np.ndarray, categories: np.ndarray, catalogue: Any
) -> dict[str, np.ndarray] | None:
    """``content.npz`` for a bundle: the catalogue's items without interactions (active, newest
    first, at most ``MAX_NEW_ITEMS``) and TF-IDF vectors of every item, graph items first.

    None when the catalogue lists no item the model lacks. Serving reads it with numpy only
    (:mod:`shelfwise.serving.new_items`).
    """
    from shelfwise.bundle import encode_text

    if catalogue is None or catalogue.num_rows == 0:
        return None
    rows = catalogue.to_pylist()
    known = set(np.asarray(item_ids).astype(str).tolist())
    fresh = [r for r in rows if r["item_id"] not in known and r.get("active") is not False]
    if not fresh:
        return None
    fresh.sort(key=lambda r: (r.get("updated_at") is None, r.get("updated_at")), reverse=True)
    fresh = sorted(fresh[:MAX_NEW_ITEMS], key=lambda r: r["item_id"])
    brand_of = {r["item_id"]: str(r.get("brand") or "") for r in rows}
    brands = [brand_of.get(i, "") for i in np.asarray(item_ids).astype(str).tolist()]
    brands += [str(r.get("brand") or "") for r in fresh]
    model = ContentModel(
        [*np.asarray(titles).astype(str).tolist(), *[str(r["title"] or "") for r in fresh]],
        [*np.asarray(categories).astype(str).tolist(), *[str(r["category"] or "") for r in fresh]],
        brands,
    )
    x = model.vectors.tocsr()
    x.sort_indices()
    return {
        "n_graph_items": np.asarray([len(item_ids)], dtype=np.int64),
        "new_item_id": encode_text(np.asarray([r["item_id"] for r in fresh], dtype=str)),
        "new_title": encode_text(np.asarray([str(r["title"] or "") for r in fresh], dtype=str)),
        "new_category": encode_text(np.asarray([str(r["category"] or "") for r in fresh], dtype=str)),
        "new_price": np.asarray(
            [np.nan if r.get("price") is None else r["price"] for r in fresh], np.float32
        ),
        "new_in_stock": np.asarray([bool(r.get("in_stock", True)) for r in fresh], dtype=bool),
        "vec_indptr": x.indptr.astype(np.int64),
        "vec_indices": x.indices.astype(np.int32),
        "vec_data": x.data.astype(np.float32),
        "n_terms": np.asarray([x.shape[1]], dtype=np.int64),
    }
