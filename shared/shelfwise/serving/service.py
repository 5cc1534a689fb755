"""The recommender behind every serving endpoint: routing, cold start, recommend, similar, search, health.

A request goes through the same steps, each in its own module: what it may be shown
(:mod:`~shelfwise.serving.filters`), the routed model's ranking, explored or not
(:mod:`~shelfwise.serving.exploring`), new items in the last places
(:mod:`~shelfwise.serving.new_item_slots`), then the answer and its served-list record, or one
list team-drafted from champion and challenger when the canary interleaves
(:mod:`~shelfwise.serving.lists`).

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

from shelfwise.errors import InputError
from shelfwise.exploration import ExplorationPolicy
from shelfwise.observability import logger, metrics
from shelfwise.registry import Aliases
from shelfwise.serving.config import ServingConfig
from shelfwise.serving.errors import ItemNotFoundError, ModelUnavailableError
from shelfwise.serving.exploring import Explorer
from shelfwise.serving.filters import Exclusions, Filters, HistoryEvent
from shelfwise.serving.impressions import ImpressionSink
from shelfwise.serving.lists import Recommendation, ServedLists
from shelfwise.serving.loader import ModelLoader
from shelfwise.serving.model import LoadedModel
from shelfwise.serving.new_item_slots import NewItemSlots
from shelfwise.serving.stock import LiveStock

POPULARITY_PREFIX = "popularity@"
# A refused version is tried again after this long (a transient S3 error should not pin the fallback).
RETRY_REFUSED_SECONDS = 300.0


# --------------------------------------------------------------------------- state


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
        self._background = background
        self._clock = clock
        self._sync_lock = threading.Lock()
        self._state = ServingState(Aliases(), {}, None, {}, checked_at=-float("inf"))
        self._refused_at: dict[str, float] = {}
        # Live stock (the catalogue's serving snapshot): refreshed per request, on its own cache.
        self.stock = stock
        # The steps of a request, in order: what it may be shown, the model's ranking (explored
        # or not), the new items at its end, the answer and its served-list record.
        self.exclusions = Exclusions(self.rules, stock)
        self.explorer = Explorer(self.rules.exploration)
        self.new_items = NewItemSlots(self.rules, stock)
        self.lists = ServedLists(impressions, stock, self.explorer)
        if stock is not None:
            stock.watch(lambda: self._state.models.values())

    @property
    def impressions(self) -> ImpressionSink | None:
        """Where served-list records go (None: not recorded)."""
        return self.lists.impressions

    @impressions.setter
    def impressions(self, sink: ImpressionSink | None) -> None:
        self.lists.impressions = sink

    @property
    def exploration(self) -> ExplorationPolicy | None:
        """The exploration policy (None: lists are served as ranked and log no propensities)."""
        return self.explorer.policy

    @exploration.setter
    def exploration(self, policy: ExplorationPolicy | None) -> None:
        self.explorer.policy = policy

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
            self.exclusions.keep(keep)
            self.new_items.keep(keep)
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

    # ------------------------------------------------------------------ helpers
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
        h_items, h_weights, mask, unknown = self.exclusions.personal(model, uidx, history, filters)
        if uidx < 0 and h_items.size == 0:
            scores, indices = self._popularity(model, mask, k)
            return self.lists.answer(
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
                return self.lists.interleaved(
                    (champion, other[0], other[1]),
                    (model, scores, indices),
                    endpoint,
                    k,
                    unknown,
                    user_id or session_id,
                )
        logging = None
        if explore and self.explorer.explores:
            scores, indices, logging = self.explorer.rank(
                model, uidx, h_items, h_weights, mask, k, lambda: self.exclusions.allowed(model, mask)
            )
        else:
            scores, indices = model.score(uidx, h_items, h_weights, mask, k)
        new = self.new_items.for_user(model, uidx, h_items, h_weights, filters, k)
        return self.lists.answer(
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
        h_items, h_weights, mask, unknown = self.exclusions.personal(model, uidx, history, filters)
        if uidx < 0 and h_items.size == 0:
            return None
        scores, indices = model.score(uidx, h_items, h_weights, mask, k)
        return scores, indices, unknown

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
            new = self.new_items.of(model)
            pos = new.position(item_id) if new is not None else None
            if new is None or pos is None:
                raise ItemNotFoundError(
                    f"item {item_id!r} is not in the catalogue of version {model.version}"
                )
            # a new item the model cannot place: the catalogue items closest to it by content
            mask, unknown = self.exclusions.request(model, filters)
            indices, scores = new.similar_graph_items(pos, mask, k)
            return self.lists.answer(
                model, variant, scores, indices, endpoint="similar", k=k, unknown=unknown, user=user_key
            )
        mask, unknown = self.exclusions.request(model, filters, [idx])
        if cat.similar_indices is not None and cat.similar_scores is not None:
            nbrs = cat.similar_indices[idx].astype(np.int64)
            vals = cat.similar_scores[idx]
            keep = (~mask[nbrs]) & (vals > 0)
            nbrs, vals = nbrs[keep], vals[keep]
            order = np.lexsort((nbrs, -vals))[:k]
            scores, indices = vals[order].astype(np.float32), nbrs[order]
            new = self.new_items.of(model) if indices.size < k else None
            if new is not None:  # too few neighbours (a rarely bought item): fill up by content
                taken = mask.copy()
                taken[indices] = True
                more, more_scores = new.similar_graph_items(idx, taken, k - indices.size, graph_item=True)
                # scaled below every co-occurrence neighbour (cosines are at most 1), order kept
                scores = np.concatenate([scores, (more_scores * scores.min(initial=1.0)).astype(np.float32)])
                indices = np.concatenate([indices, more])
        else:
            scores, indices = model.score(-1, np.array([idx], np.int64), np.array([1.0], np.float32), mask, k)
        return self.lists.answer(
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
        # lexical scores of the matching items only (ascending item index), never a catalogue-sized array
        hits, hit_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if query and query.strip():
            hits, hit_scores = cat.lexical().score(query)
        if candidates:
            pool_list, unknown_pos = cat.lookup(candidates)
            unknown += len(unknown_pos)
            pool = np.unique(np.asarray(pool_list, np.int64))
        else:
            pool = hits[hit_scores > 0]
            if pool.size > self.rules.search_pool:
                pool = pool[
                    np.argsort(-_values_at(hits, hit_scores, pool), kind="stable")[: self.rules.search_pool]
                ]
        uidx = cat.user_index(user_id)
        h_items, h_weights, excluded, unknown_h = self.exclusions.history(model, history)
        unknown += unknown_h
        mask, unknown_f = self.exclusions.request(model, filters, excluded)
        unknown += unknown_f
        pool = pool[~mask[pool]]
        if pool.size == 0:
            return self.lists.answer(
                model,
                variant,
                np.zeros(0, np.float32),
                np.zeros(0, np.int64),
                endpoint="search",
                k=k,
                unknown=unknown,
                user=user_id or session_id,
            )
        version = None
        if uidx >= 0 or h_items.size:
            s, i = model.score(uidx, h_items, h_weights, self.exclusions.only(model, pool), int(pool.size))
            personal = _values_at(i, s, pool)
        else:
            personal = np.log1p(np.maximum(cat.popularity[pool], 0))
            variant, version = "fallback", POPULARITY_PREFIX + model.version
        weight = self.rules.search_lexical_weight if (query and query.strip()) else 0.0
        blended = weight * _minmax(_values_at(hits, hit_scores, pool)) + (1 - weight) * _minmax(personal)
        order = np.lexsort((pool, -blended))[:k]
        return self.lists.answer(
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


def _values_at(keys: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values`` of the items ``at`` as float32 (0 where ``keys``, unique item indices, lack one)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.minimum(np.searchsorted(sorted_keys, at), max(keys.size - 1, 0))
    found = sorted_keys[pos] == at if keys.size else np.zeros(at.shape, bool)
    out = np.zeros(at.shape, np.float32)
    out[found] = values[order[pos[found]]]
    return out


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi - lo <= 1e-12 else (x - lo) / (hi - lo)
