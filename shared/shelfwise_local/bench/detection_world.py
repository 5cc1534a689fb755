"""The synthetic world of ``bench detection``: heterogeneous shoppers in sessions (``Shoppers``) and
the item-level click model that serves them lists of ``K`` items (``ClickModel``)."""

from __future__ import annotations

import math

import numpy as np

from shelfwise.serving.interleave import team_draft

K = 10

# The shoppers. Where each number comes from (docs/monitoring.md, section 6):
# - activity: log-normal with sigma 1.1, sessions per shopper and day 0.22, lists per session
#   log-normal (mu 1.35, sigma 0.95; a list per page view): the shop simulator's `ShopParams`;
# - click propensity: a multiplier per shopper, log-normal with sigma 0.3 (mean 1): measured on the
#   simulator, where a good model's top 10 gives shoppers mean click propensities with a standard
#   deviation of the log of 0.29;
# - position bias: examination (position + 1)^-eta, eta per shopper log-normal around 0.55 (the
#   simulator's 1 / log2(p + 2) fitted on ten positions) with sigma 0.35, a factor of two either
#   way at 95%: the range of severities unbiased learning-to-rank studies (Joachims et al. 2017).
ACTIVITY_SIGMA = 1.1
SESSIONS_PER_DAY = 0.22
LISTS_MU, LISTS_SIGMA = 1.35, 0.95
PROPENSITY_SIGMA = 0.3
EXAM_MEDIAN, EXAM_SIGMA = 0.55, 0.35
MEAN_LISTS_PER_SESSION = math.exp(LISTS_MU + LISTS_SIGMA**2 / 2)
WINDOWS_PER_DAY = 288


class Shoppers:
    """A shop's shoppers: activity, click propensity, position bias and a sticky routing position.

    Sized so that their sessions make ``lists_per_window`` lists per 5 minutes; the routing
    position is what the hash of the shopper's id is to serving (the challenger serves the
    shoppers below the canary weight).
    """

    def __init__(self, lists_per_window: int, rng: np.random.Generator) -> None:
        self.sessions_per_window = lists_per_window / MEAN_LISTS_PER_SESSION
        n = max(100, round(self.sessions_per_window * WINDOWS_PER_DAY / SESSIONS_PER_DAY))
        activity = rng.lognormal(0.0, ACTIVITY_SIGMA, n)
        self.share = activity / activity.sum()
        self.cdf = np.cumsum(self.share)
        self.m = rng.lognormal(-(PROPENSITY_SIGMA**2) / 2, PROPENSITY_SIGMA, n)
        self.eta = EXAM_MEDIAN * rng.lognormal(0.0, EXAM_SIGMA, n)
        self.pos = rng.uniform(size=n)
        self.n = n

    def draw(self, rng: np.random.Generator, sessions: int) -> np.ndarray:
        """Shoppers of ``sessions`` sessions (a shopper's chance is their share of activity)."""
        return np.minimum(np.searchsorted(self.cdf, rng.uniform(size=sessions)), self.n - 1)

    @staticmethod
    def session_sizes(rng: np.random.Generator, sessions: int) -> np.ndarray:
        return np.maximum(1, np.rint(rng.lognormal(LISTS_MU, LISTS_SIGMA, sessions))).astype(np.int64)

    def sessions(self, rng: np.random.Generator, lists: int) -> tuple[np.ndarray, np.ndarray]:
        """(shopper, lists) of the sessions that make ``lists`` lists (the last one cut to fit)."""
        users, sizes = [], []
        total = 0
        while total < lists:
            s = self.session_sizes(rng, max(8, int(1.2 * (lists - total) / MEAN_LISTS_PER_SESSION)))
            users.append(self.draw(rng, s.size))
            sizes.append(s)
            total += int(s.sum())
        u, z = np.concatenate(users), np.concatenate(sizes)
        cut = int(np.searchsorted(np.cumsum(z), lists))
        u, z = u[: cut + 1], z[: cut + 1].copy()
        z[-1] -= int(z.sum()) - lists
        return u, z

    def list_users(self, rng: np.random.Generator, lists: int) -> np.ndarray:
        """The shopper of each of ``lists`` lists, sessions kept together."""
        u, z = self.sessions(rng, lists)
        return np.repeat(u, z)


