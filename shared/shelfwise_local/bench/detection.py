"""`shelfwise bench detection`: detection delay and false alarms of the default alarms, offline.

Synthetic traffic from heterogeneous shoppers in sessions (``Shoppers``: activity, click
propensity and position bias per shopper, parameters from the shop simulator) served by an
item-level click model (``ClickModel``) goes window by window through the real monitoring job,
and every model alarm is replayed with CloudWatch's M-of-N / TreatMissingData rules
(``config.alarm_state``). Scenarios, each measured in 5-minute evaluation windows, for both canary
designs (the interleaved one at ``--interleave-factor`` times the weight's shoppers):

- broken: a challenger at 10% whose ranking is random (and whose scores leave the reference):
  windows from canary start until a challenger alarm is in ALARM (target 1);
- subtle: a challenger with a 20% relative CTR drop: windows from canary start to the quality
  alarm (the deadline is 13: six windows after the first window matures);
- taste drift: the champion alone loses ``--taste-drop`` of its CTR after 3 hours: windows until
  the champion-CTR-drift alarm (30 minutes of that is the click attribution window);
- stable: ``--hours`` of identical champion and challenger: alarm firings (target 0).

- power, false alarms and promotion: a session-level Monte Carlo (``CanaryMC``) of the job's
  statistics (interleaved win odds; split by lists, by shoppers, by shoppers with the pre-canary
  covariate): the share of canaries whose 20% drop alarms within the deadline, per traffic level;
  the false-alarm rate of a ``--hours`` canary without a difference; the staged promotion of a 5%
  worse and of an equal challenger.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.cli.common import plain
from shelfwise.monitoring.comparison import (
    USER_SUM_FIELDS,
    RatioBound,
    compare_preference,
    compare_user_rates,
    guarded_compare,
    guarded_preference,
    guarded_user_compare,
)
from shelfwise.monitoring.config import DEFAULT_ALARMS, MonitoringConfig, alarm_state
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.state import Deployment, MemoryStateStore
from shelfwise.rollout import RolloutPolicy
from shelfwise.serving.interleave import team_draft
from shelfwise_local.bench._common import emit, peak_rss_mb

T0 = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
K = 10
EDGES = np.linspace(0.0, 1.0, 11)
REF_COUNTS = np.diff(6 * EDGES**5 - 5 * EDGES**6)  # Beta(5, 2), what the good models serve
MODEL_ALARMS = [
    a for a in DEFAULT_ALARMS if a.variant in ("challenger", "champion") or a.suffix == "input-drift"
]


class _Manifests:
    def manifest(self, version: str) -> dict:
        return {
            "reference": {
                "score_histogram": {"bins": EDGES.tolist(), "counts": REF_COUNTS.tolist()},
                "category_mix": {f"c{i}": 0.125 for i in range(8)},
            }
        }


class _Source:
    """Windows of traffic generated on demand, kept for the attribution horizon."""

    def __init__(self) -> None:
        self.tables: list[tuple[datetime, pa.Table]] = []

    def add(self, start: datetime, table: pa.Table) -> None:
        self.tables.append((start, table))
        horizon = start - timedelta(hours=2)
        self.tables = [(s, t) for s, t in self.tables if s >= horizon]

    def read(self, start: datetime, end: datetime) -> pa.Table:
        parts = [t for s, t in self.tables if s + timedelta(minutes=10) > start and s < end]
        if not parts:
            return (
                self.tables[-1][1].slice(0, 0)
                if self.tables
                else pa.table({"timestamp": pa.array([], pa.timestamp("ms", tz="UTC"))})
            )
        table = pa.concat_tables(parts)
        ts = table["timestamp"]
        lo = pa.scalar(start, pa.timestamp("ms", tz="UTC"))
        hi = pa.scalar(end, pa.timestamp("ms", tz="UTC"))
        return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


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


def window_traffic(
    model: ClickModel,
    rng: np.random.Generator,
    start: datetime,
    lists: int,
    share: float,
    noises: tuple[float, float],
    versions: dict[str, str],
    broken_scores: bool,
    interleave: bool = False,
    scale: float | None = None,
) -> pa.Table:
    t0 = int(start.timestamp() * 1000)
    ts = t0 + rng.integers(0, 300_000, lists)
    ids, source, clicked, arm, users = model.serve(rng, lists, share, noises, interleave, scale, f"{t0}-")
    rid = np.char.add(f"w{t0}-", np.arange(lists).astype(str))
    props = np.char.add(np.char.add('{"user_hash": "u', users.astype(str)), '"}')
    scores = np.sort(rng.beta(5, 2, size=(lists, K)), axis=1)[:, ::-1]
    if broken_scores:
        bad = source == 1
        scores[bad] = rng.uniform(0.0, 0.3, size=int(bad.sum()))
    variant = np.where(arm == 1, "interleaved" if interleave else "challenger", "champion")
    version = np.where(source == 1, versions["challenger"], versions["champion"])
    li, pos = np.nonzero(clicked)
    n_imp = lists * K
    cats = np.char.add("c", rng.integers(0, 8, lists).astype(str))
    item_text = np.char.add("i", ids.astype(str))
    cols = {
        "event_type": np.concatenate(
            [np.full(n_imp, "impression"), np.full(li.size, "click"), np.full(lists, "view")]
        ),
        "recommendation_id": np.concatenate([np.repeat(rid, K), rid[li], np.full(lists, None)]),
        "item_id": np.concatenate([item_text.ravel(), item_text[li, pos], item_text[:, 0]]),
        "timestamp": np.concatenate(
            [np.repeat(ts, K), ts[li] + rng.integers(2_000, 60_000, li.size), ts - 1000]
        ),
        "position": np.concatenate([np.tile(np.arange(K), lists), pos, np.zeros(lists, dtype=np.int64)]),
        "score": np.concatenate([scores.ravel(), np.full(li.size, np.nan), np.full(lists, np.nan)]),
        "variant": np.concatenate([np.repeat(variant, K), np.full(li.size + lists, None)]),
        "model_version": np.concatenate([version.ravel(), np.full(li.size + lists, None)]),
        "category": np.concatenate([np.full(n_imp + li.size, None), cats]),
        "properties": np.concatenate([np.repeat(props, K), np.full(li.size + lists, None)]),
    }
    return pa.table(
        {
            "event_type": pa.array(cols["event_type"], pa.string()),
            "recommendation_id": pa.array(cols["recommendation_id"], pa.string()),
            "item_id": pa.array(cols["item_id"], pa.string()),
            "timestamp": pa.array(cols["timestamp"].astype("datetime64[ms]")).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "position": pa.array(cols["position"], pa.int32()),
            "score": pa.array(cols["score"], pa.float32(), from_pandas=True),
            "variant": pa.array(cols["variant"], pa.string()),
            "model_version": pa.array(cols["model_version"], pa.string()),
            "price": pa.nulls(len(cols["event_type"]), pa.float64()),
            "quantity": pa.nulls(len(cols["event_type"]), pa.float64()),
            "category": pa.array(cols["category"], pa.string()),
            "properties": pa.array(cols["properties"], pa.string()),
        }
    )


def run(
    model: ClickModel,
    windows: int,
    lists: int,
    challenger_noise: float,
    broken: bool,
    seed: int,
    canary: bool = True,
    champion_scale_after: tuple[int, float] | None = None,
    interleave: bool = False,
    factor: float = 2.0,
) -> list[list[str]]:
    """Alarm suffixes in ALARM after each window's pass (``factor``: interleaved lists per
    challenger list of a split at the same weight).

    ``champion_scale_after = (window, scale)`` changes the shoppers' attractiveness scale from that
    window on (taste drift: the champion's list CTR falls).
    """
    rng = np.random.default_rng(seed)
    source, cfg = _Source(), MonitoringConfig()
    job = MonitoringJob(source, _Manifests(), MemoryStateStore(), cfg)
    deployment = (
        Deployment(champion="v1", challenger="v2", canary_weight=0.1) if canary else Deployment(champion="v1")
    )
    share = (min(1.0, factor * 0.1) if interleave else 0.1) if canary else 0.0
    versions = {"champion": "v1", "challenger": "v2"}
    points: dict[str, list[float | None]] = {a.suffix: [] for a in MODEL_ALARMS}
    firing = []
    noises = (ClickModel.CHAMPION_NOISE, challenger_noise)
    for w in range(windows):
        start = T0 + timedelta(minutes=5 * w)
        scale = None
        if champion_scale_after is not None and w >= champion_scale_after[0]:
            scale = champion_scale_after[1]
        source.add(
            start,
            window_traffic(model, rng, start, lists, share, noises, versions, broken, interleave, scale),
        )
        values = job.fast_pass(start + timedelta(minutes=5, seconds=20), deployment).values()
        now = []
        for a in MODEL_ALARMS:
            key = a.metric + (f"/{a.variant}" if a.variant else "")
            points[a.suffix].append(values.get(key))
            if alarm_state(a, points[a.suffix]) == "ALARM":
                now.append(a.suffix)
        firing.append(now)
    return firing


def quality_bound(
    cfg: MonitoringConfig, interleaved: bool, x_c: int, n_c: int, x_b: int, n_b: int
) -> RatioBound | None:
    """The quality alarm's bound as the job computes it: wins (interleaved; ``n_*`` unused) or list CTRs."""
    if interleaved:
        return guarded_preference(
            x_c,
            x_b,
            alpha=cfg.alpha,
            tau=cfg.interleaved_tau,
            min_decisive=cfg.min_decisive_lists,
            margin=cfg.quality_margin,
        )
    return guarded_compare(
        x_c,
        n_c,
        x_b,
        n_b,
        alpha=cfg.alpha,
        tau=cfg.tau,
        min_lists=cfg.min_lists_for_comparison,
        min_champion_successes=cfg.min_clicks_for_comparison,
        margin=cfg.quality_margin,
    )


class CanaryMC:
    """Session-level Monte Carlo of a canary's decision statistics in the shoppers' world.

    Sessions come as in ``ClickModel.serve`` (shoppers by activity, several lists each); a list's
    outcome is drawn from its shopper's per-list probabilities (``ClickModel.shopper_rates``), so
    a shopper's lists share the shopper's propensity and position bias. Every window gives the
    cumulative counts the job would hold, and the statistics are the job's: the interleaved win
    odds (``guarded_preference``), the split's list-level ratio (``guarded_compare``) and the
    split's shopper-level ratio without and with the pre-canary covariate
    (``guarded_user_compare``; the covariate is each shopper's clicked lists over ``pre_hours``
    of champion traffic before the canary).
    """

    STATS = ("interleaved", "split_lists", "split_users", "split_cuped")

    def __init__(self, model: ClickModel, rates: dict[str, np.ndarray], lists: int, pre_hours: float = 24.0):
        self.model, self.rates, self.lists, self.pre_hours = model, rates, lists, pre_hours
        self.cfg = MonitoringConfig()

    def _pre(self, rng: np.random.Generator) -> np.ndarray:
        """Each shopper's covariate: pre-canary clicked lists minus the pre-period CTR x lists."""
        sh = self.model.shoppers
        sessions = rng.poisson(sh.share * sh.sessions_per_window * self.pre_hours * 12)
        sizes = Shoppers.session_sizes(rng, int(sessions.sum()))
        px = np.bincount(np.repeat(np.arange(sh.n), sessions), weights=sizes, minlength=sh.n)
        py = rng.binomial(px.astype(np.int64), self.rates["champion"])
        rate = py.sum() / max(px.sum(), 1.0)
        return py - rate * px

    def runs(
        self, seed: int, runs: int, windows: int, weights: object, design: str, stop: object = None
    ) -> list[list[dict[str, object]]]:
        """Per run, per window: the cumulative state (see ``_window``). ``weights(w, history)`` is
        the canary weight of window ``w``; ``stop(w, history)`` ends the run early when true."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(runs):
            out.append(self._run(rng, windows, weights, design, stop))
        return out

    def _run(self, rng, windows, weights, design, stop):  # type: ignore[no-untyped-def]
        sh, r = self.model.shoppers, self.rates
        x = self._pre(rng) if design == "split" else np.zeros(sh.n)
        n_u = np.zeros((2, sh.n))
        y_u = np.zeros((2, sh.n))
        sums = np.zeros((2, len(USER_SUM_FIELDS)))
        lists = np.zeros(4, dtype=np.int64)  # x_c, n_c, x_b, n_b (split) / wins_c, 0, wins_b, 0
        history: list[dict[str, object]] = []
        for w in range(windows):
            weight = float(weights(w, history))  # type: ignore[operator]
            users, sizes = sh.sessions(rng, self.lists)
            share = min(1.0, ILV_FACTOR * weight) if design == "interleaved" else weight
            arm = sh.pos[users] < share
            if design == "interleaved":
                p = np.stack([r["challenger_wins"][users], r["champion_wins"][users]], axis=1)
                p = np.concatenate([p, 1 - p.sum(1, keepdims=True)], axis=1)
                draws = rng.multinomial(np.where(arm, sizes, 0), p)
                lists += np.array([draws[:, 0].sum(), 0, draws[:, 1].sum(), 0])
            else:
                p = np.where(arm, r["challenger"][users], r["champion"][users])
                clicks = rng.binomial(sizes, p)
                lists += np.array(
                    [clicks[arm].sum(), sizes[arm].sum(), clicks[~arm].sum(), sizes[~arm].sum()]
                )
                for a, mask in ((0, arm), (1, ~arm)):
                    u = users[mask]
                    if not u.size:
                        continue
                    uu, inv = np.unique(u, return_inverse=True)
                    dn = np.bincount(inv, weights=sizes[mask])
                    dy = np.bincount(inv, weights=clicks[mask])
                    sums[a] -= _contrib(n_u[a, uu], y_u[a, uu], x[uu])
                    n_u[a, uu] += dn
                    y_u[a, uu] += dy
                    sums[a] += _contrib(n_u[a, uu], y_u[a, uu], x[uu])
            history.append({"weight": weight, "counts": lists.copy(), "sums": sums.copy()})
            if stop is not None and stop(w, history):  # type: ignore[operator]
                break
        return history

    def bound(self, state: dict[str, object], stat: str) -> RatioBound | None:
        """The quality alarm's bound (``challenger-quality``) on one window's cumulative state."""
        cfg = self.cfg
        c = state["counts"]
        if stat == "interleaved":
            return quality_bound(cfg, True, int(c[0]), 0, int(c[2]), 0)  # type: ignore[index]
        if stat == "split_lists":
            return quality_bound(cfg, False, int(c[0]), int(c[1]), int(c[2]), int(c[3]))  # type: ignore[index]
        sums = state["sums"]
        if sums[0][0] < 1 or sums[1][0] < 1:  # type: ignore[index]
            return None
        return guarded_user_compare(
            list(sums[0]),  # type: ignore[index]
            list(sums[1]),  # type: ignore[index]
            alpha=cfg.alpha,
            tau=cfg.tau,
            min_lists=cfg.min_lists_for_comparison,
            min_champion_successes=cfg.min_clicks_for_comparison,
            margin=cfg.quality_margin,
            adjust=stat == "split_cuped",
        )

    def first_alarm(self, history: list[dict[str, object]], stat: str) -> int | None:
        """The first window (1-based) at which ``challenger-quality`` is in ALARM on ``stat``."""
        spec = next(a for a in DEFAULT_ALARMS if a.suffix == "challenger-quality")
        points: list[float | None] = []
        for w, state in enumerate(history):
            b = self.bound(state, stat)
            points.append(None if b is None else b.drop_lcb)
            if alarm_state(spec, points) == "ALARM":
                return w + 1
        return None

    def evidence(self, state: dict[str, object], stat: str, promote: bool = False) -> RatioBound | None:
        """The stage's evidence (non-inferiority bound) on one (matured) cumulative state; at the
        promotion's stricter confidence when ``promote``."""
        cfg = self.cfg
        alpha = cfg.promotion_alpha if promote else cfg.noninferiority_alpha
        c = state["counts"]
        if stat == "interleaved":
            if c[0] + c[2] < RolloutPolicy().min_evidence_lists:  # type: ignore[index,operator]
                return None
            return compare_preference(
                int(c[0]),  # type: ignore[index]
                int(c[2]),  # type: ignore[index]
                alpha,
                cfg.interleaved_tau,
                cfg.interleaved_noninferiority_margin,
            )
        sums = state["sums"]
        if min(sums[0][1], sums[1][1]) < RolloutPolicy().min_evidence_lists:  # type: ignore[index]
            return None
        return compare_user_rates(
            list(sums[0]),  # type: ignore[index]
            list(sums[1]),  # type: ignore[index]
            alpha,
            cfg.tau,
            cfg.noninferiority_margin,
        )


ILV_FACTOR = 2.0


def _contrib(n: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The shoppers' contributions to the ``USER_SUM_FIELDS`` (a shopper counts once it has a list)."""
    seen = (n > 0).astype(np.float64)
    xs = x * seen
    return np.array([seen.sum(), n.sum(), y.sum(), n @ n, y @ y, n @ y, xs.sum(), xs @ xs, xs @ y, xs @ n])


def power(mc: CanaryMC, design: str, windows: int, runs: int, seed: int) -> dict[str, list[int | None]]:
    """First alarm window per run, per statistic of ``design``, for a canary at 10%."""
    hist = mc.runs(seed, runs, windows, lambda w, h: 0.1, design)
    stats = ("interleaved",) if design == "interleaved" else ("split_lists", "split_users", "split_cuped")
    return {s: [mc.first_alarm(h, s) for h in hist] for s in stats}


def promotion(
    mc: CanaryMC, design: str, runs: int, seed: int, max_windows: int = 12 * 72
) -> dict[str, object]:
    """Monte Carlo of the staged promotion on evidence (``Rollout.step``'s rule).

    Per run, window by window: the canary serves at the stage's weight; the quality alarm (the
    design's statistic: interleaved win odds, or the split's shopper-level CUPED ratio) ends the
    canary; the evidence is the non-inferiority bound on the windows matured (6 windows after
    their end); a stage advances when it is old enough and the bound clears ``1 - margin`` with
    enough data, and ends the canary when held past ``max_stage_hours``. Returns the share of runs
    promoted past 50%, the share ended, and the median windows to promotion.
    """
    policy = RolloutPolicy()
    stat = "interleaved" if design == "interleaved" else "split_cuped"
    spec = next(a for a in DEFAULT_ALARMS if a.suffix == "challenger-quality")
    stage_windows = math.ceil(policy.min_stage_minutes / 5)
    cfg = mc.cfg
    margin = cfg.interleaved_noninferiority_margin if design == "interleaved" else cfg.noninferiority_margin

    class Walk:
        def __init__(self) -> None:
            self.stage, self.age, self.points, self.result = 0, 0, [], None  # type: ignore[var-annotated]

        def weight(self, w: int, h: list[dict[str, object]]) -> float:
            return policy.stages[self.stage]

        def stop(self, w: int, h: list[dict[str, object]]) -> bool:
            b = mc.bound(h[-1], stat)
            self.points.append(None if b is None else b.drop_lcb)
            if alarm_state(spec, self.points) == "ALARM":
                self.result = "ended"
                return True
            self.age += 1
            if self.age * 5 >= 60 * policy.max_stage_hours:
                self.result = "ended"
                return True
            matured = w + 1 - 6
            if self.age < stage_windows or matured < policy.min_mature_windows:
                return False
            nxt = policy.next_stage(policy.stages[self.stage])
            ev = mc.evidence(h[matured - 1], stat, promote=nxt is None or nxt > policy.strict_above)
            if ev is None or ev.lower < 1 - margin:
                return False
            if policy.stages[self.stage] >= 0.5:
                self.result = w + 1
                return True
            self.stage, self.age = self.stage + 1, 0
            return False

    rng_seed = seed
    past = ended = 0
    times = []
    for i in range(runs):
        walk = Walk()
        mc.runs(rng_seed + i, 1, max_windows, walk.weight, design, walk.stop)
        if walk.result == "ended":
            ended += 1
        elif walk.result is not None:
            past += 1
            times.append(int(walk.result))
    return {
        "promoted_past_half": round(past / runs, 3),
        "ended": round(ended / runs, 3),
        "median_windows_to_promotion": float(np.median(times)) if times else None,
    }


def _share(hits: list[int | None], within: int | None = None) -> float:
    return round(sum(1 for h in hits if h is not None and (within is None or h <= within)) / len(hits), 3)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench detection", description=plain(__doc__))
    p.add_argument("--lists-per-window", type=int, default=1000, help="served lists (requests) per 5 minutes")
    p.add_argument("--ctr", type=float, default=0.15, help="champion list CTR")
    p.add_argument("--hours", type=float, default=48.0, help="length of the stable run")
    p.add_argument(
        "--taste-drop", type=float, default=0.2, help="relative CTR the champion loses to taste drift"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument(
        "--power-lists",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[500, 2000],
        help="other lists per window for the power table (comma-separated)",
    )
    p.add_argument("--power-runs", type=int, default=400, help="Monte Carlo canaries per traffic level")
    p.add_argument("--null-runs", type=int, default=400, help="Monte Carlo canaries of an equal challenger")
    p.add_argument("--promotion-runs", type=int, default=100, help="Monte Carlo canaries of the promotion")
    p.add_argument(
        "--interleave-factor",
        type=float,
        default=ILV_FACTOR,
        help="interleaved lists per challenger list of a split at the same weight (2: the same challenger exposure)",
    )
    p.add_argument("--skip-stable", action="store_true", help="skip the 48-hour runs through the job")
    args = p.parse_args(argv)
    t = time.perf_counter()
    n = args.lists_per_window
    globals()["ILV_FACTOR"] = args.interleave_factor
    model = ClickModel(args.ctr, args.seed, n)
    subtle_noise = model.noise_for(0.2)
    sh = model.shoppers
    out: dict[str, object] = {
        "bench": "detection",
        "lists_per_window": n,
        "champion_list_ctr": args.ctr,
        "interleave_factor": args.interleave_factor,
        "click_model": {
            "scale": round(model.scale, 4),
            "noise_20pct_worse": round(subtle_noise, 3),
            "shoppers": sh.n,
        },
    }
    deadline = 7 + 6  # clicks mature 30 min after a window ends: 6 windows after the first maturity
    for design in ("interleaved", "split"):
        ilv = design == "interleaved"
        tw = time.perf_counter()
        broken = run(model, 4, n, math.inf, True, args.seed, interleave=ilv, factor=args.interleave_factor)
        broken_at = next(
            (i + 1 for i, f in enumerate(broken) if any(s.startswith("challenger") for s in f)), None
        )
        subtle = run(
            model,
            7 + 12,
            n,
            subtle_noise,
            False,
            args.seed + 1,
            interleave=ilv,
            factor=args.interleave_factor,
        )
        # Windows from canary start (the deadline is 13: six windows after the first maturity).
        subtle_at = next((i + 1 for i, f in enumerate(subtle) if "challenger-quality" in f), None)
        power_table: dict[int, dict[str, float]] = {}
        for lists in sorted({*args.power_lists, n}):
            m = model if lists == n else ClickModel(args.ctr, args.seed, lists)
            mc = CanaryMC(m, m.shopper_rates(0.2), lists)
            hits = power(mc, design, deadline, args.power_runs, args.seed + 10)
            power_table[lists] = {s: _share(h) for s, h in hits.items()}
        rates = model.shopper_rates(0.0)
        even = (rates["challenger_wins"] + rates["champion_wins"]) / 2
        null_rates = {
            **rates,
            "challenger": rates["champion"],
            "challenger_wins": even,
            "champion_wins": even,
        }
        null_mc = CanaryMC(model, null_rates, n)
        null = power(null_mc, design, int(args.hours * 12), args.null_runs, args.seed + 20)
        worse5 = promotion(
            CanaryMC(model, model.shopper_rates(0.05), n), design, args.promotion_runs, args.seed + 30
        )
        equal = promotion(null_mc, design, args.promotion_runs // 2, args.seed + 40)
        better5 = promotion(
            CanaryMC(model, model.shopper_rates(-0.05), n), design, args.promotion_runs // 2, args.seed + 50
        )
        out[design] = {
            "broken_windows_to_alarm": broken_at,
            "subtle_windows_to_alarm": subtle_at,
            "subtle_power_by_lists": power_table,
            "subtle_power": power_table[n],
            "quality_false_alarm_rate_mc": {s: _share(h) for s, h in null.items()},
            "null_runs": args.null_runs,
            "promotion_5pct_worse": worse5,
            "promotion_equal": equal,
            "promotion_5pct_better": better5,
        }
        if not args.skip_stable:
            stable_windows = int(args.hours * 12)
            stable = run(
                model,
                stable_windows,
                n,
                ClickModel.CHAMPION_NOISE,
                False,
                args.seed + 2,
                interleave=ilv,
                factor=args.interleave_factor,
            )
            out[design]["stable_windows"] = stable_windows  # type: ignore[index]
            out[design]["stable_false_alarms"] = sum(  # type: ignore[index]
                1 for i, f in enumerate(stable) for s in f if i == 0 or s not in stable[i - 1]
            )
        out[design]["wall_s"] = round(time.perf_counter() - tw, 1)  # type: ignore[index]
        print(f"detection: {design}: {json.dumps(out[design])}", file=sys.stderr)
    # Taste drift: the champion loses --taste-drop of its CTR after 3 hours of normal traffic.
    drift_at = 36
    drifted = model._solve(
        lambda sc: model.list_ctr(ClickModel.CHAMPION_NOISE, sc), args.ctr * (1 - args.taste_drop), 0.01, 3.0
    )
    taste = run(
        model,
        drift_at + 36,
        n,
        ClickModel.CHAMPION_NOISE,
        False,
        args.seed + 3,
        canary=False,
        champion_scale_after=(drift_at, drifted),
    )
    taste_at = next(
        (i - drift_at + 1 for i, f in enumerate(taste) if i >= drift_at and "champion-ctr-drift" in f), None
    )
    out.update(
        taste_drop=args.taste_drop,
        taste_drift_windows_to_alarm=taste_at,
        taste_drift_minutes_to_alarm=None if taste_at is None else taste_at * 5,
        taste_false_alarms_before=sum(1 for f in taste[:drift_at] if f),
        wall_s=round(time.perf_counter() - t, 1),
        peak_rss_mb=peak_rss_mb(),
    )
    emit(out)
    return 0
