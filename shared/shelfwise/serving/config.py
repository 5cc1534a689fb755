"""Serving rules: filters, limits and blending, as configuration (``SERVING_RULES`` JSON), not code."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The catalogue ingest's small snapshot for serving (docs/catalogue.md): stock, active flag, price.
from shelfwise.catalogue_contract import CATALOGUE_STOCK_KEY as CATALOGUE_STOCK_KEY

MAX_K = 500
MAX_HISTORY = 500
MAX_CANDIDATES = 500
MAX_BODY_BYTES = 256 * 1024


class ExplorationRules(BaseModel):
    """Exploration budget (``shelfwise.exploration``): ``share`` of model lists explored, in which
    each slot is swapped with probability ``epsilon`` for one of the model's next ``pool`` items.
    Present (even at share 0), every served list logs its propensities and a user reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(default=0.0, ge=0.0, le=1.0)
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)
    pool: int = Field(default=30, ge=1, le=100)
    # Seeds the policy's random numbers (tests, reproducible simulations); None in production.
    seed: int | None = None


class ServingRules(BaseModel):
    """Business rules applied to every answer; a shop changes them in the template, not the code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_k: int = Field(default=20, ge=1, le=MAX_K)
    exclude_out_of_stock: bool = True
    # Items bought in the request history (or stored for the user in the bundle) are not offered again.
    exclude_purchased: bool = True
    # Items seen in the request history are not offered again (off: a viewed item is a good suggestion).
    exclude_seen: bool = False
    # Categories never served (e.g. gift cards), whatever the request says.
    blocked_categories: tuple[str, ...] = ()
    # Search: weight of the lexical match in the blend (1 - this is the model's weight).
    search_lexical_weight: float = Field(default=0.6, ge=0.0, le=1.0)
    # Search: at most this many lexical matches are re-scored by the model.
    search_pool: int = Field(default=1000, ge=1, le=100_000)
    # Known-user recommendations: how many stored items of a user count as "already bought".
    max_stored_purchases: int = Field(default=500, ge=0)
    # Exploration with logged propensities (off-policy evaluation); None: lists served as ranked.
    exploration: ExplorationRules | None = None
    # New items (in the catalogue, no interactions yet; bundles trained with a catalogue): up to
    # this many places at the end of a personal list go to the new items closest by content to
    # the user's history, when their cosine is at least new_item_min_score. 0 = off.
    new_item_slots: int = Field(default=0, ge=0, le=50)
    new_item_min_score: float = Field(default=0.1, ge=0.0, le=1.0)


class ServingConfig(BaseModel):
    """What the recommender needs besides clients: model name, cache, alias TTL, rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    cache_dir: str = "/tmp/shelfwise/models"
    alias_ttl_seconds: float = Field(default=30.0, ge=0.0)
    intra_op_threads: int = Field(default=1, ge=1, le=64)
    rules: ServingRules = ServingRules()
    # How the canary's share of traffic meets the challenger: its own lists (an A/B split), or
    # lists team-drafted from both models (interleaving; docs/monitoring.md).
    canary_mode: Literal["split", "interleave"] = "split"
    # Interleaved canary: the share of shoppers who get interleaved lists is this many times the
    # canary weight (capped at all). Team draft gives the challenger half of each list's places, so
    # 2 keeps the challenger's share of shown items at the weight, as a split would, with twice
    # the compared lists (docs/monitoring.md, "Two canary designs").
    interleave_factor: float = Field(default=2.0, ge=1.0, le=10.0)


# When the request was received (API Gateway's ``requestContext.timeEpoch``), set per request by
# the handler. Impressions carry it, so they line up with the clock of whoever sent the request
# (in AWS the same instant, give or take; in the local runtime, the runtime's controllable clock).
REQUEST_TIME: ContextVar[float | None] = ContextVar("shelfwise_request_time", default=None)


def served_at() -> float:
    """Epoch seconds of the current request, or now when no request time was set."""
    t = REQUEST_TIME.get()
    return time.time() if t is None else t
