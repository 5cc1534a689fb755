"""Offline evaluation: top-K ranking metrics and the temporal hold-out protocol.

Metric definitions (binary relevance, ``T`` = the user's target set, ``r_i`` = 1 when the item at
rank ``i`` (1-based) is in ``T``):

- ``ndcg@K``   = sum_i r_i / log2(i + 1)  /  sum_{i <= min(|T|, K)} 1 / log2(i + 1)
- ``recall@K`` = hits in the top K / |T|
- ``map@K``    = sum_i r_i * precision@i / min(|T|, K)   (mean over users of AP@K)
- ``hitrate@K``= 1 when any of the top K is in ``T``
- ``mrr``      = 1 / rank of the first hit within the top K, else 0 (MRR@K)
- ``coverage`` = distinct items recommended to anyone / catalogue size
- ``popularity_bias`` = mean popularity percentile of recommended items (0..1; the popularity
  baseline sits near 1, a uniform random recommender near 0.5)

Per-user metrics are averaged over evaluated users. Pure numpy, so monitoring can reuse it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from shelfwise.errors import InputError

METRICS: tuple[str, ...] = ("ndcg", "recall", "map", "hitrate", "mrr")
COLD_HISTORY = 5  # users with fewer distinct training items than this are "cold"


def hits_matrix(recommended: np.ndarray, targets: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean [U, K]: whether each recommended item is one of that user's targets."""
    rec = np.asarray(recommended)
    if rec.ndim != 2 or rec.shape[0] != len(targets):
        raise InputError(f"recommended must be [users, K] with one row per target set, got {rec.shape}")
    if rec.size == 0:
        return np.zeros(rec.shape, dtype=bool)
    # One vectorised membership test on (row, item) keys instead of a loop over users.
    lengths = np.fromiter((len(t) for t in targets), dtype=np.int64, count=len(targets))
    flat = (
        np.concatenate([np.asarray(t, dtype=np.int64) for t in targets])
        if lengths.sum()
        else np.zeros(0, np.int64)
    )
    span = int(max(rec.max(initial=0), flat.max(initial=0))) + 2
    target_keys = np.repeat(np.arange(len(targets), dtype=np.int64), lengths) * span + flat
    rec_keys = np.arange(rec.shape[0], dtype=np.int64)[:, None] * span + rec.astype(np.int64)
    hits = np.isin(rec_keys, target_keys)
    return hits & (rec >= 0)


