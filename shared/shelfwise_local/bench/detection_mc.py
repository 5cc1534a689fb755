"""The session-level Monte Carlo of ``bench detection`` (``CanaryMC``): the job's canary statistics on
lists drawn from the shoppers' per-list rates, the quality alarm's power and false alarms
(``power``), and the staged promotion on evidence (``promotion``)."""

from __future__ import annotations

import math

import numpy as np

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
from shelfwise.rollout import RolloutPolicy
from shelfwise_local.bench.detection_world import ClickModel, Shoppers


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
