"""The simulated shop: catalogue, users with latent tastes and their ground truth.

A day of behaviour (``ShopModel.day``) is generated in ``sessions``; every day draws from its own
generator seeded by ``SeedSequence([seed, STREAM_DAY, day])``, so days are independent chunks:
memory does not grow with the number of days and the same seed always yields the same events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shelfwise.simulator.blocks import (
    BOT_USER_OFFSET,
    DAY_MS,
    QUERIES_PER_LEAF,
    STREAM_CALIBRATE,
    STREAM_DRIFT,
    STREAM_MISSION,
    STREAM_SHOP,
    DayBlock,
    sigmoid,
    take_rows,
)
from shelfwise.simulator.params import Incident, ShopParams
from shelfwise.simulator.sessions import simulate_day

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
        self._build_complements()
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
    def _build_complements(self) -> None:
        """Each leaf's complement: another leaf of its top category by weight (the case for the
        phone), or of the whole shop where the category has one leaf. Its own seed stream, so the
        catalogue and users do not change with it."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_MISSION]))
        leaf_top = self.catalogue.leaf_top
        n = len(leaf_top)
        out = np.arange(n, dtype=np.int64)
        for leaf in range(n):
            others = np.flatnonzero((leaf_top == leaf_top[leaf]) & (np.arange(n) != leaf))
            if not len(others):
                others = np.flatnonzero(np.arange(n) != leaf)
            if len(others):
                w = self.leaf_weight[others]
                out[leaf] = others[rng.choice(len(others), p=w / w.sum())]
        self.complement_leaf = out

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
        # a session that follows its mission (``sessions.mission_leaves``): a need by category weight,
        # a favourite (the draw above stands for it), or a follow-up's complement
        mission = rng.random(n) < self.params.mission_share
        explore = np.where(mission, rng.random(n) < self.params.mission_explore, explore)
        leaf[explore] = rng.choice(self.n_leaves_base, int(explore.sum()), p=w / w.sum())
        if self.params.mission_complement > 0.0:  # follow-up missions: the complement's category
            aside = np.random.default_rng(np.random.SeedSequence([self.seed, STREAM_CALIBRATE, 1]))
            up = mission & (aside.random(n) < self.params.mission_complement)
            leaf[up] = np.minimum(self.complement_leaf[leaf[up]], self.n_leaves_base - 1)
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
                s = sigmoid(mid + a)
                rate = (s.sum() if weight is None else (s * weight).sum()) / wsum
                lo, hi = (mid, hi) if rate < target else (lo, mid)
            return (lo + hi) / 2

        self.cart_base = solve(min(0.999, p.view_to_cart / max(p.in_stock_share, 1e-3)))
        self.fav_base = solve(p.view_to_fav)
        # Guests who never log in cannot buy: aim higher for everyone else.
        payers = 1.0 - p.anonymous_share * (1.0 - p.login_share)
        self.buy_base = solve(min(0.999, p.cart_to_purchase / max(payers, 1e-3)), sigmoid(self.cart_base + a))

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
        return simulate_day(self, day)

    @property
    def bot_user_index(self) -> int:
        """The bot's user index (its user_id is str(index + 1)); outside the range of real users."""
        return BOT_USER_OFFSET

    def user_key(self, index: np.ndarray) -> np.ndarray:
        """User ids as integers (index + 1), the form every export uses."""
        return index + 1
