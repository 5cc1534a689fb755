"""The served catalogue: item id <-> index, attributes for filters, user index, and lexical search.

Built once per loaded bundle from ``items.npz``/``users.npz`` (numpy only). The lexical index over
titles and categories is built on the first search, not at cold start, because tokenising a
large catalogue costs more than everything else in a load.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shelfwise.bundle import Bundle, BundleMismatchError, item_lookups, popularity_order, text_list

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of 2+ characters with a naive plural strip ("shoes" -> "shoe")."""
    out = []
    for tok in _TOKEN.findall(text.lower()):
        if len(tok) < 2:
            continue
        if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
            tok = tok[:-1]
        out.append(tok)
    return out


@dataclass
class LexicalIndex:
    """BM25 over each item's title and category, stored as CSR postings (numpy)."""

    vocabulary: dict[str, int]
    indptr: np.ndarray
    items: np.ndarray
    tf: np.ndarray
    doc_len: np.ndarray
    n_items: int
    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def build(cls, titles: Sequence[str], categories: Sequence[str]) -> LexicalIndex:
        vocab: dict[str, int] = {}
        tok_ids: list[int] = []
        item_ids: list[int] = []
        doc_len = np.zeros(len(titles), np.float32)
        for i, (title, cat) in enumerate(zip(titles, categories, strict=True)):
            toks = tokenize(f"{title} {cat}")
            doc_len[i] = len(toks)
            for tok in toks:
                tok_ids.append(vocab.setdefault(tok, len(vocab)))
                item_ids.append(i)
        pairs = np.array(tok_ids, np.int64) * len(titles) + np.array(item_ids, np.int64)
        uniq, counts = np.unique(pairs, return_counts=True)
        tok_of = uniq // max(len(titles), 1)
        indptr = np.zeros(len(vocab) + 1, np.int64)
        np.add.at(indptr, tok_of + 1, 1)
        return cls(
            vocabulary=vocab,
            indptr=np.cumsum(indptr),
            items=(uniq % max(len(titles), 1)).astype(np.int64),
            tf=counts.astype(np.float32),
            doc_len=doc_len,
            n_items=len(titles),
        )

    def __post_init__(self) -> None:
        self._avgdl = float(self.doc_len.mean()) if self.n_items else 1.0

    def score(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, ascending; BM25 scores) of items matching at least one query token.

        Work in proportion to the matching postings, not to the catalogue."""
        parts = []
        for tok in set(tokenize(query)):
            t = self.vocabulary.get(tok)
            if t is None:
                continue
            lo, hi = self.indptr[t], self.indptr[t + 1]
            items, tf = self.items[lo:hi], self.tf[lo:hi]
            df = hi - lo
            idf = math.log(1 + (self.n_items - df + 0.5) / (df + 0.5))
            norm = tf + self.k1 * (1 - self.b + self.b * self.doc_len[items] / max(self._avgdl, 1e-6))
            parts.append((items, idf * tf * (self.k1 + 1) / norm))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        hit = np.unique(np.concatenate([items for items, _ in parts]))
        scores = np.zeros(hit.size, np.float32)
        for items, contribution in parts:  # a token's postings name each item once
            scores[np.searchsorted(hit, items)] += contribution
        return hit, scores


def _is_index(values: np.ndarray, n: int, size: int | None = None) -> bool:
    """``values`` has shape [n] and holds integers in [0, size) (size defaults to n)."""
    return (
        values.shape == (n,)
        and values.dtype.kind in "iu"
        and (n == 0 or 0 <= int(values.min()) <= int(values.max()) < (n if size is None else size))
    )


def _checked_popularity_order(order: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """``order`` as int64 when it ranks every item once by descending popularity, ties to the lower
    index (what :func:`shelfwise.bundle.popularity_order` gives); BundleMismatchError otherwise."""
    n = popularity.shape[0]
    if not np.isfinite(popularity).all():  # NaN has no place in a descending order: sort here
        return popularity_order(popularity).astype(np.int64)
    if not _is_index(order, n) or (n and int(np.bincount(order, minlength=n).max()) != 1):
        raise BundleMismatchError("items.popularity_order is not a permutation of the items")
    ranked = -popularity[order]  # must be non-decreasing, the index increasing within ties
    if n > 1 and not bool(
        ((ranked[1:] > ranked[:-1]) | ((ranked[1:] == ranked[:-1]) & (order[1:] > order[:-1]))).all()
    ):
        raise BundleMismatchError("items.popularity_order does not rank items by popularity")
    return order.astype(np.int64)


@dataclass
class Catalog:
    """Items of one bundle with the lookups serving needs per request."""

    item_ids: np.ndarray
    # The id index: item_ids[id_order] is sorted, searched with np.searchsorted. A dict of 100k
    # ids costs 25-40 ms of a cold start to build; this costs nothing (written by the bundle).
    id_order: np.ndarray
    sorted_ids: np.ndarray
    category_codes: np.ndarray
    categories: dict[str, int]
    price: np.ndarray
    popularity: np.ndarray
    in_stock: np.ndarray
    titles: np.ndarray
    category_names: np.ndarray
    users: np.ndarray | None = None
    purchased_indptr: np.ndarray | None = None
    purchased_items: np.ndarray | None = None
    similar_indices: np.ndarray | None = None
    similar_scores: np.ndarray | None = None
    # Item indices by descending popularity, ties to the lower index (the fallback's ranking).
    popularity_order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _lexical: LexicalIndex | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Catalog:
        """The catalogue of a read bundle; BundleMismatchError when its ids or lookups are wrong.

        Takes the bundle's precomputed lookups (:func:`shelfwise.bundle.item_lookups`) after
        cheap checks (a few ms at 100k items), or computes them for a bundle written without.
        """
        items = bundle.items
        ids = items["item_id"]
        n = ids.shape[0]
        keys = ("item_id_order", "category_code", "category_names", "popularity_order")
        lookups = {k: items[k] for k in keys if k in items}
        if len(lookups) < len(keys):
            lookups = item_lookups(items)
        order, codes, names = lookups["item_id_order"], lookups["category_code"], lookups["category_names"]
        if not _is_index(order, n):
            raise BundleMismatchError("items.item_id_order is not an index of item_id")
        sorted_ids = ids[order]
        # strictly increasing: sorted, and every id once (so order is a permutation, ids unique)
        if n > 1 and not bool((sorted_ids[1:] > sorted_ids[:-1]).all()):
            raise BundleMismatchError("items.item_id has duplicates (or item_id_order does not sort it)")
        if (
            names.ndim != 1
            or names.dtype.kind not in "US"
            or not _is_index(codes, n, names.shape[0])
            or not bool((names[codes] == items["category"]).all())
        ):
            raise BundleMismatchError("items.category_code does not match items.category")
        categories = {c: i for i, c in enumerate(text_list(names))}
        if len(categories) != names.shape[0]:
            raise BundleMismatchError("items.category_names has duplicates")
        cat = cls(
            item_ids=ids,
            id_order=order.astype(np.int64),
            sorted_ids=sorted_ids,
            category_codes=codes,
            categories=categories,
            price=items["price"],
            popularity=items["popularity"],
            in_stock=items["in_stock"],
            titles=items["title"],
            category_names=items["category"],
            users=bundle.users,
            similar_indices=bundle.similar_indices,
            similar_scores=bundle.similar_scores,
            popularity_order=_checked_popularity_order(lookups["popularity_order"], items["popularity"]),
        )
        if bundle.purchased is not None:
            cat.purchased_indptr, cat.purchased_items = bundle.purchased
        return cat

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def user_index(self, user_id: str | None) -> int:
        """Position of ``user_id`` in the bundle's sorted user index, or -1 when unknown."""
        if user_id is None or self.users is None or self.users.size == 0:
            return -1
        # The column must be aligned (bundles write and load their members so): numpy copies an
        # unaligned array whole on every searchsorted (40 us at 10k users instead of 3).
        pos = int(np.searchsorted(self.users, user_id))
        return pos if pos < self.users.size and self.users[pos] == user_id else -1

    def indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Index of each id, -1 where unknown (one binary search for all of them)."""
        keys: Sequence[str | bytes] = item_ids
        width = self.sorted_ids.dtype.itemsize
        if self.sorted_ids.dtype.kind == "S":  # stored UTF-8; a lone surrogate matches nothing
            keys = [i.encode("utf-8", "surrogatepass") for i in item_ids]
        else:
            width //= 4
        # an id longer than every catalogue id cannot match: leave it out of the array, whose
        # width (and so size) is the longest id given
        # (numpy drops trailing NULs: such an id would match the id without them)
        fits = [
            len(i) <= width and not (i.endswith(b"\0") if isinstance(i, bytes) else i.endswith("\0"))
            for i in keys
        ]
        out = np.full(len(fits), -1, np.int64)
        query = [i for i, ok in zip(keys, fits, strict=True) if ok]
        if not query or not self.n_items:
            return out
        wanted = np.array(query, dtype=self.sorted_ids.dtype)
        pos = np.minimum(np.searchsorted(self.sorted_ids, wanted), self.n_items - 1)
        found = np.where(self.sorted_ids[pos] == wanted, self.id_order[pos], -1)
        if len(query) == len(fits):
            return found
        out[np.flatnonzero(fits)] = found
        return out

    def index_of(self, item_id: str) -> int | None:
        """Index of one id, or None when it is not in the catalogue."""
        i = int(self.indices([item_id])[0])
        return i if i >= 0 else None

    def lookup(self, item_ids: Sequence[str]) -> tuple[list[int], list[int]]:
        """(indices of known ids, positions in the input of unknown ones)."""
        idx = self.indices(item_ids)
        known = idx >= 0
        return idx[known].tolist(), np.flatnonzero(~known).tolist()

    def stored_purchases(self, user_index: int, limit: int) -> np.ndarray:
        """The ``limit`` most recent items the bundle records as bought by a known user (stored most
        recent first; empty when not recorded)."""
        if user_index < 0 or self.purchased_indptr is None or self.purchased_items is None:
            return np.zeros(0, np.int64)
        lo, hi = self.purchased_indptr[user_index], self.purchased_indptr[user_index + 1]
        return self.purchased_items[lo:hi][:limit] if limit else np.zeros(0, np.int64)

    def lexical(self) -> LexicalIndex:
        """The search index, built on first use (thread-safe)."""
        if self._lexical is None:
            with self._lock:
                if self._lexical is None:
                    self._lexical = LexicalIndex.build(text_list(self.titles), text_list(self.category_names))
        return self._lexical
