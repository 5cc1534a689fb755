"""The simulated shop: catalogue, users with latent tastes, and one day of behaviour as numpy columns.

Everything is vectorised per day, and each day draws from its own generator seeded by
``SeedSequence([seed, STREAM_DAY, day])``, so days are independent chunks: memory does not grow with
the number of days and the same seed always yields the same events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shelfwise.simulator.params import Incident, ShopParams

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Event type codes of a DayBlock; names are the native event types.
VIEW, CART, REMOVE, FAV, PURCHASE, SEARCH = 0, 1, 2, 3, 4, 5
CODE_NAMES: tuple[str, ...] = (
    "view",
    "add_to_cart",
    "remove_from_cart",
    "add_to_wishlist",
    "purchase",
    "search",
)

# Daily cycle (UTC hour weights, evening peak, quiet night) and weekly cycle (Monday first).
HOURLY = np.array(
    [
        0.9,
        0.5,
        0.3,
        0.2,
        0.2,
        0.3,
        0.7,
        1.4,
        2.2,
        2.8,
        3.0,
        3.0,
        3.1,
        3.1,
        3.0,
        3.0,
        3.1,
        3.3,
        3.6,
        4.1,
        4.6,
        4.7,
        3.9,
        2.3,
    ]
)
HOURLY_CUM = np.cumsum(HOURLY) / HOURLY.sum()
WEEKLY = np.array([1.0, 0.97, 0.96, 0.98, 1.03, 1.12, 1.15])

TOP_NAMES = (
    "home", "kitchen", "electronics", "fashion", "beauty", "sports", "toys", "garden",
    "books", "grocery", "pets", "baby", "auto", "office", "music", "health",
)  # fmt: skip
NEW_TOP_NAME = "novelties"
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "tu",
    "ven",
    "sol",
    "dri",
    "pa",
    "ne",
    "zo",
    "bel",
    "cor",
    "fi",
    "gra",
    "hu",
    "ix",
    "jo",
    "lum",
    "mar",
    "nor",
    "op",
    "qui",
    "sen",
    "tor",
    "ul",
    "vi",
    "wex",
    "yar",
    "zen",
    "bri",
    "cas",
    "dal",
    "eno",
    "fur",
    "gil",
    "han",
]
WORDS_PER_LEAF = 24
QUERIES_PER_LEAF = 16
MAX_VIEWS = 200

# Stream ids for SeedSequence([seed, stream, ...]): each concern draws from its own stream.
STREAM_SHOP, STREAM_DAY, STREAM_DRIFT, STREAM_LOOP, STREAM_EXPORT, STREAM_CALIBRATE = 1, 2, 3, 4, 5, 6
STREAM_MISSION = 7
ANON_VISITOR_OFFSET = 10**11  # anonymous visitors' ids in formats that need a user (Taobao, RetailRocket)
BOT_USER_OFFSET = 9 * 10**9


def time_order(ts: np.ndarray) -> np.ndarray:
    """Stable argsort of millisecond timestamps, several times faster than
    ``argsort(kind="stable")``: each key is the time offset with the row index in its low bits, so
    keys are unique, a plain (SIMD) sort of them is stable, and the index comes back out of them."""
    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lo = int(ts.min())
    bits = max(1, (n - 1).bit_length())
    if (int(ts.max()) - lo) >> (62 - bits):
        return np.argsort(ts, kind="stable")
    key = (ts - lo) << bits
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    key &= (1 << bits) - 1
    return key


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``np.take(a, idx, axis=0)`` for a 2-D array, each row moved as one item (about 25% faster)."""
    a = np.ascontiguousarray(a)
    rows = a.view(np.dtype((np.void, a.shape[1] * a.itemsize))).ravel()
    return np.take(rows, idx).view(a.dtype).reshape(len(idx), a.shape[1])


