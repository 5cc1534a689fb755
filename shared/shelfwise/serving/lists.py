"""The served list: a model's ranking turned into the answer, and the answer's served-list record.

After scoring, a list takes its catalogue columns (ids, categories, titles, and prices, live
where the stock snapshot lists the item), any new items in its last places
(:mod:`shelfwise.serving.new_item_slots`), or is team-drafted from two rankings when the canary
interleaves (:mod:`shelfwise.serving.interleave`); then one served-list record is written
(:mod:`shelfwise.serving.impressions`) with the hash of the routing key and, when exploring, the
policy's propensities (:mod:`shelfwise.serving.exploring`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from shelfwise.bundle import text_list
from shelfwise.serving.config import served_at
from shelfwise.serving.exploring import Explorer
from shelfwise.serving.impressions import ImpressionSink, ListLogging, user_hash
from shelfwise.serving.interleave import team_draft
from shelfwise.serving.model import LoadedModel
from shelfwise.serving.stock import LiveStock

# A list's columns in rank order: (ids, scores, categories, titles, prices).
ListColumns = tuple[list[str], list[float], list[str], list[str], list[float | None]]
# New items for a list's last places, in the same columns.
NewItemColumns = ListColumns


def served_price(price: float) -> float | None:
    """A price as the answer shows it: None where the catalogue has none (NaN), else to 4 places."""
    return None if price != price else round(price, 4)


@dataclass(frozen=True)
class RankedItem:
    item_id: str
    score: float
    position: int
    category: str
    title: str
    price: float | None


@dataclass
class Recommendation:
    """One served list and what it took to produce it (for the response and the metrics).

    The list is kept as columns (one list per attribute, in rank order): the HTTP layer writes
    them straight into the response JSON, without an object per item; :attr:`items` gives the
    rows for callers that want them.
    """

    recommendation_id: str
    model_version: str
    variant: str
    item_ids: list[str]
    scores: list[float]
    categories: list[str]
    titles: list[str]
    prices: list[float | None]
    unknown_items: int = 0
    degraded: bool = False
    reason: str | None = None
    # Interleaved lists only: each item's contributing model version (the credit monitoring uses).
    sources: list[str] | None = None

    @classmethod
    def from_columns(
        cls,
        recommendation_id: str,
        model_version: str,
        variant: str,
        columns: ListColumns,
        *,
        unknown_items: int = 0,
        degraded: bool = False,
        reason: str | None = None,
        sources: list[str] | None = None,
    ) -> Recommendation:
        """A list from its columns (:data:`ListColumns`: ids, scores, categories, titles, prices)."""
        ids, scores, categories, titles, prices = columns
        return cls(
            recommendation_id,
            model_version,
            variant,
            ids,
            scores,
            categories,
            titles,
            prices,
            unknown_items=unknown_items,
            degraded=degraded,
            reason=reason,
            sources=sources,
        )

    @property
    def items(self) -> list[RankedItem]:
        columns = zip(self.item_ids, self.scores, self.categories, self.titles, self.prices, strict=True)
        return [
            RankedItem(item_id, score, position, category, title, price)
            for position, (item_id, score, category, title, price) in enumerate(columns)
        ]


class ServedLists:
    """Builds the answers of a recommender and writes their served-list records (when a sink is set)."""

    def __init__(
        self, impressions: ImpressionSink | None, stock: LiveStock | None, explorer: Explorer
    ) -> None:
        self.impressions = impressions
        self.stock = stock
        self.explorer = explorer

    def answer(
        self,
        model: LoadedModel,
        variant: str,
        scores: np.ndarray,
        indices: np.ndarray,
        *,
        endpoint: str,
        k: int,
        unknown: int,
        version: str | None = None,
        reason: str | None = None,
        user: str | None = None,
        new: NewItemColumns | None = None,
        logging: ListLogging | None = None,
    ) -> Recommendation:
        """The response, and its served-list record (with the hash of ``user``, the routing key).

        ``new``: new items (ids, scores, categories, titles, prices) that take the list's last places.
        """
        cat = model.catalog
        if new is not None and new[0]:
            keep = max(0, min(len(indices), k - len(new[0])))
            scores, indices = scores[:keep], indices[:keep]
        idx = np.asarray(indices, dtype=np.intp)  # one conversion for the four look-ups
        ids = text_list(cat.item_ids[idx])
        sc = scores.tolist()  # float32 -> Python floats
        categories, titles = text_list(cat.category_names[idx]), text_list(cat.titles[idx])
        prices = [served_price(p) for p in self._prices(model, idx).tolist()]
        if new is not None and new[0]:
            ids, sc = ids + new[0], sc + new[1]
            categories, titles, prices = categories + new[2], titles + new[3], prices + new[4]
        rec = Recommendation.from_columns(
            uuid.uuid4().hex,
            version or model.version,
            variant,
            (ids, sc, categories, titles, prices),
            unknown_items=unknown,
            degraded=variant == "fallback",
            reason=reason,
        )
        if self.impressions is not None and ids:
            logging = self.explorer.logging(logging, len(new[0]) if new else 0, len(ids))
        self.record(rec, endpoint, k, user, logging)
        return rec

    def interleaved(
        self,
        champion: tuple[LoadedModel, np.ndarray, np.ndarray],
        challenger: tuple[LoadedModel, np.ndarray, np.ndarray],
        endpoint: str,
        k: int,
        unknown: int,
        user: str | None = None,
    ) -> Recommendation:
        """Team-draft of the two rankings; each item keeps its team's score, metadata and version."""
        sides = []
        for model, scores, indices in (champion, challenger):
            idx = np.asarray(indices, dtype=np.intp)
            sides.append((model, text_list(model.catalog.item_ids[idx]), scores.tolist(), idx))
        rec_id = uuid.uuid4().hex
        merged = team_draft(sides[0][1], sides[1][1], k, rec_id)
        ids, sc, cats, titles, prices, sources = [], [], [], [], [], []
        for team, rank in zip(merged.teams, merged.ranks, strict=True):
            model, team_ids, team_scores, idx = sides[team]
            i = int(idx[rank])
            cat = model.catalog
            ids.append(team_ids[rank])
            sc.append(team_scores[rank])
            cats.append(text_list(cat.category_names[i : i + 1])[0])
            titles.append(text_list(cat.titles[i : i + 1])[0])
            prices.append(served_price(float(cat.price[i])))
            sources.append(model.version)
        rec = Recommendation.from_columns(
            rec_id,
            challenger[0].version,
            "interleaved",
            (ids, sc, cats, titles, prices),
            unknown_items=unknown,
            sources=sources,
        )
        self.record(rec, endpoint, k, user)
        return rec

    def record(
        self, rec: Recommendation, endpoint: str, k: int, user: str | None, logging: ListLogging | None = None
    ) -> None:
        """The served-list record of ``rec`` (with the hash of ``user``, the routing key; each
        item's contributing version when interleaved; the policy's propensities when exploring)."""
        if self.impressions is None or not rec.item_ids:
            return
        served = (
            rec.recommendation_id,
            rec.variant,
            rec.model_version,
            endpoint,
            k,
            served_at(),
            rec.item_ids,
            rec.scores,
            None if user is None else user_hash(user),
        )
        self.impressions.record(served if rec.sources is None else (*served, rec.sources), logging)

    def _prices(self, model: LoadedModel, idx: np.ndarray) -> np.ndarray:
        """The answer's prices: the live snapshot's where it lists the item, else the bundle's."""
        overlay = self.stock.overlay(model.version, model.catalog.item_ids) if self.stock else None
        bundle = model.catalog.price[idx]
        if overlay is None:
            return bundle
        live = overlay[1][idx]
        return np.where(np.isnan(live), bundle, live)
