"""New items at serve time: content-based scores for catalogue items the model has never seen.

A bundle trained with a catalogue carries ``content.npz`` (:func:`shelfwise.training.content.
content_arrays`): the catalogue's items without interactions and TF-IDF vectors (title words,
category path, brand) of every item, the graph's first. Serving (numpy only, no scipy) builds the
user's profile from the items of their history (the request's session history, and a known
user's stored purchases), scores the new items by cosine, and gives the best ones up to
``new_item_slots`` places at the end of the list (ServingRules; 0 = off, the default). The same
vectors answer "similar items" for a new item, which the model cannot place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shelfwise.bundle import _load_npz, text_list

CONTENT_FILE = "content.npz"


@dataclass(frozen=True)
class NewItems:
    n_graph: int
    ids: np.ndarray  # sorted UTF-8 ids of the new items
    titles: np.ndarray
    categories: np.ndarray
    price: np.ndarray
    in_stock: np.ndarray
    indptr: np.ndarray  # CSR rows: graph items, then new items
    indices: np.ndarray
    data: np.ndarray
    n_terms: int

    @classmethod
    def load(cls, bundle_dir: str | Path, manifest_files: dict[str, str]) -> NewItems | None:
        """The bundle's new items (None when it has no ``content.npz``)."""
        path = Path(bundle_dir) / CONTENT_FILE
        if CONTENT_FILE not in manifest_files or not path.exists():
            return None
        z = _load_npz(path)
        out = cls(
            int(z["n_graph_items"][0]),
            z["new_item_id"],
            z["new_title"],
            z["new_category"],
            z["new_price"],
            z["new_in_stock"],
            z["vec_indptr"],
            z["vec_indices"],
            z["vec_data"],
            int(z["n_terms"][0]),
        )
        if out.indptr.shape != (out.n_graph + out.ids.shape[0] + 1,):
            raise ValueError("content.npz: vectors do not cover the graph and the new items")
        return out

    @property
    def n_new(self) -> int:
        return int(self.ids.shape[0])

    def _rows(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Weighted sum of item vectors ``rows`` as a dense term vector."""
        profile = np.zeros(self.n_terms, np.float32)
        for r, w in zip(rows.tolist(), weights.tolist(), strict=True):
            lo, hi = self.indptr[r], self.indptr[r + 1]
            np.add.at(profile, self.indices[lo:hi], w * self.data[lo:hi])
        return profile

    def _cosine(self, profile: np.ndarray, first: int, count: int) -> np.ndarray:
        """Cosine of ``profile`` with rows ``first .. first + count`` (rows are unit length)."""
        norm = float(np.linalg.norm(profile))
        if norm == 0 or count == 0:
            return np.zeros(count, np.float32)
        lo, hi = self.indptr[first], self.indptr[first + count]
        contrib = self.data[lo:hi] * profile[self.indices[lo:hi]]
        starts = self.indptr[first : first + count] - lo
        sums = np.add.reduceat(contrib, starts) if contrib.size else np.zeros(count, np.float32)
        sums[np.diff(self.indptr[first : first + count + 1]) == 0] = 0.0  # empty rows
        return (sums / norm).astype(np.float32)

    def for_history(
        self, items: np.ndarray, weights: np.ndarray, unavailable: np.ndarray, n: int, min_score: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(new item positions, scores): the ``n`` best new items for a history of graph items."""
        if n <= 0 or self.n_new == 0 or items.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self._cosine(
            self._rows(items.astype(np.int64), weights.astype(np.float32)), self.n_graph, self.n_new
        )
        scores[unavailable] = -1.0
        top = np.argsort(-scores, kind="stable")[:n]
        top = top[scores[top] >= min_score]
        return top.astype(np.int64), scores[top]

    def position(self, item_id: str) -> int | None:
        """Position of a new item's id, None when it is not one."""
        key = item_id.encode("utf-8", "surrogatepass")
        if self.n_new == 0 or len(key) > self.ids.dtype.itemsize or key.endswith(b"\0"):
            return None
        pos = int(np.searchsorted(self.ids, key))
        return pos if pos < self.n_new and self.ids[pos] == key else None

    def similar_graph_items(
        self, position: int, exclude: np.ndarray, k: int, *, graph_item: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Graph items most similar by content to new item ``position`` (or to graph item
        ``position`` with ``graph_item``), leaving out ``exclude``d ones."""
        row = position if graph_item else self.n_graph + position
        profile = self._rows(np.array([row]), np.array([1.0], np.float32))
        scores = self._cosine(profile, 0, self.n_graph)
        scores[exclude] = -1.0
        top = np.argsort(-scores, kind="stable")[:k]
        top = top[scores[top] > 0]
        return top.astype(np.int64), scores[top]

    def attributes(self, positions: np.ndarray) -> tuple[list[str], list[str], list[str], list[float | None]]:
        """(ids, categories, titles, prices) of new items, for an answer."""
        p = positions.astype(np.intp)
        prices = [None if x != x else round(x, 4) for x in self.price[p].tolist()]
        return text_list(self.ids[p]), text_list(self.categories[p]), text_list(self.titles[p]), prices