class ClickModel:
    """Where the lists and their clicks come from: item-level, so both canary designs can be served.

    Each request has a pool of ``POOL`` candidate items with attractiveness ``a`` (Beta(0.25, 3)
    times a scale); a model ranks the pool by ``log a`` plus Gaussian noise of its own size (the
    champion's 0.5; a worse model's more; a broken model's ranking is random) and serves its top
    K. The shopper (``Shoppers``: sessions of several lists, heterogeneous click propensity ``m``
    and position bias ``eta``) clicks each shown item independently with probability
    ``min(1, m x a x (pos + 1)^-eta)``. The scale is set so the champion's list CTR is ``ctr``; a
    challenger's noise so its list CTR is ``(1 - drop)`` times that. The same lists, team-drafted,
    give the interleaved canary, so both designs are measured on one world, and a 20% worse model
    means the same thing for both.
    """

    POOL = 40
    CHAMPION_NOISE = 0.5

    def __init__(self, ctr: float, seed: int = 0, lists_per_window: int = 1000) -> None:
        self.rng = np.random.default_rng(seed)
        self.shoppers = Shoppers(lists_per_window, np.random.default_rng(seed + 1000))
        self.positions = np.arange(K, dtype=np.float64) + 1.0
        self.scale = self._solve(lambda s: self.list_ctr(self.CHAMPION_NOISE, s), ctr, 0.01, 3.0)

    def _solve(self, f: object, target: float, lo: float, hi: float, decreasing: bool = False) -> float:
        for _ in range(18):
            mid = 0.5 * (lo + hi)
            above = f(mid) > target  # type: ignore[operator]
            if above != decreasing:
                hi = mid
            else:
                lo = mid
        return 0.5 * (lo + hi)

    def noise_for(self, drop: float) -> float:
        """The ranking noise of a challenger whose list CTR is ``(1 - drop)`` times the champion's
        (a negative drop: a better challenger, less noise; at most about +6.8%, no noise at all)."""
        if drop == 0:
            return self.CHAMPION_NOISE
        base = self.list_ctr(self.CHAMPION_NOISE, self.scale)
        lo, hi = (self.CHAMPION_NOISE, 50.0) if drop > 0 else (0.0, self.CHAMPION_NOISE)
        return self._solve(lambda s: self.list_ctr(s, self.scale), base * (1 - drop), lo, hi, True)

    def _pool(self, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
        return rng.beta(0.25, 3.0, size=(n, self.POOL)) * scale

    @staticmethod
    def _rank(a: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
        if math.isinf(noise):
            s = rng.uniform(size=a.shape)
        else:
            s = np.log(a + 1e-12) + noise * rng.standard_normal(a.shape)
        return np.argsort(-s, axis=1)[:, :K]

    def click_probability(self, shown: np.ndarray, users: np.ndarray) -> np.ndarray:
        """P(click) of each shown item (attractiveness ``shown``, (n, K)) for the lists' shoppers."""
        sh = self.shoppers
        exam = self.positions[None, :] ** -sh.eta[users][:, None]
        return np.minimum(1.0, sh.m[users][:, None] * shown * exam)

    def list_ctr(self, noise: float, scale: float, n: int = 40_000) -> float:
        rng = np.random.default_rng(12345)
        a = self._pool(n, scale, rng)
        users = self.shoppers.draw(rng, n)
        p = self.click_probability(np.take_along_axis(a, self._rank(a, noise, rng), 1), users)
        return float((1.0 - np.prod(1.0 - p, axis=1)).mean())

    def serve(
        self,
        rng: np.random.Generator,
        n: int,
        share: float,
        noises: tuple[float, float],
        interleave: bool,
        scale: float | None = None,
        tag: str = "",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` lists: (item ids (n, K), source 0 champion / 1 challenger (n, K), clicked (n, K),
        list arm: 0 champion, 1 challenger (split) or interleaved, shopper). ``share``: the share
        of shoppers routed to the canary's arm (by their routing position)."""
        users = self.shoppers.list_users(rng, n)
        a = self._pool(n, self.scale if scale is None else scale, rng)
        ranked = [self._rank(a, noises[0], rng), self._rank(a, noises[1], rng)]
        arm = (self.shoppers.pos[users] < share).astype(np.int64)
        items = np.where(arm[:, None] == 1, ranked[1], ranked[0])
        source = np.repeat(arm[:, None], K, axis=1)
        if interleave:
            for i in np.flatnonzero(arm):
                m = team_draft([str(x) for x in ranked[0][i]], [str(x) for x in ranked[1][i]], K, f"{tag}{i}")
                items[i] = [ranked[t][i][r] for t, r in zip(m.teams, m.ranks, strict=True)]
                source[i] = m.teams
        p = self.click_probability(np.take_along_axis(a, items, 1), users)
        clicked = rng.uniform(size=p.shape) < p
        ids = items + self.POOL * rng.integers(0, 5000 // self.POOL, size=(n, 1))
        return ids, source, clicked, arm, users

    def shopper_rates(self, drop: float, n: int = 20_000) -> dict[str, np.ndarray]:
        """Per shopper, the per-list outcome probabilities a canary's Monte Carlo draws from:
        ``champion`` / ``challenger`` list CTRs (split) and the interleaved lists' win shares
        ``challenger_wins`` / ``champion_wins``, on a grid of (propensity, position bias) cells
        (deciles x sextiles of the population) evaluated on ``n`` pools."""
        rng = np.random.default_rng(777)
        noises = (self.CHAMPION_NOISE, self.noise_for(drop))
        a = self._pool(n, self.scale, rng)
        ranked = [self._rank(a, noises[0], rng), self._rank(a, noises[1], rng)]
        items, teams = np.empty_like(ranked[0]), np.empty_like(ranked[0])
        for i in range(n):
            m = team_draft([str(x) for x in ranked[0][i]], [str(x) for x in ranked[1][i]], K, f"g{i}")
            items[i] = [ranked[t][i][r] for t, r in zip(m.teams, m.ranks, strict=True)]
            teams[i] = m.teams
        shown = [np.take_along_axis(a, r, 1) for r in (*ranked, items)]
        sh = self.shoppers
        m_edges = np.quantile(sh.m, np.linspace(0, 1, 11))
        e_edges = np.quantile(sh.eta, np.linspace(0, 1, 7))
        m_cell = np.clip(np.searchsorted(m_edges, sh.m) - 1, 0, 9)
        e_cell = np.clip(np.searchsorted(e_edges, sh.eta) - 1, 0, 5)
        grid = {k: np.zeros((10, 6)) for k in ("champion", "challenger", "challenger_wins", "champion_wins")}
        for i in range(10):
            for j in range(6):
                in_cell = (m_cell == i) & (e_cell == j)
                if not in_cell.any():
                    continue
                m = float(np.median(sh.m[in_cell]))
                exam = self.positions ** -float(np.median(sh.eta[in_cell]))
                p = [np.minimum(1.0, m * s * exam) for s in shown]
                grid["champion"][i, j] = float((1 - np.prod(1 - p[0], axis=1)).mean())
                grid["challenger"][i, j] = float((1 - np.prod(1 - p[1], axis=1)).mean())
                # Distribution of (challenger clicks - champion clicks) per interleaved list.
                dist = np.zeros((n, 2 * K + 1))
                dist[:, K] = 1.0
                for pos in range(K):
                    q = p[2][:, pos][:, None]
                    step = np.where(teams[:, pos] == 1, 1, -1)[:, None]
                    moved = np.where(step == 1, np.roll(dist, 1, axis=1), np.roll(dist, -1, axis=1))
                    dist = dist * (1 - q) + moved * q
                grid["challenger_wins"][i, j] = float(dist[:, K + 1 :].sum(axis=1).mean())
                grid["champion_wins"][i, j] = float(dist[:, :K].sum(axis=1).mean())
        return {k: v[m_cell, e_cell] for k, v in grid.items()}
