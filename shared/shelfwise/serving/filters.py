"""What a request may be shown: the configured rules, the live stock and the request's filters.

The rules (out of stock, blocked categories) give each loaded version one mask, computed once; the
live stock (:mod:`shelfwise.serving.stock`) adds its own per snapshot, normally prepared off the
request path; category filters add theirs, kept for the most recent filters. A request's own
exclusions (purchases, history, named items) go on a working copy per thread, set and undone item
by item, so a request does no work in proportion to the catalogue unless it filters by price.
A request's session history is read here too: the items the fold-in weighs, and those the rules
exclude.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shelfwise.events import EVENT_WEIGHTS
from shelfwise.serving.config import ServingRules
from shelfwise.serving.model import LoadedModel
from shelfwise.serving.stock import LiveStock


@dataclass(frozen=True)
class HistoryEvent:
    """One item of a session history: the item and what the user did with it."""

    item_id: str
    event_type: str = "view"


@dataclass(frozen=True)
class Filters:
    """Per-request filters, on top of the configured rules."""

    categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    exclude_items: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None


# Masks of category filters kept per version and stock snapshot (the most recently used; each is
# one byte per item).
FILTER_MASKS = 16
# Up to this many items a request's working mask is copied whole (a few microseconds), which also
# leaves it in the CPU's cache for the scoring graphs that read every entry (the exact and int8
# graphs); undoing the last request's marks instead left them reading it from memory (measured
# 20-50 us more per request at 100k items). Larger masks are set and undone item by item.
COPY_BELOW_BYTES = 256 * 1024


@dataclass
class _Scratch:
    """One thread's request mask for one version: a copy of a shared mask (``source``) with the
    request's own few exclusions (``marked``) set on top. The next request of the thread undoes
    those few rather than copying the whole catalogue's mask again; a request with a price
    filter (a mask of its own) leaves no ``source``, so the next one copies."""

    mask: np.ndarray
    source: np.ndarray | None = None
    source_excluded: int | None = None  # excluded items of ``source``, counted when first asked
    marked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def mirror(self, source: np.ndarray) -> None:
        """Make ``mask`` equal ``source``: undo the last request's marks, or copy when it differs
        (or is small: see ``COPY_BELOW_BYTES``)."""
        if self.source is source and source.nbytes > COPY_BELOW_BYTES:
            if self.marked.size:
                self.mask[self.marked] = source[self.marked]
        else:
            np.copyto(self.mask, source)
            if self.source is not source:
                self.source, self.source_excluded = source, None
        self.marked = np.zeros(0, np.int64)


class Exclusions:
    """The exclusion masks of the loaded versions (rules and live stock), and a request's on top.

    A request's mask is built without copying the catalogue's (one byte per item, every request):
    the shared part (rules, live stock, category filters) is computed once per version, snapshot
    and filter and cached; each thread keeps one working copy per version on which a request sets
    its own exclusions (purchases, history, excluded items), undone by the thread's next request.
    The mask a request gets is valid until that thread's next request for the same version."""

    def __init__(self, rules: ServingRules, stock: LiveStock | None) -> None:
        self.rules = rules
        self.stock = stock
        self._masks: dict[str, np.ndarray] = {}
        self._stock_masks: dict[tuple[str, str], np.ndarray] = {}
        self._filtered: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._prices: dict[tuple[str, str], np.ndarray] = {}
        self._everything: dict[str, np.ndarray] = {}  # all items excluded, per version
        self._lock = threading.Lock()
        self._local = threading.local()
        self._kept: frozenset[str] | None = None

    def keep(self, versions: Iterable[str]) -> None:
        """Forget the masks of versions no longer loaded."""
        keep = frozenset(versions)
        self._kept = keep
        self._masks = {v: m for v, m in self._masks.items() if v in keep}
        self._stock_masks = {k: m for k, m in self._stock_masks.items() if k[0] in keep}
        self._prices = {k: m for k, m in self._prices.items() if k[0] in keep}
        self._everything = {v: m for v, m in self._everything.items() if v in keep}
        with self._lock:
            for key in [key for key in self._filtered if key[0] not in keep]:
                del self._filtered[key]

    def base(self, model: LoadedModel) -> np.ndarray:
        """Configured rules for one version (out of stock, blocked categories), computed once."""
        mask = self._masks.get(model.version)
        if mask is None:
            cat = model.catalog
            mask = np.zeros(cat.n_items, dtype=bool)
            if self.rules.exclude_out_of_stock:
                mask |= ~cat.in_stock
            blocked = [cat.categories[c] for c in self.rules.blocked_categories if c in cat.categories]
            if blocked:
                mask |= np.isin(cat.category_codes, blocked)
            self._masks[model.version] = mask
        if self.stock is not None and self.rules.exclude_out_of_stock and self.stock.snapshot is not None:
            etag = self.stock.snapshot.etag
            live = self._stock_masks.get((model.version, etag))
            if live is None:  # normally prepared by the stock refresh, off the request path
                overlay = self.stock.overlay(model.version, model.catalog.item_ids)
                if overlay is None:
                    return mask
                live = mask | overlay[0]
                self._stock_masks = {k: v for k, v in self._stock_masks.items() if k[1] == etag}
                self._stock_masks[(model.version, etag)] = live
            return live
        return mask

    def prices(self, model: LoadedModel) -> np.ndarray:
        """The prices filters use: the live snapshot's where it lists the item (one array per
        version and snapshot)."""
        snap = self.stock.snapshot if self.stock else None
        if snap is None or self.stock is None:
            return model.catalog.price
        key = (model.version, snap.etag)
        price = self._prices.get(key)
        if price is None:
            overlay = self.stock.overlay(model.version, model.catalog.item_ids)
            if overlay is None:
                return model.catalog.price
            price = np.where(np.isnan(overlay[1]), model.catalog.price, overlay[1])
            self._prices = {k: v for k, v in self._prices.items() if k[1] == snap.etag}
            self._prices[key] = price
        return price

    def shared(self, model: LoadedModel, filters: Filters) -> np.ndarray:
        """The part of a request's mask its filters share with other requests: the rules, the
        live stock and the category filters (computed once per version, snapshot and filter)."""
        base = self.base(model)
        if not filters.categories and not filters.exclude_categories:
            return base
        snap = self.stock.snapshot if self.stock else None
        etag = snap.etag if snap else ""
        key = (model.version, etag, tuple(filters.categories), tuple(filters.exclude_categories))
        with self._lock:
            mask = self._filtered.get(key)
            if mask is not None:
                self._filtered.move_to_end(key)
                return mask
        cat = model.catalog
        mask = base.copy()
        if filters.categories:
            codes = [cat.categories[c] for c in filters.categories if c in cat.categories]
            mask |= ~np.isin(cat.category_codes, codes) if codes else True
        if filters.exclude_categories:
            codes = [cat.categories[c] for c in filters.exclude_categories if c in cat.categories]
            if codes:
                mask |= np.isin(cat.category_codes, codes)
        with self._lock:
            self._filtered[key] = mask
            while len(self._filtered) > FILTER_MASKS:
                self._filtered.popitem(last=False)
        return mask

    def _scratch(self, model: LoadedModel, use: str = "request") -> _Scratch:
        """This thread's working mask for ``model``'s version (one per ``use``)."""
        by_version: dict[tuple[str, str], _Scratch] | None = getattr(self._local, "by_version", None)
        if by_version is None:
            by_version = self._local.by_version = {}
        scratch = by_version.get((model.version, use))
        if scratch is None or scratch.mask.shape[0] != model.catalog.n_items:
            if self._kept is not None:  # versions no longer loaded: their copies go
                for key in [key for key in by_version if key[0] not in self._kept]:
                    del by_version[key]
            scratch = _Scratch(np.empty(model.catalog.n_items, dtype=bool))
            by_version[(model.version, use)] = scratch
        return scratch

    def only(self, model: LoadedModel, items: np.ndarray) -> np.ndarray:
        """A mask that excludes every item but ``items`` (a search pool), valid until this
        thread's next call for the version; built item by item on a working copy."""
        everything = self._everything.get(model.version)
        if everything is None:
            everything = np.ones(model.catalog.n_items, dtype=bool)
            self._everything = {**self._everything, model.version: everything}
        scratch = self._scratch(model, "only")
        scratch.mirror(everything)
        marked = np.asarray(items, dtype=np.int64)
        scratch.mask[marked] = False
        scratch.marked = marked
        return scratch.mask

    def request(
        self, model: LoadedModel, filters: Filters, extra_excluded: Sequence[int] = ()
    ) -> tuple[np.ndarray, int]:
        """The request's exclusion mask and the number of unknown ids it named.

        The mask is this thread's working copy (see the class): read it, do not keep it past the
        request or change it."""
        cat = model.catalog
        shared = self.shared(model, filters)
        known, unknown = cat.lookup(filters.exclude_items)
        marked = np.asarray([*known, *extra_excluded], dtype=np.int64)
        scratch = self._scratch(model)
        if filters.price_min is not None or filters.price_max is not None:
            np.copyto(scratch.mask, shared)
            scratch.source = scratch.source_excluded = None
            price = self.prices(model)
            if filters.price_min is not None:
                scratch.mask |= ~(price >= filters.price_min)
            if filters.price_max is not None:
                scratch.mask |= ~(price <= filters.price_max)
        else:
            scratch.mirror(shared)
        if marked.size:
            scratch.mask[marked] = True
            if scratch.source is not None:
                scratch.marked = marked
        return scratch.mask, len(unknown)

    def allowed(self, model: LoadedModel, mask: np.ndarray) -> int:
        """How many items ``mask`` (a request's) leaves: counted from the shared part's count and
        the request's own marks, without a pass over the catalogue."""
        scratch = self._scratch(model)
        if mask is not scratch.mask or scratch.source is None:
            return int(mask.shape[0] - np.count_nonzero(mask))
        if scratch.source_excluded is None:
            scratch.source_excluded = int(np.count_nonzero(scratch.source))
        marked = np.unique(scratch.marked)
        added = int(marked.size - np.count_nonzero(scratch.source[marked]))
        return int(mask.shape[0]) - scratch.source_excluded - added

    def personal(
        self, model: LoadedModel, user_index: int, history: Sequence[HistoryEvent], filters: Filters
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """A personal list's fold-in (items, weights), its exclusion mask (with a known user's
        stored purchases when the rules exclude them) and the unknown-id count."""
        items, weights, excluded, unknown = self.history(model, history)
        if user_index >= 0 and self.rules.exclude_purchased:
            excluded = (
                excluded
                + model.catalog.stored_purchases(user_index, self.rules.max_stored_purchases).tolist()
            )
        mask, unknown_excl = self.request(model, filters, excluded)
        return items, weights, mask, unknown + unknown_excl

    def history(
        self, model: LoadedModel, history: Sequence[HistoryEvent]
    ) -> tuple[np.ndarray, np.ndarray, list[int], int]:
        """(items, weights) for fold-in, items to exclude by the rules, and the unknown-id count."""
        items: list[int] = []
        weights: list[float] = []
        excluded: list[int] = []
        unknown = 0
        for ev, i in zip(
            history, model.catalog.indices([ev.item_id for ev in history]).tolist(), strict=True
        ):
            if i < 0:
                unknown += 1
                continue
            if self.rules.exclude_seen or (self.rules.exclude_purchased and ev.event_type == "purchase"):
                excluded.append(i)
            w = EVENT_WEIGHTS.get(ev.event_type, 0.0)
            if w > 0:
                items.append(i)
                weights.append(w)
        return np.asarray(items, np.int64), np.asarray(weights, np.float32), excluded, unknown