def metrics_from_hits(hits: np.ndarray, n_targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user ndcg, recall, map, hitrate and mrr at K = ``hits.shape[1]``."""
    hits = np.asarray(hits, dtype=bool)
    n = np.asarray(n_targets, dtype=np.int64)
    if hits.ndim != 2 or n.shape != (hits.shape[0],):
        raise InputError("hits must be [users, K] and n_targets [users]")
    if np.any(n <= 0):
        raise InputError("every evaluated user needs at least one target")
    k = hits.shape[1]
    ranks = np.arange(1, k + 1)
    discount = 1.0 / np.log2(ranks + 1)
    h = hits.astype(np.float64)
    dcg = h @ discount
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n, k)]
    n_hits = h.sum(axis=1)
    precision_at = np.cumsum(h, axis=1) / ranks
    ap = (precision_at * h).sum(axis=1) / np.minimum(n, k)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    rr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return {
        "ndcg": dcg / ideal,
        "recall": n_hits / n,
        "map": ap,
        "hitrate": (n_hits > 0).astype(np.float64),
        "mrr": rr,
    }


def popularity_percentile(popularity: np.ndarray) -> np.ndarray:
    """Each item's share of catalogue items strictly less popular than it (0 = least, ~1 = most)."""
    pop = np.asarray(popularity, dtype=np.float64)
    if pop.size == 0:
        return pop
    return np.searchsorted(np.sort(pop), pop, side="left") / pop.size


def coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the catalogue recommended to at least one user."""
    if n_items <= 0:
        raise InputError("catalogue must not be empty")
    rec = np.asarray(recommended).ravel()
    rec = rec[rec >= 0]
    return float(np.unique(rec).size / n_items)


def summarise(
    recommended: np.ndarray,
    targets: Sequence[np.ndarray],
    n_items: int,
    popularity: np.ndarray,
    k: int,
) -> dict[str, float]:
    """Mean metrics at ``k`` over users, plus coverage, popularity bias and the user count."""
    rec = np.asarray(recommended)[:, :k]
    n = np.array([len(t) for t in targets], dtype=np.int64)
    per_user = metrics_from_hits(hits_matrix(rec, targets), n)
    pct = popularity_percentile(popularity)
    valid = rec[rec >= 0]
    out: dict[str, float] = {f"{m}@{k}" if m != "mrr" else "mrr": _mean(per_user[m]) for m in METRICS}
    out["coverage"] = round(coverage(rec, n_items), 6)
    out["popularity_bias"] = round(float(pct[valid].mean()) if valid.size else 0.0, 6)
    out["users"] = len(targets)
    return out


def _mean(x: np.ndarray) -> float:
    return round(float(x.mean()), 6) if x.size else 0.0


def top_k(scores: np.ndarray, exclude: Any, k: int) -> np.ndarray:
    """Row-wise top-k indices, highest first, ties to the lower index; ``exclude`` rows/cols get -inf.

    ``exclude`` is a scipy sparse matrix (or dense bool) of the same shape marking items a user
    must not be shown (their training items). Fewer than k allowed items pad with -1.
    """
    return _top_k_inplace(np.array(scores, dtype=np.float32, copy=True), exclude, k)


def _top_k_inplace(s: np.ndarray, exclude: Any, k: int) -> np.ndarray:
    """:func:`top_k` on a float32 block it may overwrite (saves a copy of every score block).

    Fast path: split each row into chunks of about ``sqrt(n / (k + 1))`` items and keep only the
    ``k + 1`` chunks with the highest maxima. Every other chunk's maximum is at most the lowest of
    those maxima ``t``; when the k-th best candidate is strictly above ``t``, the top k (and every
    value tied with it) lies among the candidates, so ranking them is exact. Rows where that does
    not hold (ties at ``t``, fewer than k allowed items) take the exact path on the whole row. For
    50k items this touches each score about once instead of the several passes of a partition.
    """
    if hasattr(exclude, "tocoo"):
        coo = exclude.tocoo()
        s[coo.row, coo.col] = -np.inf
    elif exclude is not None:
        s[np.asarray(exclude, dtype=bool)] = -np.inf
    rows, n = s.shape
    kk = min(k, n)
    out = np.full((rows, k), -1, dtype=np.int64)
    if kk <= 0 or rows == 0:
        return out
    todo = np.arange(rows)
    chunk = max(16, int(np.sqrt(n / (kk + 1))))
    n_chunks = -(-n // chunk)
    if n_chunks > 4 * (kk + 1):
        chunk_max = np.maximum.reduceat(s, np.arange(0, n, chunk), axis=1)
        best = np.argpartition(chunk_max, n_chunks - kk - 1, axis=1)[:, n_chunks - kk - 1 :]
        t = np.take_along_axis(chunk_max, best, axis=1).min(axis=1)
        best.sort(axis=1)  # candidates in index order, so the stable sort below breaks ties low
        cand = (best[:, :, None] * chunk + np.arange(chunk)).reshape(rows, -1)
        inside = cand < n
        cand = np.minimum(cand, n - 1)
        vals = np.where(inside, np.take_along_axis(s, cand, axis=1), -np.inf)
        order = np.argsort(-vals, axis=1, kind="stable")[:, :kk]
        top_vals = np.take_along_axis(vals, order, axis=1)
        exact = top_vals[:, -1] > t
        out[exact, :kk] = np.take_along_axis(cand, order, axis=1)[exact]
        todo = np.flatnonzero(~exact)
    if todo.size:
        out[todo, :kk] = _top_k_exact(s[todo], kk)
    return out


def _top_k_exact(s: np.ndarray, kk: int) -> np.ndarray:
    """Top ``kk`` (< or = n) of every row of a masked block, ties to the lower index, -1 for -inf."""
    n = s.shape[1]
    if kk < n:
        # The kk-th largest value per row; everything above it is in, and among the values equal
        # to it the lowest indices fill the remaining slots (ONNX TopK's tie rule).
        kth = -np.partition(-s, kk - 1, axis=1)[:, kk - 1 : kk]
        above = s > kth
        equal = s == kth
        need = kk - above.sum(axis=1, keepdims=True)
        chosen = above | (equal & (np.cumsum(equal, axis=1) <= need))
        part = np.nonzero(chosen)[1].reshape(s.shape[0], kk)
    else:
        part = np.tile(np.arange(n), (s.shape[0], 1))
    # Sort the candidates by (-score, index) so ties go to the lower index, as ONNX TopK does.
    part.sort(axis=1)
    vals = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    idx[~np.isfinite(vals)] = -1
    return idx.astype(np.int64)


def rank_global(scores: np.ndarray, users: np.ndarray, exclude: Any, k: int) -> np.ndarray:
    """Top-k per user when every user gets the same scores (popularity): one sort, then skip seen items.

    Same answer as :func:`top_k` on the broadcast scores, without a users x items block.
    """
    s = np.asarray(scores, dtype=np.float32)
    ex = exclude[users] if exclude is not None else None
    longest = int(np.diff(ex.indptr).max(initial=0)) if ex is not None else 0
    c = min(s.size, k + longest)
    order = np.argsort(-s, kind="stable")[:c]  # ties to the lower index, like top_k
    if ex is None:
        out = np.tile(order[:k], (len(users), 1))
    else:
        position = np.full(s.size, -1, dtype=np.int64)
        position[order] = np.arange(c)
        blocked = np.zeros((len(users), c), dtype=bool)
        coo = ex.tocoo()
        pos = position[coo.col]
        blocked[coo.row[pos >= 0], pos[pos >= 0]] = True
        keep_rank = np.where(~blocked, np.arange(c), c)
        picked = np.sort(keep_rank, axis=1)[:, :k]
        out = np.where(picked < c, order[np.minimum(picked, c - 1)], -1)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out.astype(np.int64)


def rank_users(
    score_fn: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    exclude: Any,
    n_items: int,
    k: int,
    batch_items_budget: int = 1 << 23,
    threads: int = 1,
) -> np.ndarray:
    """Top-k for every user in batches sized so a dense score block stays around 32 MB.

    ``threads`` > 1 ranks batches concurrently (numpy and scipy release the GIL in the heavy
    parts); ``score_fn`` must then be safe to call from several threads, as read-only models are.
    A block ``score_fn`` returns that it owns and may be written is masked in place, not copied.
    """
    batch = max(1, batch_items_budget // max(n_items, 1))
    out = np.empty((len(users), k), dtype=np.int64)

    def rank_batch(lo: int) -> None:
        u = users[lo : lo + batch]
        scores = score_fn(u)
        if not (
            isinstance(scores, np.ndarray)
            and scores.dtype == np.float32
            and scores.flags.owndata
            and scores.flags.writeable
            and scores.flags.c_contiguous
        ):
            scores = np.array(scores, dtype=np.float32, copy=True)
        out[lo : lo + len(u)] = _top_k_inplace(scores, exclude[u] if exclude is not None else None, k)

    starts = range(0, len(users), batch)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(rank_batch, starts))
    else:
        for lo in starts:
            rank_batch(lo)
    return out


def evaluate_ranking(
    recommended: np.ndarray,
    targets: Sequence[np.ndarray],
    history_sizes: np.ndarray,
    n_items: int,
    popularity: np.ndarray,
    k: int,
) -> dict[str, Any]:
    """Overall metrics plus the ``warm`` / ``cold`` segments (cold = fewer than 5 training items)."""
    if len(targets) == 0:
        raise InputError("no test users: nobody has events on both sides of the cut")
    result: dict[str, Any] = summarise(recommended, targets, n_items, popularity, k)
    hs = np.asarray(history_sizes)
    segments = {}
    for name, sel in (("warm", hs >= COLD_HISTORY), ("cold", hs < COLD_HISTORY)):
        idx = np.flatnonzero(sel)
        if idx.size:
            segments[name] = summarise(
                recommended[idx], [targets[int(i)] for i in idx], n_items, popularity, k
            )
        else:
            segments[name] = {"users": 0}
    result["segments"] = segments
    return result
