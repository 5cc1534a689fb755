"""Item-to-item nearest neighbours: cosine similarity of co-occurrence in user histories or sessions.

Also the "similar items" of a bundle (``similar.npz``). The similarity matrix is computed in row
blocks and pruned to the top ``neighbours`` per item, so memory stays ``O(N x M)`` plus one
block, which is what lets 100k-item catalogues fit in a Lambda.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnx
import scipy.sparse as sp

from shelfwise import onnx_export as ox
from shelfwise.training.base import item_popularity
from shelfwise.training.data import Interactions
from shelfwise.training.popularity import Popularity

MAX_ROW_ITEMS = 100  # most recent distinct items per user/session used for co-occurrence
PRIOR_SCALE = 1e-4  # popularity prior, far below one co-occurrence, orders what history cannot
# The neighbour table depends on the data and (basis, neighbours, shrink) only; the recency
# variants reuse it instead of recomputing. Keyed by content hash; at most 4 tables.
_SIMILARITY_CACHE: dict[tuple[str, str, int, float], tuple[np.ndarray, np.ndarray]] = {}


def clear_similarity_cache() -> None:
    """Drop cached neighbour tables (the job does once a window is done: ~60 MB each at 50k items)."""
    _SIMILARITY_CACHE.clear()


class ItemKNN:
    """Cosine ItemKNN with shrinkage: ``sim(i, j) = co(i, j) / (|i| |j| + shrink)``, top-M per item.

    ``scores(u) = prior + sum_h w_uh * sim(h, .)``. The plain baseline uses the whole history
    equally and a negligible popularity prior. The recency variant decays history weights with a
    half-life and adds ``popularity_prior`` x recent popularity (last ``prior_window_days``,
    scaled to 1): on shop logs what a user did last week and what sells this week both matter.
    """

    algorithm = "itemknn"

    def __init__(
        self,
        neighbours: int = 100,
        basis: str = "user",
        shrink: float = 10.0,
        half_life_days: float | None = None,
        popularity_prior: float = 0.0,
        prior_window_days: float = 7.0,
        threads: int = 1,
    ) -> None:
        if basis not in {"user", "session"}:
            raise ValueError("basis must be 'user' or 'session'")
        self.params: dict[str, Any] = {
            "neighbours": int(neighbours),
            "basis": basis,
            "shrink": float(shrink),
            "half_life_days": half_life_days,
            "popularity_prior": float(popularity_prior),
            "prior_window_days": float(prior_window_days),
        }
        self.threads = threads  # for the neighbour table; not a hyper-parameter
        self.indices: np.ndarray | None = None  # [N, M] int64
        self.similarities: np.ndarray | None = None  # [N, M] float32
        self.sim: sp.csr_matrix | None = None
        self.user_hist: sp.csr_matrix | None = None
        self.prior: np.ndarray | None = None

    def fit(self, data: Interactions) -> ItemKNN:
        self._export: ox.NeighbourModel | None = None
        key = (data.data_hash(), self.params["basis"], self.params["neighbours"], self.params["shrink"])
        if key not in _SIMILARITY_CACHE:
            binary = recent_rows(data, self.params["basis"], MAX_ROW_ITEMS)
            if len(_SIMILARITY_CACHE) >= 4:
                _SIMILARITY_CACHE.pop(next(iter(_SIMILARITY_CACHE)))
            _SIMILARITY_CACHE[key] = top_neighbours(
                binary, self.params["neighbours"], self.params["shrink"], threads=self.threads
            )
        self.indices, self.similarities = _SIMILARITY_CACHE[key]
        n, m = self.indices.shape
        rows = np.repeat(np.arange(n), m)
        sim = sp.csr_matrix((self.similarities.ravel(), (rows, self.indices.ravel())), shape=(n, n))
        sim.eliminate_zeros()
        sim.sort_indices()  # canonical now, so concurrent scoring threads never re-sort it
        self.sim = sim
        self.user_hist = data.history_matrix(self.params["half_life_days"])
        pop = item_popularity(data)
        prior = PRIOR_SCALE * pop / max(float(pop.max()), 1e-12)
        if self.params["popularity_prior"] > 0:
            recent = Popularity(self.params["prior_window_days"]).fit(data).scores
            assert recent is not None
            prior = prior + self.params["popularity_prior"] * recent / max(float(recent.max()), 1e-12)
        self.prior = prior.astype(np.float32)
        return self

    def _fitted(self) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        if self.sim is None or self.user_hist is None or self.prior is None:
            raise RuntimeError("fit the model first")
        return self.sim, self.user_hist, self.prior

    def score_users(self, users: np.ndarray) -> np.ndarray:
        sim, hist, prior = self._fitted()
        scores = (hist[users] @ sim).toarray().astype(np.float32, copy=False)
        scores += prior
        return scores

    def export_arrays(self) -> ox.NeighbourModel:
        cached = getattr(self, "_export", None)
        if cached is not None:
            return cached
        _, hist, prior = self._fitted()
        assert self.indices is not None and self.similarities is not None
        self._export = ox.NeighbourModel.create(
            self.indices, self.similarities, hist.indptr, hist.indices, hist.data, prior=prior
        )
        return self._export

    def to_onnx(self) -> onnx.ModelProto:
        return ox.build_neighbour_model(self.export_arrays(), meta={"shelfwise.algorithm": self.algorithm})

    def reference(
        self,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        exclude: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        return ox.neighbour_reference(
            self.export_arrays(), user_index, history_items, history_weights, exclude, k
        )

    def similar(self, m: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """(indices int32 [N, m], scores f4 [N, m]) for ``similar.npz``; padding has score 0."""
        if self.indices is None or self.similarities is None:
            raise RuntimeError("fit the model first")
        m = min(m, self.indices.shape[1])
        return self.indices[:, :m].astype(np.int32), self.similarities[:, :m].astype(np.float32)

    def describe(self) -> dict[str, Any]:
        sim, _, _ = self._fitted()
        return {"similarity_nnz": int(sim.nnz)}


def recent_rows(data: Interactions, rows: str, max_items: int) -> sp.csr_matrix:
    """Binary rows x items matrix keeping each row's ``max_items`` most recently touched items.

    Co-occurrence cost grows with the square of a row's length, and the oldest items of a very
    long history say least about what goes together now, so long rows are cut to the recent end.
    """
    r = data.user if rows == "user" else data.session
    n_rows = data.n_users if rows == "user" else int(data.session.max(initial=-1)) + 1
    # Last touch per (row, item), then rank within the row from the most recent.
    key = r.astype(np.int64) * data.n_items + data.item
    order = np.argsort(key, kind="stable")
    last = np.ones(len(key), dtype=bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    pairs = order[last]  # index of the last event of each (row, item); ts-sorted input
    pr, pi, pt = r[pairs], data.item[pairs], data.ts[pairs]
    o = np.lexsort((-pt, pr))
    pr, pi = pr[o], pi[o]
    starts = np.searchsorted(pr, np.arange(n_rows))
    rank = np.arange(pr.size) - starts[pr]
    keep = rank < max_items
    m = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (pr[keep], pi[keep])), shape=(n_rows, data.n_items)
    )
    return m


def top_neighbours(
    basis: sp.csr_matrix,
    neighbours: int,
    shrink: float,
    block_budget: int = 1 << 21,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``neighbours`` cosine neighbours of every item (column) of a binary rows x items matrix.

    Returns (indices [N, M] int64, similarities [N, M] float32), best first (equal similarities
    in an order that depends on the data and ``block_budget`` only, not on ``threads``; a stable
    sort by column would cost about as much again), padded with the item
    itself at similarity 0 when an item has fewer co-occurring items than M. Works on the sparse
    co-occurrence rows only, in blocks whose co-occurrence count is bounded by ``block_budget``
    entries, so 100k-item catalogues need no dense N x N anything; ``threads`` blocks run at once
    (scipy's sparse product and numpy release the GIL), each holding about 50 bytes per entry.
    """
    n = basis.shape[1]
    m = max(1, min(int(neighbours), n - 1)) if n > 1 else 1
    items_rows = basis.T.tocsr()  # items x rows
    norms = np.sqrt(np.asarray(items_rows.sum(axis=1)).ravel().astype(np.float64))
    # Upper bound of each item's co-occurrence row length: sum of its rows' lengths.
    row_len = np.diff(basis.indptr).astype(np.float64)
    cum = np.cumsum(items_rows @ row_len)
    out_idx = np.repeat(np.arange(n, dtype=np.int64)[:, None], m, axis=1)
    out_val = np.zeros((n, m), dtype=np.float32)
    blocks = []
    lo = 0
    while lo < n:
        base = cum[lo - 1] if lo else 0.0
        hi = min(n, max(int(np.searchsorted(cum, base + block_budget, side="right")), lo + 1))
        blocks.append((lo, hi))
        lo = hi

    def block(bounds: tuple[int, int]) -> None:
        lo, hi = bounds
        co = items_rows[lo:hi] @ basis  # CSR: each item's co-occurrence counts (all > 0), rows in order
        counts = np.diff(co.indptr)
        rows = np.repeat(np.arange(hi - lo, dtype=np.int64), counts)
        cols = co.indices
        sim = co.data / (norms[lo:hi][rows] * norms[cols] + (shrink + 1e-12))
        # An item's co-occurrence with itself scores 0: it sorts last in its row and, if it
        # lands in the top m, writes exactly the padding (the item itself at 0).
        sim[cols == rows + lo] = 0.0
        # One float key sorts by row, then similarity descending (sim is in [0, 1]). Rows are
        # already grouped and ascending, so they keep their positions: rank = position - start.
        order = np.argsort(rows - 0.5 * sim)
        rank = np.arange(rows.size) - np.repeat(co.indptr[:-1].astype(np.int64), counts)
        top = np.flatnonzero(rank < m)
        chosen = order[top]
        out_idx[rows[top] + lo, rank[top]] = cols[chosen]
        out_val[rows[top] + lo, rank[top]] = sim[chosen]

    if threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(block, blocks))
    else:
        for b in blocks:
            block(b)
    return out_idx, out_val