def hash_uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) numbers that are a pure function of integer keys (splitmix64 of each in turn).

    State that spans days (a user's current shopping mission) comes from it, so every day is still
    generated on its own and the same keys always give the same number.
    """
    with np.errstate(over="ignore"):
        h = np.zeros(np.broadcast(*[np.asarray(k) for k in keys]).shape, dtype=np.uint64)
        for k in keys:
            h = h ^ np.asarray(k).astype(np.uint64)
            h = h + np.uint64(0x9E3779B97F4A7C15)
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class Catalogue:
    """Items, one row per item index (item_id = str(index + 1))."""

    leaf: np.ndarray  # int16 leaf category index
    top: np.ndarray  # int16 top category index
    category: np.ndarray  # U, "top/sub"
    title_words: np.ndarray  # int8 [n, 5] word indices into leaf_words[leaf], -1 = none
    price: np.ndarray  # float64, base price before incidents
    launch_day: np.ndarray  # int32; < 0 = before the simulated period
    in_stock: np.ndarray  # bool
    popularity: np.ndarray  # float64, sums to 1 over the whole catalogue
    leaf_names: np.ndarray  # U, per leaf
    leaf_top: np.ndarray  # int16, per leaf
    leaf_words: list[list[str]]
    leaf_queries: np.ndarray  # U [n_leaves, QUERIES_PER_LEAF]
    consumable_leaf: np.ndarray  # bool, per leaf

    def __len__(self) -> int:
        return len(self.leaf)

    @property
    def item_id(self) -> np.ndarray:
        """Item ids as strings (``str(index + 1)``), built on first use."""
        cached = self.__dict__.get("_item_id")
        if cached is None:
            cached = self.__dict__["_item_id"] = np.array([str(i + 1) for i in range(len(self.leaf))])
        return cached

    @property
    def title(self) -> np.ndarray:
        """Titles (3-5 words of the item's category vocabulary), built on first use."""
        cached = self.__dict__.get("_title")
        if cached is None:
            words = self.leaf_words
            cached = np.array(
                [
                    " ".join(words[lf][w] for w in row if w >= 0).capitalize()
                    for lf, row in zip(self.leaf.tolist(), self.title_words.tolist(), strict=True)
                ]
            )
            self.__dict__["_title"] = cached
        return cached

    def to_table(self) -> Any:
        """The catalogue as a pyarrow Table (item_id, category, title, price, launch_day, in_stock, popularity)."""
        import pyarrow as pa

        return pa.table(
            {
                "item_id": self.item_id,
                "category": self.category,
                "title": self.title,
                "price": self.price,
                "launch_day": self.launch_day,
                "in_stock": self.in_stock,
                "popularity": self.popularity,
            }
        )


@dataclass
class Users:
    """Users, one row per user index (user_id = str(index + 1))."""

    join_day: np.ndarray  # int32
    activity: np.ndarray  # float64, mean 1, heavy tail
    fav_leaves: np.ndarray  # int16 [n, 3]
    fav_cum: np.ndarray  # float64 [n, 3], cumulative weights (last = 1)
    factors: np.ndarray  # float32 [n, dim]
    staple: np.ndarray  # int32 item index bought again and again (replenishment)

    def __len__(self) -> int:
        return len(self.join_day)

    @property
    def user_id(self) -> np.ndarray:
        """User ids as strings (``str(index + 1)``), built on first use."""
        cached = self.__dict__.get("_user_id")
        if cached is None:
            cached = self.__dict__["_user_id"] = np.array([str(i + 1) for i in range(len(self.join_day))])
        return cached


@dataclass
class DayBlock:
    """One simulated day of events as parallel numpy columns, sorted by time."""

    day: int
    ts: np.ndarray  # int64 ms since epoch, UTC
    code: np.ndarray  # int8, CODE_NAMES index
    user: np.ndarray  # int64 user index, -1 when anonymous
    visitor: np.ndarray  # int64 user index, or ANON_VISITOR_OFFSET + session for anonymous events
    session: np.ndarray  # int64 session number, unique over the run
    item: np.ndarray  # int32 item index, -1 for search
    price: np.ndarray  # float64, NaN where none
    quantity: np.ndarray  # int16, 0 where none
    query: np.ndarray  # int32 index into catalogue.leaf_queries.ravel(), -1 where none
    owner: np.ndarray  # int64 true user index behind the event, also when anonymous (ground truth)

    def __len__(self) -> int:
        return len(self.ts)

    def select(self, keep: np.ndarray) -> DayBlock:
        if isinstance(keep, np.ndarray) and keep.dtype != bool:
            return DayBlock(self.day, *(np.take(getattr(self, f), keep) for f in BLOCK_FIELDS))
        return DayBlock(self.day, *(getattr(self, f)[keep] for f in BLOCK_FIELDS))


BLOCK_FIELDS = ("ts", "code", "user", "visitor", "session", "item", "price", "quantity", "query", "owner")


def _word(rng: np.random.Generator) -> str:
    n = int(rng.integers(2, 4))
    return "".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), n))


