"""The recommender behind every serving endpoint: routing, cold start, filters, search, health.

State (aliases and loaded versions) lives in one immutable :class:`ServingState` that a request
reads once; a refresh builds the next state beside it (reads aliases, downloads and loads any new
version) and swaps the reference, so an alias change never blocks a request. In Lambda the
refresh runs on a background thread started by a request whose alias cache has expired.

Failures degrade, never storm: a version that cannot be loaded is refused and recorded; the
challenger's traffic then goes to the champion, the champion's to the last good version
(variant ``fallback``), and a user without any usable signal gets popularity (variant
``fallback``, version ``popularity@<bundle>``).
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shelfwise.bundle import text_list
from shelfwise.errors import InputError
from shelfwise.events import EVENT_WEIGHTS
from shelfwise.exploration import ExplorationPolicy, deterministic, explore
from shelfwise.observability import logger, metrics
from shelfwise.registry import Aliases
from shelfwise.serving.config import ServingConfig, served_at
from shelfwise.serving.errors import ItemNotFoundError, ModelUnavailableError
from shelfwise.serving.impressions import ImpressionSink, ListLogging, user_hash
from shelfwise.serving.interleave import team_draft
from shelfwise.serving.loader import ModelLoader
from shelfwise.serving.model import LoadedModel
from shelfwise.serving.new_items import NewItems
from shelfwise.serving.stock import LiveStock

POPULARITY_PREFIX = "popularity@"
# A refused version is tried again after this long (a transient S3 error should not pin the fallback).
RETRY_REFUSED_SECONDS = 300.0


# --------------------------------------------------------------------------- requests / answers


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

    @property
    def items(self) -> list[RankedItem]:
        columns = zip(self.item_ids, self.scores, self.categories, self.titles, self.prices, strict=True)
        return [
            RankedItem(item_id, score, position, category, title, price)
            for position, (item_id, score, category, title, price) in enumerate(columns)
        ]


@dataclass(frozen=True)
class ServingState:
    """Immutable snapshot a request works from."""

    aliases: Aliases
    models: dict[str, LoadedModel]
    last_good: LoadedModel | None
    errors: dict[str, str]
    checked_at: float
    alias_error: str | None = None


# --------------------------------------------------------------------------- the service


class Recommender:
    """Answers recommendation, similar-item and search requests from the loaded versions."""

    def __init__(
        self,
        config: ServingConfig,
        loader: ModelLoader,
        read_aliases: Callable[[], Aliases],
        impressions: ImpressionSink | None = None,
        *,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        stock: LiveStock | None = None,
        pseudonymise: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        # With a pseudonymisation key, user ids are hashed as the ingest hashed them for training,
        # so the bundle's user index (built from curated data) finds them.
        self._pseudonymise = pseudonymise
        self.rules = config.rules
        self.loader = loader
        self._read_aliases = read_aliases
        self.impressions = impressions
        self._background = background
        self._clock = clock
        self._sync_lock = threading.Lock()
        self._state = ServingState(Aliases(), {}, None, {}, checked_at=-float("inf"))
        self._masks: dict[str, np.ndarray] = {}
        self._refused_at: dict[str, float] = {}
        ex = self.rules.exploration
        self.exploration = (
            None
            if ex is None
            else ExplorationPolicy(share=ex.share, epsilon=ex.epsilon, pool=ex.pool, seed=ex.seed)
        )
        self._explore_rng = np.random.default_rng(None if ex is None else ex.seed)
        # Live stock (the catalogue's serving snapshot): masks per (version, snapshot etag).
        self.stock = stock
        self._stock_masks: dict[tuple[str, str], np.ndarray] = {}
        self._new_items: dict[str, NewItems | None] = {}  # per version: content.npz, read on first use
        if stock is not None:
            stock.watch(lambda: self._state.models.values())

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> ServingState:
        return self._state

    def start(self) -> ServingState:
        """Read aliases and load their versions now (cold start, in the init phase)."""
        self.sync()
        return self._state

    def after_restore(self) -> ServingState:
        """After a SnapStart restore: the snapshot's aliases may be hours old, so read them (and
        load any version they name that is not loaded) before the first request."""
        self._state = dataclasses.replace(self._state, checked_at=-float("inf"))
        return self.start()

    def start_in_background(
        self, first_aliases: Callable[[], Aliases | None] | None = None
    ) -> Callable[[], ServingState]:
        """Start :meth:`start` on a thread and return a function that waits for it.

        The init phase uses it to read the aliases and download the bundle while it imports and
        builds the HTTP layer: the download mostly waits on the network, so the two overlap.
        ``first_aliases`` gives aliases already read (the prefetch's), so a cold start reads SSM
        once; when it returns None (that read failed) the sync reads them itself.
        """
        thread = threading.Thread(
            target=self._sync_quietly, args=(first_aliases,), name="model-start", daemon=True
        )
        thread.start()

        def wait() -> ServingState:
            thread.join()
            return self._state

        return wait

    def refresh(self) -> None:
        """Called per request: when the alias cache expired, sync (in the background when enabled)."""
        if self.stock is not None:
            self.stock.refresh()
        if self._clock() - self._state.checked_at < self.config.alias_ttl_seconds:
            return
        if self._sync_lock.locked():
            return
        if self._background:
            threading.Thread(target=self._sync_quietly, name="model-sync", daemon=True).start()
        else:
            self.sync()

    def _sync_quietly(self, first_aliases: Callable[[], Aliases | None] | None = None) -> None:
        try:
            self.sync(first_aliases)
        except Exception:
            logger.exception("model sync failed")

    def sync(self, first_aliases: Callable[[], Aliases | None] | None = None) -> ServingState:
        """Read the aliases, load versions not loaded yet, drop unused ones, swap the state.

        ``first_aliases``: aliases read moments ago by someone else (see start_in_background).
        """
        if not self._sync_lock.acquire(blocking=False):
            return self._state
        try:
            old = self._state
            now = self._clock()
            try:
                given = first_aliases() if first_aliases is not None else None
                aliases = given if given is not None else self._read_aliases()
                alias_error = None
            except Exception as exc:  # SSM throttled or down: keep serving what we have
                logger.warning("alias read failed; keeping current aliases", extra={"error": str(exc)})
                aliases, alias_error = old.aliases, str(exc)
            wanted = [v for v in (aliases.champion, aliases.challenger) if v]
            models: dict[str, LoadedModel] = {}
            errors = {v: e for v, e in old.errors.items() if v in wanted}
            for version in wanted:
                if version in old.models:
                    models[version] = old.models[version]
                    continue
                if version in errors and now - self._refused_at.get(version, now) < RETRY_REFUSED_SECONDS:
                    continue
                try:
                    models[version] = self.loader.load(version)
                    errors.pop(version, None)
                    logger.info(
                        "model loaded",
                        extra={
                            "version": version,
                            "fetch_seconds": round(models[version].fetch_seconds, 3),
                            "seconds": round(models[version].load_seconds, 3),
                        },
                    )
                except Exception as exc:
                    errors[version] = str(exc)
                    self._refused_at[version] = now
                    metrics.add_metric(name="ModelLoadFailures", unit="Count", value=1)
                    logger.error("model refused", extra={"version": version, "error": str(exc)})
            champion = models.get(aliases.champion or "")
            last_good = champion or old.last_good
            keep = set(models) | ({last_good.version} if last_good else set())
            self._masks = {v: m for v, m in self._masks.items() if v in keep}
            self._new_items = {v: n for v, n in self._new_items.items() if v in keep}
            self._state = ServingState(aliases, models, last_good, errors, now, alias_error)
            if self.stock is not None:  # a new version's stock overlay, here rather than in a request
                for m in models.values():
                    self.stock.overlay(m.version, m.catalog.item_ids)
            self.loader.prune(keep)
            if len(models) > len(old.models.keys() & models.keys()):
                # A load leaves long-lived objects (session, catalogue, and once searched the
                # lexical index's vocabulary): move them out of the cyclic GC's generations so
                # full collections stay short (request p99). No collect()
                # first: it would hold the GIL for a request; refcounting frees the old version.
                gc.freeze()
            return self._state
        finally:
            self._sync_lock.release()

    def _route(self, user_key: str, weight_factor: float = 1.0) -> tuple[LoadedModel, str]:
        state = self._state
        aliases = state.aliases
        if weight_factor != 1.0 and aliases.challenger:
            aliases = dataclasses.replace(
                aliases, canary_weight=min(1.0, aliases.canary_weight * weight_factor)
            )
        version, variant = aliases.route(user_key)
        if version is not None and version in state.models:
            return state.models[version], variant
        champion = state.models.get(state.aliases.champion or "")
        if champion is not None:
            return champion, "champion"
        if state.last_good is not None:
            return state.last_good, "fallback"
        raise ModelUnavailableError("no model version is loaded yet; retry shortly")

    # ------------------------------------------------------------------ filters
    def _base_mask(self, model: LoadedModel) -> np.ndarray:
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

    def _prices(self, model: LoadedModel) -> np.ndarray:
        """The prices filters and answers use: the live snapshot's where it lists the item."""
        overlay = self.stock.overlay(model.version, model.catalog.item_ids) if self.stock else None
        if overlay is None:
            return model.catalog.price
        return np.where(np.isnan(overlay[1]), model.catalog.price, overlay[1])

    def _mask(
        self, model: LoadedModel, filters: Filters, extra_excluded: Sequence[int] = ()
    ) -> tuple[np.ndarray, int]:
        """The request's exclusion mask and the number of unknown ids it named."""
        cat = model.catalog
        mask = self._base_mask(model).copy()
        if filters.categories:
            codes = [cat.categories[c] for c in filters.categories if c in cat.categories]
            mask |= ~np.isin(cat.category_codes, codes) if codes else True
        if filters.exclude_categories:
            codes = [cat.categories[c] for c in filters.exclude_categories if c in cat.categories]
            if codes:
                mask |= np.isin(cat.category_codes, codes)
        if filters.price_min is not None or filters.price_max is not None:
            price = self._prices(model)
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

    # ------------------------------------------------------------------ helpers
    def _history(
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

    def _popularity(self, model: LoadedModel, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Most popular allowed items: walk the precomputed order, widening until k survive the mask."""
        order = model.catalog.popularity_order
        take = max(4 * k, 1024)
        while True:
            head = order[:take]
            top = head[~mask[head]][:k]
            if top.size >= k or take >= order.size:
                break
            take *= 4
        return model.catalog.popularity[top].astype(np.float32), top.astype(np.int64)

    def _answer(
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
        new: tuple[list[str], list[float], list[str], list[str], list[float | None]] | None = None,
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
        prices = [None if p != p else round(p, 4) for p in self._answer_prices(model, idx).tolist()]
        if new is not None and new[0]:
            ids, sc = ids + new[0], sc + new[1]
            categories, titles, prices = categories + new[2], titles + new[3], prices + new[4]
        rec = Recommendation(
            recommendation_id=uuid.uuid4().hex,
            model_version=version or model.version,
            variant=variant,
            item_ids=ids,
            scores=sc,
            categories=categories,
            titles=titles,
            prices=prices,
            unknown_items=unknown,
            degraded=variant == "fallback",
            reason=reason,
        )
        if self.impressions is not None and ids:
            if logging is None and self.exploration is not None:
                logging = self._logged_as_ranked(len(ids))
            elif logging is not None and len(logging.propensities) != len(ids):
                logging = _with_new_items(logging, len(new[0]) if new else 0, len(ids))
        self._log_served(rec, endpoint, k, user, logging)
        return rec

    def _log_served(
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

    def _logged_as_ranked(self, n: int) -> ListLogging:
        """Propensity 1 at every slot: a list served as ranked (exploration configured)."""
        d = deterministic(n)
        return ListLogging(d.propensities, d.spread, 1.0, {"policy": "ranked"})

    def _explore(
        self,
        scores: np.ndarray,
        indices: np.ndarray,
        k: int,
        explored: bool,
        n_candidates: int,
    ) -> tuple[np.ndarray, np.ndarray, ListLogging]:
        """Apply the exploration policy to the model's ranked candidates (top-k, then the pool
        when the list is explored); propensities are those of the policy, whatever the coin said."""
        policy = self.exploration
        assert policy is not None
        ex = explore(n_candidates, k, policy, self._explore_rng, explored)
        params = {**policy.params(), "pool": ex.pool}
        logging = ListLogging(ex.propensities, ex.spread, ex.list_propensity, params)
        return scores[ex.order], indices[ex.order], logging

    def _answer_prices(self, model: LoadedModel, idx: np.ndarray) -> np.ndarray:
        overlay = self.stock.overlay(model.version, model.catalog.item_ids) if self.stock else None
        bundle = model.catalog.price[idx]
        if overlay is None:
            return bundle
        live = overlay[1][idx]
        return np.where(np.isnan(live), bundle, live)

    def _new_items_of(self, model: LoadedModel) -> NewItems | None:
        if model.version not in self._new_items:
            try:
                self._new_items[model.version] = NewItems.load(
                    model.bundle.path, model.bundle.manifest["files"]
                )
            except Exception as exc:  # a bad content file costs the new items, never the answer
                logger.warning("content.npz unreadable", extra={"version": model.version, "error": str(exc)})
                self._new_items[model.version] = None
        return self._new_items[model.version]

    def _pick_new(
        self, model: LoadedModel, items: np.ndarray, weights: np.ndarray, filters: Filters, k: int
    ) -> tuple[list[str], list[float], list[str], list[str], list[float | None]] | None:
        """New items for a personal list (ServingRules.new_item_slots), or None."""
        slots = min(self.rules.new_item_slots, k)
        new = self._new_items_of(model) if slots else None
        if new is None or items.size == 0:
            return None
        unavailable = ~new.in_stock if self.rules.exclude_out_of_stock else np.zeros(new.n_new, bool)
        if self.stock is not None and self.rules.exclude_out_of_stock:
            overlay = self.stock.overlay(model.version + "#new", new.ids)
            if overlay is not None:
                unavailable = unavailable | overlay[0]
        cats = np.asarray(text_list(new.categories), dtype=object)
        blocked = set(self.rules.blocked_categories) | set(filters.exclude_categories)
        if blocked:
            unavailable |= np.isin(cats, list(blocked))
        if filters.categories:
            unavailable |= ~np.isin(cats, list(filters.categories))
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

    def _check_k(self, k: int | None) -> int:
        k = self.rules.default_k if k is None else k
        if k < 1:
            raise InputError("k must be at least 1")
        return k

    # ------------------------------------------------------------------ endpoints
    def recommend(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        history: Sequence[HistoryEvent] = (),
        k: int | None = None,
        filters: Filters = Filters(),
        endpoint: str = "recommendations",
        explore: bool = True,
    ) -> Recommendation:
        """Top-k for a known user (stored representation) or from a session history (fold-in).

        With exploration configured, the model's list may be explored (``shelfwise.exploration``)
        unless the request says ``explore=False``; popularity fallbacks are never explored. With
        ``canary_mode = "interleave"``, a request routed to the challenger gets one list
        team-drafted from the champion's and the challenger's rankings (variant ``interleaved``,
        never explored).
        """
        k = self._check_k(k)
        self.refresh()
        if user_id is not None and self._pseudonymise is not None:
            user_id = self._pseudonymise(user_id)
        user_key = user_id or session_id or uuid.uuid4().hex
        interleaving = self.config.canary_mode == "interleave"
        model, variant = self._route(user_key, self.config.interleave_factor if interleaving else 1.0)
        uidx = model.catalog.user_index(user_id)
        h_items, h_weights, excluded, unknown = self._history(model, history)
        if uidx >= 0 and self.rules.exclude_purchased:
            excluded = (
                excluded + model.catalog.stored_purchases(uidx, self.rules.max_stored_purchases).tolist()
            )
        mask, unknown_excl = self._mask(model, filters, excluded)
        unknown += unknown_excl
        if uidx < 0 and h_items.size == 0:
            scores, indices = self._popularity(model, mask, k)
            return self._answer(
                model,
                "fallback",
                scores,
                indices,
                endpoint=endpoint,
                k=k,
                unknown=unknown,
                version=POPULARITY_PREFIX + model.version,
                reason="no known user or usable history",
                user=user_id or session_id,
            )
        if variant == "challenger" and interleaving:
            champion = self._state.models.get(self._state.aliases.champion or "")
            other = self._rank(champion, user_id, history, filters, k) if champion is not None else None
            if champion is not None and other is not None:
                scores, indices = model.score(uidx, h_items, h_weights, mask, k)
                return self._interleaved_answer(
                    (champion, other[0], other[1]),
                    (model, scores, indices),
                    endpoint,
                    k,
                    unknown,
                    user_id or session_id,
                )
        policy = self.exploration
        logging = None
        if explore and policy is not None and policy.share > 0 and policy.epsilon > 0:
            # The list's coin first: only an explored list needs the pool from the graph.
            explored = bool(self._explore_rng.random() < policy.share)
            if explored:
                scores, indices = model.score(uidx, h_items, h_weights, mask, k + policy.pool)
                n_candidates = int(indices.size)
            else:
                scores, indices = model.score(uidx, h_items, h_weights, mask, k)
                n_candidates = min(k + policy.pool, model.catalog.n_items - int(np.count_nonzero(mask)))
            scores, indices, logging = self._explore(scores, indices, k, explored, n_candidates)
        else:
            scores, indices = model.score(uidx, h_items, h_weights, mask, k)
        new = None
        if self.rules.new_item_slots:
            bought = model.catalog.stored_purchases(uidx, self.rules.max_stored_purchases)
            profile_items = np.concatenate([h_items, bought.astype(np.int64)])
            profile_weights = np.concatenate(
                [h_weights, np.full(bought.size, EVENT_WEIGHTS["purchase"], np.float32)]
            )
            new = self._pick_new(model, profile_items, profile_weights, filters, k)
        return self._answer(
            model,
            variant,
            scores,
            indices,
            endpoint=endpoint,
            k=k,
            unknown=unknown,
            user=user_id or session_id,
            new=new,
            logging=logging,
        )

    def _rank(
        self,
        model: LoadedModel,
        user_id: str | None,
        history: Sequence[HistoryEvent],
        filters: Filters,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``model``'s top-k (scores, indices, unknown ids) for the user; None when it has no signal."""
        uidx = model.catalog.user_index(user_id)
        h_items, h_weights, excluded, unknown = self._history(model, history)
        if uidx < 0 and h_items.size == 0:
            return None
        if uidx >= 0 and self.rules.exclude_purchased:
            excluded = (
                excluded + model.catalog.stored_purchases(uidx, self.rules.max_stored_purchases).tolist()
            )
        mask, unknown_excl = self._mask(model, filters, excluded)
        scores, indices = model.score(uidx, h_items, h_weights, mask, k)
        return scores, indices, unknown + unknown_excl

    def _interleaved_answer(
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
            price = float(cat.price[i])
            prices.append(None if price != price else round(price, 4))
            sources.append(model.version)
        rec = Recommendation(
            recommendation_id=rec_id,
            model_version=challenger[0].version,
            variant="interleaved",
            item_ids=ids,
            scores=sc,
            categories=cats,
            titles=titles,
            prices=prices,
            unknown_items=unknown,
            sources=sources,
        )
        self._log_served(rec, endpoint, k, user)
        return rec

    def similar(
        self, item_id: str, *, k: int | None = None, filters: Filters = Filters(), user_key: str | None = None
    ) -> Recommendation:
        """Items related to ``item_id``: the bundle's neighbour table, else the model's fold-in of it."""
        k = self._check_k(k)
        self.refresh()
        model, variant = self._route(user_key or item_id)
        cat = model.catalog
        idx = cat.index_of(item_id)
        if idx is None:
            new = self._new_items_of(model)
            pos = new.position(item_id) if new is not None else None
            if new is None or pos is None:
                raise ItemNotFoundError(
                    f"item {item_id!r} is not in the catalogue of version {model.version}"
                )
            # a new item the model cannot place: the catalogue items closest to it by content
            mask, unknown = self._mask(model, filters)
            indices, scores = new.similar_graph_items(pos, mask, k)
            return self._answer(
                model, variant, scores, indices, endpoint="similar", k=k, unknown=unknown, user=user_key
            )
        mask, unknown = self._mask(model, filters, [idx])
        if cat.similar_indices is not None and cat.similar_scores is not None:
            nbrs = cat.similar_indices[idx].astype(np.int64)
            vals = cat.similar_scores[idx]
            keep = (~mask[nbrs]) & (vals > 0)
            nbrs, vals = nbrs[keep], vals[keep]
            order = np.lexsort((nbrs, -vals))[:k]
            scores, indices = vals[order].astype(np.float32), nbrs[order]
            new = self._new_items_of(model) if indices.size < k else None
            if new is not None:  # too few neighbours (a rarely bought item): fill up by content
                taken = mask.copy()
                taken[indices] = True
                more, more_scores = new.similar_graph_items(idx, taken, k - indices.size, graph_item=True)
                # scaled below every co-occurrence neighbour (cosines are at most 1), order kept
                scores = np.concatenate([scores, (more_scores * scores.min(initial=1.0)).astype(np.float32)])
                indices = np.concatenate([indices, more])
        else:
            scores, indices = model.score(-1, np.array([idx], np.int64), np.array([1.0], np.float32), mask, k)
        return self._answer(
            model, variant, scores, indices, endpoint="similar", k=k, unknown=unknown, user=user_key
        )

    def search(
        self,
        *,
        query: str | None = None,
        candidates: Sequence[str] = (),
        user_id: str | None = None,
        session_id: str | None = None,
        history: Sequence[HistoryEvent] = (),
        k: int | None = None,
        filters: Filters = Filters(),
    ) -> Recommendation:
        """Lexical match over titles/categories blended with the user's model score; or re-rank candidates."""
        k = self._check_k(k)
        if not (query and query.strip()) and not candidates:  # empty search box: their top picks
            return self.recommend(
                user_id=user_id,
                session_id=session_id,
                history=history,
                k=k,
                filters=filters,
                endpoint="search",
            )
        self.refresh()
        if user_id is not None and self._pseudonymise is not None:
            user_id = self._pseudonymise(user_id)
        user_key = user_id or session_id or uuid.uuid4().hex
        model, variant = self._route(user_key)
        cat = model.catalog
        unknown = 0
        lex = np.zeros(cat.n_items, np.float32)
        if query and query.strip():
            hits, hit_scores = cat.lexical().score(query)
            lex[hits] = hit_scores
        if candidates:
            pool_list, unknown_pos = cat.lookup(candidates)
            unknown += len(unknown_pos)
            pool = np.unique(np.asarray(pool_list, np.int64))
        else:
            pool = np.flatnonzero(lex > 0)
            if pool.size > self.rules.search_pool:
                pool = pool[np.argsort(-lex[pool], kind="stable")[: self.rules.search_pool]]
        uidx = cat.user_index(user_id)
        h_items, h_weights, excluded, unknown_h = self._history(model, history)
        unknown += unknown_h
        mask, unknown_f = self._mask(model, filters, excluded)
        unknown += unknown_f
        pool = pool[~mask[pool]]
        if pool.size == 0:
            return self._answer(
                model,
                variant,
                np.zeros(0, np.float32),
                np.zeros(0, np.int64),
                endpoint="search",
                k=k,
                unknown=unknown,
                user=user_id or session_id,
            )
        personal = np.zeros(cat.n_items, np.float32)
        version = None
        if uidx >= 0 or h_items.size:
            outside = np.ones(cat.n_items, dtype=bool)
            outside[pool] = False
            s, i = model.score(uidx, h_items, h_weights, outside, int(pool.size))
            personal[i] = s
        else:
            personal[pool] = np.log1p(np.maximum(cat.popularity[pool], 0))
            variant, version = "fallback", POPULARITY_PREFIX + model.version
        weight = self.rules.search_lexical_weight if (query and query.strip()) else 0.0
        blended = weight * _minmax(lex[pool]) + (1 - weight) * _minmax(personal[pool])
        order = np.lexsort((pool, -blended))[:k]
        return self._answer(
            model,
            variant,
            blended[order].astype(np.float32),
            pool[order],
            endpoint="search",
            k=k,
            unknown=unknown,
            version=version,
            user=user_id or session_id,
        )

    def health(self) -> dict[str, Any]:
        """What is loaded, from which aliases, how old, and what was refused."""
        state = self._state
        now = time.time()
        models = [
            {
                "version": m.version,
                "role": "champion" if m.version == state.aliases.champion else "challenger",
                "kind": m.kind,
                "items": m.n_items,
                "age_seconds": round(now - m.loaded_at, 1),
                "created_at": m.bundle.manifest.get("created_at"),
            }
            for m in state.models.values()
        ]
        champion_ok = (state.aliases.champion or "") in state.models
        status = "ok" if champion_ok else "degraded" if state.last_good else "unavailable"
        return {
            "status": status,
            "model_name": self.config.model_name,
            "aliases": state.aliases.to_json(),
            "models": models,
            "last_good": state.last_good.version if state.last_good else None,
            "serving_fallback": not champion_ok,
            "refused": dict(state.errors),
            "alias_error": state.alias_error,
            "aliases_age_seconds": None
            if state.checked_at == -float("inf")
            else round(self._clock() - state.checked_at, 1),
            "impressions_pending": self.impressions.pending() if self.impressions else 0,
            **({"stock": self.stock.health()} if self.stock is not None else {}),
        }


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi - lo <= 1e-12 else (x - lo) / (hi - lo)


def _with_new_items(logging: ListLogging, n_new: int, n: int) -> ListLogging:
    """An explored list whose last places went to new items (``ServingRules.new_item_slots``): the
    model's slots keep their propensities (a position's marginal does not depend on later ones),
    the new items were placed deterministically (1); the whole list's probability is no longer
    known (null: the list level is refused for it)."""
    kept = n - n_new
    return ListLogging(
        [*logging.propensities[:kept], *([1.0] * n_new)],
        [*logging.spread[:kept], *([False] * n_new)],
        None,
        logging.policy,
    )
