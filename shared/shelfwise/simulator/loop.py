"""The closed loop: the shop's users meet served recommendations and click, add to cart and buy.

``Shop`` is the one entry point for the demo, the end-to-end and the monitoring tests:

    shop = Shop(ShopParams(n_users=2000, n_items=500, n_days=3), seed=7)
    for ctx in shop.traffic(day=1, n=500):
        served = recommender(ctx, 10)            # any ranked list with a recommendation_id
        events = shop.respond(served, ctx)       # clicks / add_to_cart / purchase dicts
    result = shop.replay(1, recommender)         # the same, summed up (or against an HTTP API)

Outcomes use common random numbers per (request, position): two recommenders replayed on the
same traffic face the same users with the same dice, so their difference is the ranking's alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.errors import InputError, NotFoundError
from shelfwise.simulator.blocks import CODE_NAMES, DAY_MS, SEARCH, STREAM_LOOP, DayBlock
from shelfwise.simulator.generate import SimulationResult, ground_truth, simulate_to_files
from shelfwise.simulator.params import ShopParams
from shelfwise.simulator.shop import Catalogue, ShopModel, Users

HISTORY_LIMIT = 20


@dataclass(frozen=True)
class RequestContext:
    """One recommendation request as the shop's front end would make it.

    ``user_id`` is None for anonymous sessions; ``history`` holds the session's recent
    (item_id, event_type) pairs, oldest first. ``true_user`` is ground truth: who is really there
    (also behind an anonymous session); recommenders must not use it, ``respond`` does.
    """

    request_id: str
    user_id: str | None
    session_id: str
    history: tuple[tuple[str, str], ...]
    ts_ms: int
    day: int
    true_user: int = field(repr=False)

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, tz=UTC)

    @property
    def user_or_session(self) -> str:
        return self.user_id if self.user_id is not None else self.session_id


@dataclass
class ReplayResult:
    """Totals of a replayed day: the figures a recommender is judged by online."""

    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    errors: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ctr(self) -> float:
        """Clicks per impression."""
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def conversion(self) -> float:
        """Purchases per impression."""
        return self.purchases / self.impressions if self.impressions else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "carts": self.carts,
            "purchases": self.purchases,
            "revenue": round(self.revenue, 2),
            "errors": self.errors,
            "ctr": round(self.ctr, 5),
            "conversion": round(self.conversion, 5),
        }


Served = Any  # a dict / object with recommendation_id and items, or a plain list of item ids
Recommender = Callable[[RequestContext, int], Served]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _served_items(served: Served) -> tuple[str | None, list[str], list[float | None], dict[str, Any]]:
    """(recommendation_id, item ids, scores, extra fields) from whatever a recommender returned."""
    extra: dict[str, Any] = {}
    if isinstance(served, (list, tuple)):
        return None, [str(x) for x in served], [None] * len(served), extra
    get = served.get if isinstance(served, dict) else lambda k, d=None: getattr(served, k, d)
    rec_id = get("recommendation_id")
    for key in ("variant", "model_version"):
        if get(key) is not None:
            extra[key] = get(key)
    items: list[str] = []
    scores: list[float | None] = []
    for it in get("items") or []:
        if isinstance(it, (str, int)):
            items.append(str(it))
            scores.append(None)
        elif isinstance(it, dict):
            items.append(str(it["item_id"]))
            scores.append(it.get("score"))
        else:
            items.append(str(it.item_id))
            scores.append(getattr(it, "score", None))
    return (str(rec_id) if rec_id is not None else None), items, scores, extra


class Shop:
    """A simulated shop with ground truth, for files (``simulate``) and for the closed loop."""

    def __init__(self, params: ShopParams | None = None, seed: int = 0) -> None:
        self.params = params or ShopParams()
        self.seed = int(seed)
        self.model = ShopModel(self.params, self.seed)
        self.incidents_log: list[dict[str, Any]] = ground_truth(self.model)

    # ------------------------------------------------------------------------------ ground truth
    @property
    def catalogue(self) -> Catalogue:
        return self.model.catalogue

    @property
    def users(self) -> Users:
        return self.model.users

    @property
    def item_factors(self) -> np.ndarray:
        """True latent item factors [n_items, dim] (row = item index = int(item_id) - 1)."""
        return self.model.item_factors

    @property
    def item_bias(self) -> np.ndarray:
        return self.model.item_bias

    @property
    def user_factors(self) -> np.ndarray:
        """True latent user factors [n_users, dim] before any taste drift."""
        return self.model.users.factors

    def user_factors_at(self, ts_ms: int) -> np.ndarray:
        """True user factors at a time (taste drift applied)."""
        idx = np.arange(len(self.users))
        return self.model.user_state(idx, ts_ms)[2]

    def item_index(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Catalogue indices of item ids; -1 for ids the shop does not know."""
        out = np.full(len(item_ids), -1, dtype=np.int64)
        n = len(self.catalogue)
        for i, x in enumerate(item_ids):
            s = str(x)
            if s.isdigit() and 1 <= int(s) <= n:
                out[i] = int(s) - 1
        return out

    def user_index(self, user_id: str) -> int:
        s = str(user_id)
        if not s.isdigit() or not 1 <= int(s) <= len(self.users):
            raise NotFoundError(f"unknown user {user_id!r}")
        return int(s) - 1

    def day_ms(self, day: int) -> int:
        return self.model.start_ms + day * DAY_MS

    def true_affinity(
        self, user: int | str, items: Sequence[str] | np.ndarray, at_ms: int | None = None
    ) -> np.ndarray:
        """The user's true affinity for items (ids, or int indices) at a time; NaN for unknown items."""
        u = self.user_index(user) if isinstance(user, str) else int(user)
        arr = np.asarray(items)
        idx = arr.astype(np.int64) if arr.dtype.kind in "iu" else self.item_index(list(arr))
        t = self.model.start_ms if at_ms is None else at_ms
        f = self.model.user_state(np.array([u]), t)[2]
        ok = idx >= 0
        out = np.full(len(idx), np.nan)
        out[ok] = self.model.affinity(np.repeat(f, ok.sum(), axis=0), idx[ok])
        return out

    def popularity_ranking(self, day: int | None = None) -> np.ndarray:
        """Item indices by true popularity (launched by ``day``), most popular first."""
        c = self.catalogue
        pop = c.popularity * (c.launch_day <= (day if day is not None else self.params.n_days))
        return np.argsort(-pop, kind="stable")

    # -------------------------------------------------------------------------------- files
    def simulate(
        self, out_dir: str | Path, fmt: str = "native", split: str = "day", workers: int = 1
    ) -> SimulationResult:
        """Write all days as export files (see ``simulate_to_files``)."""
        return simulate_to_files(self.params, self.seed, out_dir, fmt=fmt, split=split, workers=workers)

    def day_events(self, day: int) -> DayBlock:
        """The day's organic events (the same as the files hold), as numpy columns."""
        return self.model.day(day)

    # ------------------------------------------------------------------------------ traffic
    def traffic(self, day: int, n: int | None = None) -> Iterator[RequestContext]:
        """Recommendation requests of ``day`` in time order: one per sampled session, placed at a
        random view with the session's earlier events as history (n = how many; default all)."""
        if not 0 <= day < self.params.n_days:
            raise InputError(f"day must be within [0, {self.params.n_days}), got {day}")
        block = self.model.day(day)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_LOOP, day]))
        real = (block.code != SEARCH) & (block.owner < self.model.bot_user_index)
        order = np.lexsort((block.ts, block.session))
        order = order[real[order]]
        sess = block.session[order]
        starts = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
        ends = np.r_[starts[1:], len(order)]
        chosen = np.arange(len(starts))
        if n is not None and n < len(chosen):
            chosen = np.sort(rng.choice(len(chosen), n, replace=False))
        at = starts[chosen] + (rng.random(len(chosen)) * (ends[chosen] - starts[chosen])).astype(np.int64)
        reqs = sorted(zip(block.ts[order[at]], chosen, at, strict=True))
        names = np.array(CODE_NAMES)
        for ts, s_i, pos in reqs:
            lo = max(starts[s_i], pos - HISTORY_LIMIT)
            hist_rows = order[lo:pos]
            row = order[pos]
            user = int(block.user[row])
            history = tuple((str(int(block.item[r]) + 1), str(names[block.code[r]])) for r in hist_rows)
            rid = hashlib.blake2b(
                f"{self.seed}:{day}:{int(block.session[row])}:{int(ts)}".encode(), digest_size=8
            )
            yield RequestContext(
                request_id=rid.hexdigest(),
                user_id=str(user + 1) if user >= 0 else None,
                session_id=str(int(block.session[row])),
                history=history,
                ts_ms=int(ts) - 500,
                day=day,
                true_user=int(block.owner[row]),
            )

    # ------------------------------------------------------------------------------ respond
    def respond(
        self, served: Served, context: RequestContext, impressions: bool = False
    ) -> list[dict[str, Any]]:
        """The user's reaction to a served list: click, add_to_cart, purchase events (native dicts).

        P(click at position p) = examination(p) x sigmoid(click_base + slope x true affinity), with
        examination(p) = 1 / log2(p + 2); carts and purchases follow from clicks, price (shock) and stock.
        Feedback rows validate as ``shelfwise.events.Event`` (what ``POST /v1/events`` accepts); they
        join to the served list by ``recommendation_id``. With ``impressions=True`` one
        ``impression`` row per served item comes first (with score, variant, model_version).
        """
        p = self.params
        rec_id, items, scores, extra = _served_items(served)
        if rec_id is None:
            rec_id = hashlib.blake2b(
                f"{context.request_id}:{','.join(items)}".encode(), digest_size=8
            ).hexdigest()
        k = len(items)
        idx = self.item_index(items)
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, STREAM_LOOP, int(context.request_id[:15], 16)])
        )
        width = max(k, 1)
        u_click, u_cart, u_buy = rng.random(width), rng.random(width), rng.random(width)
        delay = rng.integers(2_000, 60_000, width)
        events: list[dict[str, Any]] = []
        base = {
            "user_id": context.user_id,
            "session_id": context.session_id,
            "recommendation_id": rec_id,
        }
        if impressions:
            for pos, (item, score) in enumerate(zip(items, scores, strict=True)):
                events.append(
                    {
                        "event_id": f"{rec_id}-imp-{pos}",
                        "event_type": "impression",
                        "item_id": item,
                        "timestamp": _iso(context.ts_ms),
                        "position": pos,
                        **({"score": score} if score is not None else {}),
                        **base,
                        **extra,
                    }
                )
        ok = idx >= 0
        if not ok.any():
            return events
        f = self.model.user_state(np.array([context.true_user]), context.ts_ms)[2]
        aff = np.full(k, -np.inf)
        aff[ok] = self.model.affinity(np.repeat(f, ok.sum(), axis=0), idx[ok])
        exam = 1.0 / np.log2(np.arange(k) + 2.0)
        with np.errstate(over="ignore"):
            p_click = exam / (1.0 + np.exp(-(p.click_base + p.funnel_slope * aff)))
            click = u_click[:k] < p_click
            safe = np.where(ok, idx, 0)
            mult = self.model.price_multiplier(safe, np.full(k, context.ts_ms))
            cart = click & ok & self.catalogue.in_stock[safe]
            cart &= u_cart[:k] < 1.0 / (1.0 + np.exp(-(p.loop_cart_base + p.funnel_slope * aff)))
            buy_logit = p.loop_buy_base + p.funnel_slope * aff - p.price_elasticity * np.log(mult)
            buy = cart & (u_buy[:k] < 1.0 / (1.0 + np.exp(-buy_logit)))
        c = self.catalogue
        for hit in np.flatnonzero(click).tolist():
            pos = int(hit)
            i = int(idx[pos])
            t_ms = context.ts_ms + int(delay[pos])
            price = round(float(c.price[i] * mult[pos]), 2)
            common = {"item_id": items[pos], "position": int(pos), "category": str(c.category[i]), **base}
            events.append(
                {
                    "event_id": f"{rec_id}-click-{pos}",
                    "event_type": "click",
                    "timestamp": _iso(t_ms),
                    "price": price,
                    **common,
                }
            )
            if cart[pos]:
                events.append(
                    {
                        "event_id": f"{rec_id}-cart-{pos}",
                        "event_type": "add_to_cart",
                        "timestamp": _iso(t_ms + 5_000),
                        "price": price,
                        "quantity": 1,
                        **common,
                    }
                )
            if buy[pos]:
                events.append(
                    {
                        "event_id": f"{rec_id}-buy-{pos}",
                        "event_type": "purchase",
                        "timestamp": _iso(t_ms + 120_000),
                        "price": price,
                        "quantity": 1,
                        **common,
                    }
                )
        return events

    # ------------------------------------------------------------------------------- replay
    def replay(
        self,
        day: int,
        recommender: Recommender | str,
        k: int = 10,
        n: int | None = None,
        keep_events: bool = False,
        impressions: bool = False,
        on_events: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> ReplayResult:
        """Serve ``day``'s traffic with ``recommender`` (a callable ``(context, k) -> served`` or the
        base URL of a Shelfwise HTTP API) and sum up the users' reactions."""
        rec: Recommender = HttpRecommender(recommender) if isinstance(recommender, str) else recommender
        out = ReplayResult()
        for ctx in self.traffic(day, n):
            out.requests += 1
            try:
                served = rec(ctx, k)
            except (OSError, InputError, NotFoundError, ValueError):
                out.errors += 1
                continue
            events = self.respond(served, ctx, impressions=impressions)
            out.impressions += len(_served_items(served)[1])
            for e in events:
                t = e["event_type"]
                if t == "click":
                    out.clicks += 1
                elif t == "add_to_cart":
                    out.carts += 1
                elif t == "purchase":
                    out.purchases += 1
                    out.revenue += float(e["price"]) * int(e["quantity"])
            if keep_events:
                out.events.extend(events)
            if on_events is not None and events:
                on_events(events)
        return out


class HttpRecommender:
    """Asks a Shelfwise HTTP API: GET /v1/users/{id}/recommendations for known users, else POST
    /v1/recommendations with the session history. ``post_events`` sends feedback to /v1/events."""

    def __init__(self, base_url: str, timeout: float = 10.0, session: Any = None) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = session or requests.Session()

    def __call__(self, ctx: RequestContext, k: int) -> dict[str, Any]:
        if ctx.user_id is not None:
            r = self.http.get(
                f"{self.base_url}/v1/users/{ctx.user_id}/recommendations",
                params={"k": k},
                timeout=self.timeout,
            )
            if r.status_code != 404:
                r.raise_for_status()
                return dict(r.json())
        body: dict[str, Any] = {
            "session_id": ctx.session_id,
            "history": [{"item_id": i, "event_type": t} for i, t in ctx.history],
            "k": k,
        }
        r = self.http.post(f"{self.base_url}/v1/recommendations", json=body, timeout=self.timeout)
        r.raise_for_status()
        return dict(r.json())

    def post_events(self, events: list[dict[str, Any]]) -> None:
        r = self.http.post(f"{self.base_url}/v1/events", json={"events": events}, timeout=self.timeout)
        r.raise_for_status()


# ----------------------------------------------------------------------- reference recommenders
def popularity_recommender(shop: Shop) -> Recommender:
    """The honest baseline: the most popular items, minus what the session already touched."""
    ranking = [str(i + 1) for i in shop.popularity_ranking()[:500]]

    def rec(ctx: RequestContext, k: int) -> list[str]:
        seen = {i for i, _ in ctx.history}
        return [i for i in ranking if i not in seen][:k]

    return rec


def random_recommender(shop: Shop, seed: int = 0) -> Recommender:
    n = len(shop.catalogue)

    def rec(ctx: RequestContext, k: int) -> list[str]:
        r = np.random.default_rng(np.random.SeedSequence([seed, int(ctx.request_id[:15], 16)]))
        return [str(i + 1) for i in r.choice(n, min(k, n), replace=False)]

    return rec


def factor_recommender(
    shop: Shop,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None = None,
    history_fold_in: bool = True,
) -> Recommender:
    """Top-k by user x item factors (any model's, or noisy true ones); anonymous users are folded in
    as the mean factor of their history items."""
    bias = np.zeros(len(item_factors)) if item_bias is None else item_bias

    def rec(ctx: RequestContext, k: int) -> list[str]:
        if ctx.user_id is not None:
            u = user_factors[shop.user_index(ctx.user_id)]
        else:
            hist = shop.item_index([i for i, _ in ctx.history])
            hist = hist[hist >= 0]
            if not history_fold_in or not len(hist):
                u = np.zeros(item_factors.shape[1])
            else:
                u = item_factors[hist].mean(axis=0) * 2.0
        scores = item_factors @ u + bias
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [str(i + 1) for i in top]

    return rec


def oracle_factors(
    shop: Shop, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item factors, item bias) = the truth plus Gaussian noise: an "oracle-ish good model"."""
    r = np.random.default_rng(seed)
    scale = noise / math.sqrt(shop.item_factors.shape[1])
    u = shop.user_factors + scale * r.standard_normal(shop.user_factors.shape)
    v = shop.item_factors + scale * r.standard_normal(shop.item_factors.shape)
    return u.astype(np.float32), v.astype(np.float32), shop.item_bias.copy()
