"""What a request may be shown: the configured rules, the live stock and the request's filters.

The rules (out of stock, blocked categories) give each loaded version one mask, computed once; the
live stock (:mod:`shelfwise.serving.stock`) adds its own per snapshot, normally prepared off the
request path; a request's filters and history add theirs on a copy. A request's session history
is read here too: the items the fold-in weighs, and those the rules exclude.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


class Exclusions:
    """The exclusion masks of the loaded versions (rules and live stock), and a request's on top."""

    def __init__(self, rules: ServingRules, stock: LiveStock | None) -> None:
        self.rules = rules
        self.stock = stock
        self._masks: dict[str, np.ndarray] = {}
        self._stock_masks: dict[tuple[str, str], np.ndarray] = {}

    def keep(self, versions: Iterable[str]) -> None:
        """Forget the masks of versions no longer loaded."""
        keep = set(versions)
        self._masks = {v: m for v, m in self._masks.items() if v in keep}

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
        """The prices filters use: the live snapshot's where it lists the item."""
        overlay = self.stock.overlay(model.version, model.catalog.item_ids) if self.stock else None
        if overlay is None:
            return model.catalog.price
        return np.where(np.isnan(overlay[1]), model.catalog.price, overlay[1])

    def request(
        self, model: LoadedModel, filters: Filters, extra_excluded: Sequence[int] = ()
    ) -> tuple[np.ndarray, int]:
        """The request's exclusion mask and the number of unknown ids it named."""
        cat = model.catalog
        mask = self.base(model).copy()
        if filters.categories:
            codes = [cat.categories[c] for c in filters.categories if c in cat.categories]
            mask |= ~np.isin(cat.category_codes, codes) if codes else True
        if filters.exclude_categories:
            codes = [cat.categories[c] for c in filters.exclude_categories if c in cat.categories]
            if codes:
                mask |= np.isin(cat.category_codes, codes)
        if filters.price_min is not None or filters.price_max is not None:
            price = self.prices(model)
            if filters.price_min is not None:
                mask |= ~(price >= filters.price_min)
            if filters.price_max is not None:
                mask |= ~(price <= filters.price_max)
        known, unknown = cat.lookup(filters.exclude_items)
        if known:
            mask[known] = True
        if len(extra_excluded):
            mask[np.asarray(extra_excluded, dtype=np.int64)] = True
        return mask, len(unknown)

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
