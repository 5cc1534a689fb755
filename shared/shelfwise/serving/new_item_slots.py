"""New-item slots: the last places of a personal list given to new items close to the user's history.

With ``ServingRules.new_item_slots`` set, up to that many places at the end of a personal list go
to the catalogue's new items (no interactions yet, so the model cannot rank them) whose content is
closest to the items of the user's history and stored purchases (:mod:`shelfwise.serving.new_items`),
under the same rules, live stock and request filters as the model's items. Each version's
``content.npz`` is read on first use; an unreadable one costs the new items, never the answer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from shelfwise.events import EVENT_WEIGHTS
from shelfwise.observability import logger
from shelfwise.serving.config import ServingRules
from shelfwise.serving.filters import Filters
from shelfwise.serving.lists import NewItemColumns
from shelfwise.serving.model import LoadedModel
from shelfwise.serving.new_items import NewItems
from shelfwise.serving.stock import LiveStock


class NewItemSlots:
    """The new items of the loaded versions, and the picks for a personal list."""

    def __init__(self, rules: ServingRules, stock: LiveStock | None) -> None:
        self.rules = rules
        self.stock = stock
        self._new_items: dict[str, NewItems | None] = {}  # per version: content.npz, read on first use

    def keep(self, versions: Iterable[str]) -> None:
        """Forget the new items of versions no longer loaded."""
        keep = set(versions)
        self._new_items = {v: n for v, n in self._new_items.items() if v in keep}

    def of(self, model: LoadedModel) -> NewItems | None:
        """The version's new items (None when its bundle has none, or they cannot be read)."""
        if model.version not in self._new_items:
            try:
                self._new_items[model.version] = NewItems.load(
                    model.bundle.path, model.bundle.manifest["files"]
                )
            except Exception as exc:  # a bad content file costs the new items, never the answer
                logger.warning("content.npz unreadable", extra={"version": model.version, "error": str(exc)})
                self._new_items[model.version] = None
        return self._new_items[model.version]

    def for_user(
        self,
        model: LoadedModel,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        filters: Filters,
        k: int,
    ) -> NewItemColumns | None:
        """New items for a personal list: the user's profile is the history and stored purchases."""
        if not self.rules.new_item_slots:
            return None
        bought = model.catalog.stored_purchases(user_index, self.rules.max_stored_purchases)
        profile_items = np.concatenate([history_items, bought.astype(np.int64)])
        profile_weights = np.concatenate(
            [history_weights, np.full(bought.size, EVENT_WEIGHTS["purchase"], np.float32)]
        )
        return self.pick(model, profile_items, profile_weights, filters, k)

    def pick(
        self, model: LoadedModel, items: np.ndarray, weights: np.ndarray, filters: Filters, k: int
    ) -> NewItemColumns | None:
        """New items for a profile of graph ``items`` (ServingRules.new_item_slots), or None."""
        slots = min(self.rules.new_item_slots, k)
        new = self.of(model) if slots else None
        if new is None or items.size == 0:
            return None
        unavailable = ~new.in_stock if self.rules.exclude_out_of_stock else np.zeros(new.n_new, bool)
        if self.stock is not None and self.rules.exclude_out_of_stock:
            overlay = self.stock.overlay(model.version + "#new", new.ids)
            if overlay is not None:
                unavailable = unavailable | overlay[0]
        cats = new.categories  # compared as stored (UTF-8 bytes), not decoded per request
        blocked = set(self.rules.blocked_categories) | set(filters.exclude_categories)
        if blocked:
            unavailable |= np.isin(cats, _as_stored(cats, blocked))
        if filters.categories:
            unavailable |= ~np.isin(cats, _as_stored(cats, filters.categories))
        if filters.price_min is not None:
            unavailable |= ~(new.price >= filters.price_min)
        if filters.price_max is not None:
            unavailable |= ~(new.price <= filters.price_max)
        for item in filters.exclude_items:
            pos = new.position(item)
            if pos is not None:
                unavailable[pos] = True
        picked, scores = new.for_history(items, weights, unavailable, slots, self.rules.new_item_min_score)
        if picked.size == 0:
            return None
        ids, categories, titles, prices = new.attributes(picked)
        return ids, [round(float(x), 6) for x in scores.tolist()], categories, titles, prices


def _as_stored(column: np.ndarray, names: Iterable[str]) -> list[str] | list[bytes]:
    """Category names as ``column`` stores them (UTF-8 bytes for a bytes column; a lone surrogate
    matches nothing, as it matches no decoded name)."""
    if column.dtype.kind == "S":
        return [name.encode("utf-8", "surrogatepass") for name in names]
    return list(names)