class ShopModel:
    """Catalogue, users and their ground truth; generates days of behaviour (see ``day``)."""

    def __init__(self, params: ShopParams, seed: int) -> None:
        self.params = params
        self.seed = int(seed)
        self.start_ms = params.start_ms
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_SHOP]))
        self._build_catalogue(rng)
        self._build_users(rng)
        self._build_incidents()
        self._calibrate()

    # ----------------------------------------------------------------------------------- catalogue
    def _build_catalogue(self, rng: np.random.Generator) -> None:
        p = self.params
        d = p.dim
        new_cat = p.incident("new_category")
        n_top = p.n_top_categories + (1 if new_cat else 0)
        n_leaves_base = p.n_leaves
        n_leaves = n_top * p.n_sub_categories
        top_names = [TOP_NAMES[t] if t < len(TOP_NAMES) else f"dept{t}" for t in range(p.n_top_categories)]
        if new_cat:
            top_names.append(NEW_TOP_NAME)
        leaf_top = np.repeat(np.arange(n_top, dtype=np.int16), p.n_sub_categories)
        leaf_words = [[_word(rng) for _ in range(WORDS_PER_LEAF)] for _ in range(n_leaves)]
        leaf_names = np.array([f"{top_names[leaf_top[i]]}/{leaf_words[i][0]}" for i in range(n_leaves)])
        leaf_weight = rng.dirichlet(np.full(n_leaves, 2.0)) * n_leaves

        n_base = p.n_items
        n_new = round(p.n_items * new_cat.opt("items_share")) if new_cat else 0
        n_new = max(n_new, p.n_sub_categories) if new_cat else 0
        n = n_base + n_new
        # Every base leaf gets at least one pre-existing item; the rest by leaf weight.
        base_w = leaf_weight[:n_leaves_base] / leaf_weight[:n_leaves_base].sum()
        leaf = np.concatenate(
            [
                np.arange(n_leaves_base),
                rng.choice(n_leaves_base, n_base - n_leaves_base, p=base_w),
                n_leaves_base + rng.integers(0, p.n_sub_categories, n_new),
            ]
        ).astype(np.int16)
        if n_new:
            leaf[n_base : n_base + p.n_sub_categories] = np.arange(n_leaves_base, n_leaves)
        launch = np.empty(n, dtype=np.int32)
        n_initial = max(n_leaves_base, round(n_base * p.initial_item_share))
        launch[:n_initial] = -rng.integers(1, 366, n_initial)
        launch[n_initial:n_base] = rng.integers(0, p.n_days, n_base - n_initial)
        if new_cat:
            launch[n_base:] = new_cat.day
        # Shuffle base items so ids carry no structure; new-category items keep the highest ids.
        perm = rng.permutation(n_base)
        leaf[:n_base], launch[:n_base] = leaf[:n_base][perm], launch[:n_base][perm]

        # Zipf popularity within each leaf, scaled by the leaf's weight.
        order = np.lexsort((rng.random(n), leaf))
        leaf_sorted = leaf[order]
        starts = np.searchsorted(leaf_sorted, np.arange(n_leaves))
        rank = np.empty(n, dtype=np.float64)
        rank[order] = np.arange(n) - starts[leaf_sorted] + 1
        pop = rank ** (-p.zipf_a)
        leaf_sum = np.bincount(leaf, weights=pop, minlength=n_leaves)
        pop = pop / leaf_sum[leaf] * leaf_weight[leaf]
        pop /= pop.sum()

        mu = rng.normal(3.1, 0.75, n_leaves)
        sigma = rng.uniform(0.3, 0.6, n_leaves)
        price = np.maximum(0.5, np.round(np.exp(mu[leaf] + sigma[leaf] * rng.standard_normal(n)), 2))
        in_stock = rng.random(n) < p.in_stock_share
        consumable = rng.random(n_leaves) < p.consumable_share
        if not consumable[:n_leaves_base].any():
            consumable[0] = True

        # Titles: 3-5 words of the leaf's vocabulary, the leaf's lead words most often.
        word_p = 1.0 / np.arange(1, WORDS_PER_LEAF + 1)
        word_p /= word_p.sum()
        nwords = rng.integers(3, 6, n)
        widx = rng.choice(WORDS_PER_LEAF, (n, 5), p=word_p)
        used = np.arange(5)[None, :] < nwords[:, None]
        # Queries: one or two of the words the leaf's titles use most (so search has text to match).
        counts = np.bincount(
            (leaf[:, None].astype(np.int64) * WORDS_PER_LEAF + widx)[used],
            minlength=n_leaves * WORDS_PER_LEAF,
        ).reshape(n_leaves, WORDS_PER_LEAF)
        queries = np.empty((n_leaves, QUERIES_PER_LEAF), dtype=object)
        for i in range(n_leaves):
            ranked = [int(j) for j in np.argsort(-counts[i], kind="stable") if counts[i, j] > 0][:8] or [0]
            words = [leaf_words[i][j] for j in ranked]
            for q in range(QUERIES_PER_LEAF):
                k = min(len(words), 1 + int(rng.random() < 0.45))
                queries[i, q] = " ".join(words[int(j)] for j in rng.choice(len(words), k, replace=False))

        # Latent factors: top centroid -> leaf centroid -> item, all near unit length.
        top_c = _unit(rng.standard_normal((n_top, d)))
        leaf_c = _unit(top_c[leaf_top] + 0.8 * _unit(rng.standard_normal((n_leaves, d))))
        item_f = leaf_c[leaf] + 0.45 * rng.standard_normal((n, d)) / math.sqrt(d)
        logpop = np.log(pop)
        bias = 0.35 * (logpop - logpop.mean()) / (logpop.std() + 1e-9)

        self.catalogue = Catalogue(
            leaf=leaf,
            top=leaf_top[leaf],
            category=leaf_names[leaf],
            title_words=np.where(used, widx, -1).astype(np.int8),
            price=price,
            launch_day=launch,
            in_stock=in_stock,
            popularity=pop,
            leaf_names=leaf_names,
            leaf_top=leaf_top,
            leaf_words=leaf_words,
            leaf_queries=queries.astype(str),
            consumable_leaf=consumable,
        )
        self.leaf_weight = leaf_weight
        self.leaf_centroids = leaf_c.astype(np.float32)
        self.item_factors = item_f.astype(np.float32)
        self.item_bias = bias.astype(np.float32)
        self.n_leaves_base = n_leaves_base
        # Items of each leaf, contiguous, for popularity sampling.
        self._leaf_order = np.argsort(leaf, kind="stable").astype(np.int32)
        self._leaf_of_sorted = leaf[self._leaf_order]
        self._build_alias()

    def _build_alias(self) -> None:
        """Walker alias tables per leaf over all items, so a popularity draw costs O(1).

        Items not launched yet are rejected and redrawn at sampling time (``sample_items``).
        """
        c = self.catalogue
        order = self._leaf_order
        lf = self._leaf_of_sorted
        n_leaves = len(c.leaf_names)
        self._leaf_start = np.searchsorted(lf, np.arange(n_leaves)).astype(np.int64)
        self._leaf_len = np.bincount(lf, minlength=n_leaves).astype(np.int64)
        prob = np.ones(len(order))
        alias = np.arange(len(order), dtype=np.int64)
        w_all = c.popularity[order]
        for leaf in range(n_leaves):
            s0, m = int(self._leaf_start[leaf]), int(self._leaf_len[leaf])
            w = w_all[s0 : s0 + m]
            # Python floats are the same IEEE doubles as numpy's, and much cheaper one at a time.
            q = (w * (m / w.sum())).tolist()
            pr, al = [1.0] * m, list(range(s0, s0 + m))
            small = [i for i, x in enumerate(q) if x < 1.0]
            large = [i for i, x in enumerate(q) if x >= 1.0]
            while small and large:
                sm, lg = small.pop(), large.pop()
                pr[sm] = q[sm]
                al[sm] = s0 + lg
                q[lg] -= 1.0 - q[sm]
                (small if q[lg] < 1.0 else large).append(lg)
            prob[s0 : s0 + m] = pr
            alias[s0 : s0 + m] = al
        self._alias_prob = prob
        self._alias = alias

    def sample_items(self, leaf: np.ndarray, u: np.ndarray, day: int) -> np.ndarray:
        """Item indices drawn by popularity within each given leaf (only items launched by ``day``).

        ``u`` holds uniform numbers in [0, 1) that drive the draw, so callers control the stream.
        """
        leaf = np.asarray(leaf, dtype=np.int64)
        m = self._leaf_len[leaf]
        x = u * m
        j = np.minimum(x.astype(np.int64), m - 1)
        frac = x - j
        pos = self._leaf_start[leaf] + j
        pos = np.where(frac < self._alias_prob[pos], pos, self._alias[pos])
        item = self._leaf_order[pos]
        late = np.flatnonzero(self.catalogue.launch_day[item] > day)
        if len(late):
            # Redraw unlaunched picks from a stream derived from the draw itself (deterministic).
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 99, day + 1, len(late)]))
            for _ in range(64):
                item[late] = self.sample_items(leaf[late], rng.random(len(late)), 10**9)
                late = late[self.catalogue.launch_day[item[late]] > day]
                if not len(late):
                    break
            if len(late):  # a leaf with nothing launched: fall back to its first launched item
                ok = np.flatnonzero(self.catalogue.launch_day[self._leaf_order] <= day)
                item[late] = self._leaf_order[ok[0]]
        return item

    def leaf_available(self, day: int) -> np.ndarray:
        c = self.catalogue
        return np.bincount(c.leaf[c.launch_day <= day], minlength=len(c.leaf_names)) > 0

    # --------------------------------------------------------------------------------------- users
    def _tastes(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Favourite leaves (3 per user, weighted) and latent factors that agree with them."""
        p = self.params
        w = self.leaf_weight[: self.n_leaves_base] ** 0.7
        fav = rng.choice(self.n_leaves_base, (n, 3), p=w / w.sum()).astype(np.int16)
        g = rng.standard_gamma(np.array([4.0, 2.0, 1.0]), (n, 3))
        fw = np.sort(g / g.sum(axis=1, keepdims=True), axis=1)[:, ::-1]
        cum = np.cumsum(fw, axis=1)
        cum[:, -1] = 1.0
        f = np.einsum("nk,nkd->nd", fw, self.leaf_centroids[fav])
        f *= 2.6
        noise = rng.standard_normal((n, p.dim))
        noise *= 0.35
        noise /= math.sqrt(p.dim)
        f += noise
        return fav, cum, f.astype(np.float32)

    def _build_users(self, rng: np.random.Generator) -> None:
        p = self.params
        n = p.n_users
        join = np.full(n, -1, dtype=np.int32)
        n_initial = max(1, round(n * p.initial_user_share))
        join[n_initial:] = np.sort(rng.integers(0, p.n_days, n - n_initial))
        activity = rng.lognormal(0.0, p.activity_sigma, n)
        activity /= activity.mean()
        fav, cum, f = self._tastes(rng, n)
        # Staple: a popular item of a consumable leaf, bought again and again.
        c = self.catalogue
        cons = np.flatnonzero(c.consumable_leaf[: self.n_leaves_base])
        fav_cons = c.consumable_leaf[fav]
        first_cons = np.where(fav_cons.any(axis=1), fav[np.arange(n), fav_cons.argmax(axis=1)], -1)
        staple_leaf = np.where(first_cons >= 0, first_cons, cons[rng.integers(0, len(cons), n)])
        staple = self.sample_items(staple_leaf, rng.random(n), -1)
        self.users = Users(
            join_day=join,
            activity=activity,
            fav_leaves=fav,
            fav_cum=cum,
            factors=f,
            staple=staple.astype(np.int32),
        )

    # ----------------------------------------------------------------------------------- incidents
    def _build_incidents(self) -> None:
        p = self.params
        drift = p.incident("taste_drift")
        n = p.n_users
        self.drift_at_ms: int | None = None
        self.drifted = np.zeros(n, dtype=bool)
        if drift:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_DRIFT]))
            self.drift_at_ms = self.incident_ms(drift)
            self.drifted = rng.random(n) < float(drift.opt("share"))
            self.drift_fav, self.drift_cum, self.drift_factors = self._tastes(rng, n)

    def _browse_affinities(self, n: int) -> np.ndarray:
        """True affinities of a sample of browsing views (the same draw as ``day``), for calibration."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_CALIBRATE]))
        users = self.users
        u = rng.choice(len(users), n, p=users.activity / users.activity.sum())
        k = (rng.random(n)[:, None] > users.fav_cum[u]).sum(axis=1).clip(0, 2)
        leaf = users.fav_leaves[u, k].astype(np.int64)
        w = self.leaf_weight[: self.n_leaves_base]
        explore = rng.random(n) < self.params.explore_share
        # a session that follows its mission (``_mission_leaves``): a need by category weight, or
        # a favourite (the draw above stands for it)
        mission = rng.random(n) < self.params.mission_share
        explore = np.where(mission, rng.random(n) < self.params.mission_explore, explore)
        leaf[explore] = rng.choice(self.n_leaves_base, int(explore.sum()), p=w / w.sum())
        c1 = self.sample_items(leaf, rng.random(n), 0)
        c2 = self.sample_items(leaf, rng.random(n), 0)
        f = users.factors[u]
        return np.maximum(self.affinity(f, c1), self.affinity(f, c2)).astype(np.float64)

    def _calibrate(self) -> None:
        """Solve the funnel's logistic bases so the target rates hold on this shop's own browsing."""
        p = self.params
        a = p.funnel_slope * self._browse_affinities(20_000)

        def solve(target: float, weight: np.ndarray | None = None) -> float:
            lo, hi = -30.0, 30.0
            wsum = len(a) if weight is None else weight.sum()
            for _ in range(60):
                mid = (lo + hi) / 2
                s = _sigmoid(mid + a)
                rate = (s.sum() if weight is None else (s * weight).sum()) / wsum
                lo, hi = (mid, hi) if rate < target else (lo, mid)
            return (lo + hi) / 2

        self.cart_base = solve(min(0.999, p.view_to_cart / max(p.in_stock_share, 1e-3)))
        self.fav_base = solve(p.view_to_fav)
        # Guests who never log in cannot buy: aim higher for everyone else.
        payers = 1.0 - p.anonymous_share * (1.0 - p.login_share)
        self.buy_base = solve(
            min(0.999, p.cart_to_purchase / max(payers, 1e-3)), _sigmoid(self.cart_base + a)
        )

    def incident_ms(self, inc: Incident) -> int:
        return self.start_ms + round(inc.at * DAY_MS)

    def user_state(
        self, users: np.ndarray, t_ms: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(favourite leaves, cumulative weights, factors) of ``users`` at times ``t_ms`` (taste drift aware)."""
        u = self.users
        fav, cum, f = u.fav_leaves[users], u.fav_cum[users], u.factors[users]
        if self.drift_at_ms is not None:
            moved = self.drifted[users] & (np.asarray(t_ms) >= self.drift_at_ms)
            if moved.any():
                fav = np.where(moved[:, None], self.drift_fav[users], fav)
                cum = np.where(moved[:, None], self.drift_cum[users], cum)
                f = np.where(moved[:, None], self.drift_factors[users], f)
        return fav, cum, f

    def price_multiplier(self, items: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
        """Price factor of ``items`` at times ``t_ms`` (the price-shock incident)."""
        inc = self.params.incident("price_shock")
        if inc is None:
            return np.ones(len(items))
        hit = (self.catalogue.top[items] == int(inc.opt("top_category"))) & (t_ms >= self.incident_ms(inc))
        return np.where(hit, float(inc.opt("factor")), 1.0)

    def affinity(self, user_factors: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True affinity: latent taste x item factors plus the item's appeal (aligned rows)."""
        vf = take_rows(self.item_factors, items)
        return np.einsum("nd,nd->n", user_factors, vf) + np.take(self.item_bias, items)

    # ------------------------------------------------------------------------------------- one day
    def day(self, day: int) -> DayBlock:
        """All events of simulated ``day`` (0-based), sorted by time. Deterministic per (seed, day)."""
        p = self.params
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_DAY, day]))
        day_ms = self.start_ms + day * DAY_MS
        users = self.users
        dow = p.day_date(day).weekday()

        active = users.join_day <= day
        rate = p.sessions_per_user_day * WEEKLY[dow] * users.activity * active
        n_sess = rng.poisson(rate)
        s_user = np.repeat(np.arange(len(users), dtype=np.int64), n_sess)
        S = len(s_user)
        session_no = (day + 1) * 10**8 + np.arange(S, dtype=np.int64)
        hour = np.searchsorted(HOURLY_CUM, rng.random(S), side="right")
        start = np.minimum(hour, 23) * HOUR_MS + rng.integers(0, HOUR_MS, S)

        replen = rng.random(S) < p.replenish_share
        search = ~replen & (rng.random(S) < p.search_share)
        anon = ~replen & (rng.random(S) < p.anonymous_share)
        logs_in = anon & (rng.random(S) < p.login_share)

        # Session category: one of the user's favourites, or exploration by category weight.
        fav, cum, uf_sess = self.user_state(s_user, day_ms + start)
        k = (rng.random(S)[:, None] > cum).sum(axis=1).clip(0, 2)
        leaf = fav[np.arange(S), k].astype(np.int64)
        explore = ~replen & (rng.random(S) < p.explore_share)
        leaf_w = self.leaf_weight * self.leaf_available(day)
        new_cat = p.incident("new_category")
        u_exp = rng.random(S)
        if new_cat is not None and day >= new_cat.day:
            boosted = leaf_w.copy()
            boosted[self.n_leaves_base :] *= float(new_cat.opt("boost"))
            after = day_ms + start >= self.incident_ms(new_cat)
            leaf_b = np.searchsorted(np.cumsum(boosted) / boosted.sum(), u_exp, side="right")
            leaf_w[self.n_leaves_base :] = 0.0
            leaf_a = np.searchsorted(np.cumsum(leaf_w) / leaf_w.sum(), u_exp, side="right")
            leaf_e = np.where(after, leaf_b, leaf_a)
        else:
            leaf_w[self.n_leaves_base :] = 0.0
            leaf_e = np.searchsorted(np.cumsum(leaf_w) / leaf_w.sum(), u_exp, side="right")
        leaf = np.where(explore, np.minimum(leaf_e, len(leaf_w) - 1), leaf)
        leaf = np.where(
            replen, leaf, self._mission_leaves(leaf, s_user, day_ms + start, fav, cum, leaf_w, day)
        )
        staple = users.staple[s_user]
        leaf = np.where(replen, self.catalogue.leaf[staple], leaf)

        # Views per session (lognormal, heavy tail); replenishment sessions go straight to the staple.
        nv = 1 + np.floor(np.exp(p.views_mu + p.views_sigma * rng.standard_normal(S))).astype(np.int64)
        nv = np.where(replen, 1, np.minimum(nv, MAX_VIEWS))
        V = int(nv.sum())
        v_sess = np.repeat(np.arange(S), nv)
        first = np.cumsum(nv) - nv
        v_idx = np.arange(V) - first[v_sess]
        v_leaf = leaf[v_sess]
        c1 = self.sample_items(v_leaf, rng.random(V), day)
        c2 = self.sample_items(v_leaf, rng.random(V), day)
        vf = take_rows(uf_sess, v_sess)
        a1, a2 = self.affinity(vf, c1), self.affinity(vf, c2)
        pick2 = a2 > a1  # users look at what they like: the better of two popularity draws
        item = np.where(pick2, c2, c1).astype(np.int64)
        aff = np.where(pick2, a2, a1)
        is_replen_view = replen[v_sess]
        rv = np.flatnonzero(is_replen_view)
        item[rv] = staple[v_sess[rv]]
        aff[rv] = self.affinity(vf[rv], item[rv])

        # Times: a search first, then views 4 s to a few minutes apart; checkout after the last view.
        gap = 4000 + rng.exponential(38_000, V).astype(np.int64)
        gap[first] += np.where(search, 6000, 0)
        off = np.cumsum(gap)
        off -= np.repeat(off[first] - gap[first], nv)
        last_off = off[first + nv - 1]
        checkout = last_off + 20_000 + rng.exponential(50_000, S).astype(np.int64)
        dur = checkout + 60_000
        start = np.clip(np.minimum(start, DAY_MS - dur - 1), 0, None)
        base = day_ms + start
        v_ts = base[v_sess] + off

        # Funnel: probabilities from the true affinity, the price (shock) and stock.
        mult = self.price_multiplier(item, v_ts)
        price = self.catalogue.price[item] * mult
        logit = p.funnel_slope * aff
        cart_logit = self.cart_base + logit
        cart_logit[rv] += 5.0
        cart = (rng.random(V, dtype=np.float32) < _sigmoid(cart_logit)) & self.catalogue.in_stock[item]
        fav_ev = rng.random(V, dtype=np.float32) < _sigmoid(self.fav_base + logit)
        ci = np.flatnonzero(cart)
        nc = len(ci)
        rep_c = is_replen_view[ci]
        buy_logit = self.buy_base + logit[ci] + 3.0 * rep_c - p.price_elasticity * np.log(mult[ci])
        can_pay = ~(anon & ~logs_in)[v_sess[ci]]  # guests cannot check out
        b_c = (rng.random(nc) < _sigmoid(buy_logit)) & can_pay
        r_c = ~b_c & (rng.random(nc) < p.remove_share)
        q_c = np.where(rep_c, 1 + rng.poisson(1.2, nc), 1 + (rng.random(nc) < 0.12) * rng.geometric(0.5, nc))
        buy = np.zeros(V, dtype=bool)
        buy[ci[b_c]] = True
        remove = np.zeros(V, dtype=bool)
        remove[ci[r_c]] = True
        qty = np.zeros(V, dtype=np.int16)
        qty[ci] = q_c

        # Identity: anonymous until login (at a random view); purchases happen after login.
        login_at = np.where(logs_in, rng.integers(0, np.maximum(nv, 1)), np.where(anon, MAX_VIEWS + 1, 0))
        v_anon = v_idx < login_at[v_sess]

        def rank_in_session(mask: np.ndarray) -> np.ndarray:
            sel = np.flatnonzero(mask)
            s = v_sess[sel]
            c = np.arange(len(sel)) - np.searchsorted(s, s)
            return c

        parts: list[tuple[np.ndarray, ...]] = []  # (ts, code, session index, item, anon, price, qty)
        zeros16 = np.zeros(V, dtype=np.int16)
        parts.append((v_ts, np.full(V, VIEW), v_sess, item, v_anon, price, zeros16))
        sel = np.flatnonzero(cart)
        parts.append(
            (
                v_ts[sel] + 1000 + rng.integers(0, 1000, len(sel)),
                np.full(len(sel), CART),
                v_sess[sel],
                item[sel],
                v_anon[sel],
                price[sel],
                qty[sel],
            )
        )
        sel = np.flatnonzero(fav_ev)
        parts.append(
            (
                v_ts[sel] + 2000 + rng.integers(0, 1000, len(sel)),
                np.full(len(sel), FAV),
                v_sess[sel],
                item[sel],
                v_anon[sel],
                price[sel],
                zeros16[sel],
            )
        )
        sel = np.flatnonzero(remove)
        r = rank_in_session(remove)
        parts.append(
            (
                base[v_sess[sel]] + last_off[v_sess[sel]] + 5000 + 1000 * r,
                np.full(len(sel), REMOVE),
                v_sess[sel],
                item[sel],
                v_anon[sel],
                price[sel],
                qty[sel],
            )
        )
        sel = np.flatnonzero(buy)
        r = rank_in_session(buy)
        parts.append(
            (
                base[v_sess[sel]] + checkout[v_sess[sel]] + 1000 * r,
                np.full(len(sel), PURCHASE),
                v_sess[sel],
                item[sel],
                np.zeros(len(sel), bool),
                price[sel],
                qty[sel],
            )
        )
        s_sel = np.flatnonzero(search)
        q = leaf[s_sel] * QUERIES_PER_LEAF + rng.integers(0, QUERIES_PER_LEAF, len(s_sel))
        parts.append(
            (
                base[s_sel],
                np.full(len(s_sel), SEARCH),
                s_sel,
                np.full(len(s_sel), -1),
                anon[s_sel] & (login_at[s_sel] > 0),
                np.full(len(s_sel), np.nan),
                np.zeros(len(s_sel), np.int16),
            )
        )

        ts = np.concatenate([x[0] for x in parts])
        code = np.concatenate([x[1] for x in parts]).astype(np.int8)
        sess_i = np.concatenate([x[2] for x in parts])
        items = np.concatenate([x[3] for x in parts]).astype(np.int32)
        is_anon = np.concatenate([x[4] for x in parts])
        prices = np.concatenate([x[5] for x in parts])
        qtys = np.concatenate([x[6] for x in parts]).astype(np.int16)
        query = np.full(len(ts), -1, dtype=np.int32)
        query[len(ts) - len(s_sel) :] = q
        uidx = s_user[sess_i]
        user = np.where(is_anon, -1, uidx)
        visitor = np.where(is_anon, ANON_VISITOR_OFFSET + session_no[sess_i], uidx)
        block = DayBlock(day, ts, code, user, visitor, session_no[sess_i], items, prices, qtys, query, uidx)
        block = self._day_incidents(block, day, rng)
        return block.select(time_order(block.ts))

    def _mission_leaves(
        self,
        leaf: np.ndarray,
        s_user: np.ndarray,
        t_ms: np.ndarray,
        fav: np.ndarray,
        cum: np.ndarray,
        leaf_w: np.ndarray,
        day: int,
    ) -> np.ndarray:
        """Session leaves with a share of them moved to the user's current mission.

        A mission is a leaf held for ``mission_days`` from a per-user phase: a need outside the
        favourites (a leaf by category weight, ``mission_explore`` of the time) or one of the
        user's favourites (by their weights). Which mission a time falls in, and its leaf, are
        hashes of (seed, user, mission number), so days stay independent. Consecutive sessions
        then share a category, as a real shopper's do while a purchase is being decided, so recent
        behaviour predicts the next days better than the whole history does.
        """
        p = self.params
        if p.mission_share <= 0.0 or len(leaf) == 0:
            return leaf
        mission_ms = p.mission_days * DAY_MS
        phase = hash_uniform(self.seed, STREAM_MISSION, s_user) * mission_ms
        number = np.floor((t_ms - self.start_ms + phase) / mission_ms).astype(np.int64)
        u = hash_uniform(self.seed, STREAM_MISSION, s_user, number)
        k = (u[:, None] > cum).sum(axis=1).clip(0, 2)
        mission = fav[np.arange(len(leaf)), k].astype(np.int64)
        need = hash_uniform(self.seed, STREAM_MISSION, s_user, number, 1) < p.mission_explore
        by_weight = np.searchsorted(
            np.cumsum(leaf_w) / leaf_w.sum(), hash_uniform(self.seed, STREAM_MISSION, s_user, number, 2)
        )
        mission = np.where(need, np.minimum(by_weight, len(leaf_w) - 1), mission)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_MISSION, day]))
        follows = rng.random(len(leaf)) < p.mission_share
        return np.where(follows, mission, leaf)

    def _day_incidents(self, block: DayBlock, day: int, rng: np.random.Generator) -> DayBlock:
        """Bot traffic added, data outage removed."""
        p = self.params
        bot = p.incident("bot_traffic")
        if bot is not None and bot.day == day:
            t0 = self.incident_ms(bot)
            n = int(bot.opt("views"))
            ts = t0 + (np.arange(n) * float(bot.opt("interval_s")) * 1000).astype(np.int64)
            ts = ts[ts < self.start_ms + (day + 1) * DAY_MS]
            n = len(ts)
            avail = np.flatnonzero(self.catalogue.launch_day <= day)
            items = avail[(int(rng.integers(0, len(avail))) + np.arange(n)) % len(avail)].astype(np.int32)
            bot_user = self.bot_user_index
            block = DayBlock(
                day,
                np.concatenate([block.ts, ts]),
                np.concatenate([block.code, np.full(n, VIEW, np.int8)]),
                np.concatenate([block.user, np.full(n, bot_user)]),
                np.concatenate([block.visitor, np.full(n, bot_user)]),
                np.concatenate([block.session, np.full(n, (day + 1) * 10**8 + 99_999_999)]),
                np.concatenate([block.item, items]),
                np.concatenate([block.price, self.catalogue.price[items] * self.price_multiplier(items, ts)]),
                np.concatenate([block.quantity, np.zeros(n, np.int16)]),
                np.concatenate([block.query, np.full(n, -1, np.int32)]),
                np.concatenate([block.owner, np.full(n, bot_user)]),
            )
        outage = p.incident("data_outage")
        if outage is not None:
            t0 = self.incident_ms(outage)
            t1 = t0 + int(float(outage.opt("hours")) * HOUR_MS)
            keep = (block.ts < t0) | (block.ts >= t1)
            if not keep.all():
                block = block.select(keep)
        return block

    @property
    def bot_user_index(self) -> int:
        """The bot's user index (its user_id is str(index + 1)); outside the range of real users."""
        return BOT_USER_OFFSET

    def user_key(self, index: np.ndarray) -> np.ndarray:
        """User ids as integers (index + 1), the form every export uses."""
        return index + 1
