"""Approximate nearest-neighbour index over item factors: clustered pages with a ball bound.

Built at training time (numpy only) and searched inside the ONNX graph
(:func:`shelfwise.onnx_ann.build_factor_ann_model`). The items are put in a *storage order* where
items close together in factor space are neighbours (two levels of k-means: coarse lists, then
small clusters inside each list), and the order is cut into *pages* of ``page`` consecutive items.
Each page has a centroid ``c`` and a radius ``r`` (the largest distance of a member from ``c``).
For a user vector ``u`` and a member ``y``: ``u · y = u · c + u · (y - c) <= u · c + |u| r``.
The graph ranks pages by ``û · c + alpha r`` (``û = u / |u|``; ``alpha = 1`` is the bound,
smaller values trade the guarantee for a sharper ranking, chosen by measured recall), opens the
best ``probe`` pages, ranks their items by 8-bit codes and re-scores the best few from the stored
rows. A request reads the page table (``N / page`` rows of ``d`` bytes) and ``probe`` pages, not
all ``N`` items.

The stored rows are two levels (:func:`quantise_two_level`): ``y ≈ s1 q1 + s2 q2`` with ``q1``
the candidate stage's 8-bit codes and ``q2`` a 4-bit residual, so the codes the candidate stage
needs anyway carry most of the re-scoring precision (the largest error is below float16's) and the
bundle holds 1.5 bytes per value instead of float32's 4 plus codes.

Why not a library: FAISS (the obvious one) unzips to 63 MB against the serving function's 150 MB
budget (about 133 MB used), and FAISS or hnswlib would be a second runtime next to ONNX Runtime
with its own exclusion handling; this index is a few arrays inside the one graph, which applies
the exclusion mask exactly like the other graphs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Items per page: a page's codes are one [d, page] matrix, read in one run (4 KB at d = 64).
DEFAULT_PAGE = 64


@dataclass(frozen=True)
class PageIndex:
    """Storage order and pages. ``order[p, j]``: the item at offset ``j`` of page ``p`` (the last
    page is padded: ``padding[p, j]`` marks slots that hold no item; their order entry is 0)."""

    order: np.ndarray  # int32 [P, page]
    padding: np.ndarray  # bool [P, page]
    centroids: np.ndarray  # float32 [P, d]
    radius: np.ndarray  # float32 [P]
    page: int

    @property
    def n_pages(self) -> int:
        return int(self.order.shape[0])

    @property
    def n_items(self) -> int:
        return int((~self.padding).sum())

    def position(self) -> np.ndarray:
        """Storage position (page x page size + offset) of each item index."""
        flat = self.order.reshape(-1)
        valid = ~self.padding.reshape(-1)
        pos = np.empty(self.n_items, np.int32)
        pos[flat[valid]] = np.flatnonzero(valid).astype(np.int32)
        return pos

    def page_keys(self, user_vec: np.ndarray, alpha: float) -> np.ndarray:
        """``û · c + alpha r`` for every page (the float version of the graph's ranking)."""
        u = np.asarray(user_vec, np.float32).reshape(-1)
        norm = float(np.linalg.norm(u))
        return self.centroids @ (u / norm if norm > 0 else u) + np.float32(alpha) * self.radius


def _group_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label sums of the rows of ``x`` [k, d] and counts [k] (sorted segments, not ``add.at``)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.zeros((k, x.shape[1]), np.float64)
    present = counts > 0
    sums[present] = np.add.reduceat(x[order].astype(np.float64), starts[present], axis=0)
    return sums, counts


def _assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Nearest centroid of each row (argmin of |c|^2 - 2 x.c), in chunks to bound memory."""
    c_norm = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(x.shape[0], np.int32)
    for lo in range(0, x.shape[0], chunk):
        d = c_norm[None, :] - 2.0 * (x[lo : lo + chunk] @ centroids.T)
        out[lo : lo + chunk] = np.argmin(d, axis=1)
    return out


def _kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, iterations: int, sample: int | None = None
) -> np.ndarray:
    """Lloyd's k-means (squared L2), trained on a sample of ``x``; returns the centroids [k, d]."""
    train = x if sample is None or x.shape[0] <= sample else x[rng.choice(x.shape[0], sample, replace=False)]
    k = min(k, train.shape[0])
    centroids = train[rng.choice(train.shape[0], k, replace=False)].copy()
    for _ in range(iterations):
        labels = _assign(train, centroids)
        sums, counts = _group_sums(train, labels, k)
        empty = counts == 0
        centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if empty.any():  # re-seed empty clusters on random points
            centroids[empty] = train[rng.choice(train.shape[0], int(empty.sum()), replace=False)]
    return centroids


def cluster_labels(x: np.ndarray, k: int, *, seed: int = 0, iterations: int = 6) -> np.ndarray:
    """The k-means cluster (0..k-1) of each row of ``x``: groups of nearby items, for checks."""
    rng = np.random.default_rng(seed)
    return _assign(x, _kmeans(np.asarray(x, np.float32), k, rng, iterations, sample=20000))


def storage_order(item_factors: np.ndarray, *, page: int, seed: int = 0, iterations: int = 8) -> np.ndarray:
    """Item indices in an order where neighbours in factor space are neighbours in the order.

    Coarse k-means (about ``4 sqrt(N / page)`` lists, Lloyd on a sample), then inside each list a
    small k-means into clusters of about a page; lists and clusters are laid out one after the other.
    """
    y = item_factors
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    n_lists = max(1, min(4096, round(math.sqrt(n / page) * 4)))
    coarse = _kmeans(y, n_lists, rng, iterations, sample=max(64 * n_lists, 20000))
    lists = _assign(y, coarse)
    by_list = np.argsort(lists, kind="stable")
    bounds = np.searchsorted(lists[by_list], np.arange(len(coarse) + 1))
    parts: list[np.ndarray] = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        members = by_list[lo:hi]
        if members.size <= page:
            parts.append(members)
            continue
        sub = _kmeans(y[members], -(-members.size // page), rng, 4)
        labels = _assign(y[members], sub)
        parts.append(members[np.argsort(labels, kind="stable")])
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


def build_page_index(
    item_factors: np.ndarray, *, page: int = DEFAULT_PAGE, seed: int = 0, iterations: int = 8
) -> PageIndex:
    """The index of ``item_factors`` [N, d] (see the module docstring)."""
    y = np.ascontiguousarray(item_factors, dtype=np.float32)
    n = y.shape[0]
    order = storage_order(y, page=page, seed=seed, iterations=iterations)
    n_pages = -(-n // page)
    padded = np.zeros(n_pages * page, np.int32)
    padded[:n] = order
    padding = np.zeros(n_pages * page, bool)
    padding[n:] = True
    rows = y[order]
    starts = np.arange(0, n, page)
    lengths = np.diff(np.append(starts, n))
    centroids = (np.add.reduceat(rows.astype(np.float64), starts, axis=0) / lengths[:, None]).astype(
        np.float32
    )
    owner = np.repeat(np.arange(n_pages), lengths)
    dist = np.linalg.norm(rows - centroids[owner], axis=1).astype(np.float32)
    # a hair of slack, so float rounding never puts a member above its bound
    radius = np.maximum.reduceat(dist, starts) * np.float32(1 + 1e-5) + np.float32(1e-7)
    return PageIndex(padded.reshape(n_pages, page), padding.reshape(n_pages, page), centroids, radius, page)


def quantise_two_level(rows: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float]:
    """``rows ≈ s1 (q1 - 128) + s2 (q2 - 8)``: ``q1`` uint8 codes (offset 128, the candidate
    stage's), ``q2`` 4-bit codes of the residual (offset 8), two per byte (dimension ``2j`` in the
    low nibble, ``2j + 1`` in the high one; an odd ``d`` gets a zero column). Per-tensor scales.

    The residual of ``q1`` is at most ``s1 / 2``, so the stored value is off by at most
    ``s1 / 28 = max|Y| / 3556``: less than float16's ``max|Y| / 2048`` on the largest values, in
    1.5 bytes per value instead of 2 (plus nothing for the codes, which the candidate stage reads).
    """
    s1 = float(np.abs(rows).max()) / 127.0 or 1.0
    c1 = np.clip(np.rint(rows / s1), -127, 127)
    residual = rows - (c1 * s1).astype(np.float32)
    s2 = float(np.abs(residual).max()) / 7.0 or 1.0
    c2 = (np.clip(np.rint(residual / s2), -7, 7) + 8).astype(np.uint8)
    if c2.shape[1] % 2:
        c2 = np.concatenate([c2, np.full((c2.shape[0], 1), 8, np.uint8)], axis=1)
    packed = (c2[:, 0::2] | (c2[:, 1::2] << 4)).astype(np.uint8)
    return (c1 + 128).astype(np.uint8), s1, packed, s2


def dequantise_two_level(q1: np.ndarray, s1: float, q2: np.ndarray, s2: float) -> np.ndarray:
    """The stored rows the graph re-scores with (float32, the same arithmetic as the graph)."""
    d = q1.shape[1]
    nibbles = np.empty((q2.shape[0], q2.shape[1] * 2), np.uint8)
    nibbles[:, 0::2] = q2 & 15
    nibbles[:, 1::2] = q2 >> 4
    a = (q1.astype(np.float32) - np.float32(128)) * np.float32(s1)
    return a + (nibbles[:, :d].astype(np.float32) - np.float32(8)) * np.float32(s2)
