"""`shelfwise bench detection`: detection delay and false alarms of the default alarms, offline.

Synthetic traffic (lists of K items, one Bernoulli click per list with the variant's list CTR,
click delays of 2-60 s like the simulator's) goes window by window through the real monitoring
job, and every model alarm is replayed with CloudWatch's M-of-N / TreatMissingData rules
(``config.alarm_state``). Three scenarios, each measured in 5-minute evaluation windows:

- broken: a challenger at 10% whose CTR collapses (and whose scores leave the reference):
  windows from canary start until a challenger alarm is in ALARM (target <= 2);
- subtle: a challenger with a 20% relative CTR drop: windows after its first window matures
  until the quality alarm fires (target <= 6);
- taste drift: the champion alone loses ``--taste-drop`` of its CTR after 3 hours: windows until
  the champion-CTR-drift alarm (30 minutes of that is the click attribution window);
- stable: ``--hours`` of identical champion and challenger: alarm firings (target 0).

- power: a counts-level Monte Carlo of the quality alarm (``power``): the share of canaries whose
  20% drop alarms within 6 windows after maturity, per traffic level, and the false-alarm rate of
  a ``--hours`` canary without a difference.

The point is the sizing: how many requests per window the defaults need. The demo measures the
same targets on the shop simulator.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.cli.common import plain
from shelfwise.monitoring.comparison import (
    RatioBound,
    compare_preference,
    compare_rates,
    guarded_compare,
    guarded_preference,
)
from shelfwise.monitoring.config import DEFAULT_ALARMS, MonitoringConfig, alarm_state
from shelfwise.monitoring.job import Deployment, MemoryStateStore, MonitoringJob
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
        table = pa.concat_tables(parts)
        ts = table["timestamp"]
        lo = pa.scalar(start, pa.timestamp("ms", tz="UTC"))
        hi = pa.scalar(end, pa.timestamp("ms", tz="UTC"))
        return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


class ClickModel:
    """Where the lists and their clicks come from: item-level, so both canary designs can be served.

    Each request has a pool of ``POOL`` candidate items with attractiveness ``a`` (Beta(0.25, 3)
    times a scale); a model ranks the pool by ``log a`` plus Gaussian noise of its own size (the
    champion's 0.5; a worse model's more; a broken model's ranking is random) and serves its top
    K. Shoppers click each shown item independently with probability ``a x examination(position)``
    (a position-based click model, examination ``1 / (pos + 1)^0.7``). The scale is set so the
    champion's list CTR is ``ctr``; a challenger's noise so its list CTR is ``(1 - drop)`` times
    that. The same lists, team-drafted, give the interleaved canary, so both designs are measured
    on one world, and a 20% worse model means the same thing for both.
    """

    POOL = 40
    CHAMPION_NOISE = 0.5

    def __init__(self, ctr: float, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.exam = 1.0 / (np.arange(K) + 1.0) ** 0.7
        self.scale = self._solve(lambda s: self.list_ctr(self.CHAMPION_NOISE, s), ctr, 0.01, 1.0)

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
        """The ranking noise of a challenger whose list CTR is ``(1 - drop)`` times the champion's."""
        if drop <= 0:
            return self.CHAMPION_NOISE
        base = self.list_ctr(self.CHAMPION_NOISE, self.scale)
        return self._solve(lambda s: self.list_ctr(s, self.scale), base * (1 - drop), 0.5, 50.0, True)

    def _pool(self, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
        return rng.beta(0.25, 3.0, size=(n, self.POOL)) * scale

    @staticmethod
    def _rank(a: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
        if math.isinf(noise):
            s = rng.uniform(size=a.shape)
        else:
            s = np.log(a + 1e-12) + noise * rng.standard_normal(a.shape)
        return np.argsort(-s, axis=1)[:, :K]

    def list_ctr(self, noise: float, scale: float, n: int = 40_000) -> float:
        rng = np.random.default_rng(12345)
        a = self._pool(n, scale, rng)
        p = np.take_along_axis(a, self._rank(a, noise, rng), 1) * self.exam
        return float((rng.uniform(size=p.shape) < p).any(axis=1).mean())

    def serve(
        self,
        rng: np.random.Generator,
        n: int,
        share: float,
        noises: tuple[float, float],
        interleave: bool,
        scale: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` lists: (item ids (n, K), source 0 champion / 1 challenger (n, K), clicked (n, K),
        list arm: 0 champion, 1 challenger (split) or interleaved)."""
        a = self._pool(n, self.scale if scale is None else scale, rng)
        ranked = [self._rank(a, noises[0], rng), self._rank(a, noises[1], rng)]
        arm = (rng.uniform(size=n) < share).astype(np.int64)
        items = np.where(arm[:, None] == 1, ranked[1], ranked[0])
        source = np.repeat(arm[:, None], K, axis=1)
        if interleave:
            for i in np.flatnonzero(arm):
                m = team_draft([str(x) for x in ranked[0][i]], [str(x) for x in ranked[1][i]], K, f"{i}")
                items[i] = [ranked[t][i][r] for t, r in zip(m.teams, m.ranks, strict=True)]
                source[i] = m.teams
        p = np.take_along_axis(a, items, 1) * self.exam
        clicked = rng.uniform(size=p.shape) < p
        ids = items + self.POOL * rng.integers(0, 5000 // self.POOL, size=(n, 1))
        return ids, source, clicked, arm

    def outcome_rates(self, drop: float, interleave: bool, n: int = 60_000) -> dict[str, float]:
        """Per-list outcome probabilities (for the counts-level Monte Carlo): split list CTRs, or
        the interleaved lists' win shares."""
        rng = np.random.default_rng(777)
        noises = (self.CHAMPION_NOISE, self.noise_for(drop))
        _, source, clicked, _arm = self.serve(rng, n, 1.0, noises, interleave)
        if not interleave:
            _, _, clicked_b, _ = self.serve(rng, n, 0.0, noises, False)
            return {"champion": float(clicked_b.any(1).mean()), "challenger": float(clicked.any(1).mean())}
        c = (clicked & (source == 1)).sum(1)
        b = (clicked & (source == 0)).sum(1)
        return {"challenger_wins": float((c > b).mean()), "champion_wins": float((b > c).mean())}


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
    ids, source, clicked, arm = model.serve(rng, lists, share, noises, interleave, scale)
    rid = np.char.add(f"w{t0}-", np.arange(lists).astype(str))
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
) -> list[list[str]]:
    """Alarm suffixes in ALARM after each window's pass.

    ``champion_scale_after = (window, scale)`` changes the shoppers' attractiveness scale from that
    window on (taste drift: the champion's list CTR falls).
    """
    rng = np.random.default_rng(seed)
    source, cfg = _Source(), MonitoringConfig()
    job = MonitoringJob(source, _Manifests(), MemoryStateStore(), cfg)
    deployment = (
        Deployment(champion="v1", challenger="v2", canary_weight=0.1) if canary else Deployment(champion="v1")
    )
    share = 0.1 if canary else 0.0
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


def power(
    lists: int,
    rates: dict[str, float],
    windows: int,
    runs: int,
    seed: int,
    datapoints: tuple[int, int] | None = None,
    share: float = 0.1,
) -> list[int | None]:
    """Counts-level Monte Carlo of the quality alarm: per run, the first window after canary start
    at which ``challenger-quality`` is in ALARM (None: not within ``windows``).

    ``rates`` are per-list outcome probabilities (``ClickModel.outcome_rates``): split list CTRs
    (``champion``, ``challenger``) or interleaved win shares (``challenger_wins``,
    ``champion_wins``). It mirrors what the job computes when clicks come within a minute (the
    bench's and the simulator's delays): cumulative counts since the canary started, the same
    guard, bound and M-of-N rule (``datapoints`` overrides the alarm's M of N).
    """
    spec = next(a for a in DEFAULT_ALARMS if a.suffix == "challenger-quality")
    if datapoints is not None:
        spec = replace(spec, datapoints_to_alarm=datapoints[0], evaluation_periods=datapoints[1])
    cfg = MonitoringConfig()
    rng = np.random.default_rng(seed)
    interleaved = "challenger_wins" in rates
    out: list[int | None] = []
    for _ in range(runs):
        n_c = rng.binomial(lists, share, windows)
        if interleaved:
            p = [rates["challenger_wins"], rates["champion_wins"]]
            draws = np.array([rng.multinomial(n, [*p, 1 - sum(p)]) for n in n_c])
            x_c, x_b = np.cumsum(draws[:, 0]), np.cumsum(draws[:, 1])
        else:
            n_b = lists - n_c
            x_c = np.cumsum(rng.binomial(n_c, rates["challenger"]))
            x_b = np.cumsum(rng.binomial(n_b, rates["champion"]))
            cn_c, cn_b = np.cumsum(n_c), np.cumsum(n_b)
        points: list[float | None] = []
        hit = None
        for w in range(windows):
            b = quality_bound(
                cfg,
                interleaved,
                int(x_c[w]),
                0 if interleaved else int(cn_c[w]),
                int(x_b[w]),
                0 if interleaved else int(cn_b[w]),
            )
            points.append(None if b is None else b.drop_lcb)
            if alarm_state(spec, points) == "ALARM":
                hit = w + 1
                break
        out.append(hit)
    return out


def promotion(
    lists: int,
    rates: dict[str, float],
    runs: int,
    seed: int,
    policy: RolloutPolicy | None = None,
    max_windows: int = 12 * 72,
) -> dict[str, float]:
    """Counts-level Monte Carlo of the staged promotion on evidence (``Rollout.step``'s rule).

    Per run, window by window: the canary serves ``lists`` at the stage's weight; the quality
    alarm (cumulative, all windows) ends the canary; the evidence is the non-inferiority bound on
    the windows matured (6 windows after their end) since the canary started; a stage advances when
    it is old enough and the bound clears ``1 - margin`` with enough data, and ends the canary when
    held past ``max_stage_hours``. Returns the share of runs that got past 50% (promoted), that were
    ended (alarm or held too long), and the median windows to promotion.
    """
    policy = policy or RolloutPolicy()
    cfg = MonitoringConfig()
    rng = np.random.default_rng(seed)
    interleaved = "challenger_wins" in rates
    quality = next(a for a in DEFAULT_ALARMS if a.suffix == "challenger-quality")
    stage_windows = math.ceil(policy.min_stage_minutes / 5)
    past_half = ended = 0
    times = []
    for _ in range(runs):
        stage, age = 0, 0
        # Cumulative (x_c, n_c, x_b, n_b) after each window.
        cum: list[np.ndarray] = [np.zeros(4, dtype=np.int64)]
        points: list[float | None] = []
        for w in range(max_windows):
            weight = policy.stages[stage]
            n_c = int(rng.binomial(lists, weight))
            if interleaved:
                p = [rates["challenger_wins"], rates["champion_wins"]]
                x_c, x_b, _ = rng.multinomial(n_c, [*p, 1 - sum(p)])
                step = np.array([x_c, 0, x_b, 0], dtype=np.int64)
            else:
                n_b = lists - n_c
                step = np.array(
                    [rng.binomial(n_c, rates["challenger"]), n_c, rng.binomial(n_b, rates["champion"]), n_b],
                    dtype=np.int64,
                )
            cum.append(cum[-1] + step)
            tot = cum[-1]
            b = quality_bound(cfg, interleaved, int(tot[0]), int(tot[1]), int(tot[2]), int(tot[3]))
            points.append(None if b is None else b.drop_lcb)
            if alarm_state(quality, points) == "ALARM":
                ended += 1
                break
            age += 1
            matured = max(0, w + 1 - 6)  # a window's clicks mature 6 windows after it ends
            if age * 5 >= 60 * policy.max_stage_hours:
                ended += 1
                break
            if age < stage_windows or matured < policy.min_mature_windows:
                continue
            m = cum[matured]
            margin = cfg.interleaved_noninferiority_margin if interleaved else cfg.noninferiority_margin
            if interleaved:
                if m[0] + m[2] < policy.min_evidence_lists:
                    continue
                ev = compare_preference(
                    int(m[0]), int(m[2]), cfg.noninferiority_alpha, cfg.interleaved_tau, margin
                )
            else:
                if min(m[1], m[3]) < policy.min_evidence_lists:
                    continue
                ev = compare_rates(
                    int(m[0]),
                    int(m[1]),
                    int(m[2]),
                    int(m[3]),
                    cfg.noninferiority_alpha,
                    cfg.tau,
                    cfg.noninferiority_margin,
                )
            if ev.lower < 1 - margin:
                continue
            if policy.stages[stage] >= 0.5:
                past_half += 1
                times.append(w + 1)
                break
            stage, age = stage + 1, 0
    return {
        "promoted_past_half": round(past_half / runs, 3),
        "ended": round(ended / runs, 3),
        "median_windows_to_promotion": float(np.median(times)) if times else None,  # type: ignore[dict-item]
    }


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
        default=[500, 1000, 2000, 4000, 8000],
        help="lists per window for the power table (comma-separated)",
    )
    p.add_argument("--power-runs", type=int, default=400, help="Monte Carlo canaries per traffic level")
    p.add_argument("--promotion-runs", type=int, default=100, help="Monte Carlo canaries of the promotion")
    args = p.parse_args(argv)
    t = time.perf_counter()
    n = args.lists_per_window
    model = ClickModel(args.ctr, args.seed)
    subtle_noise = model.noise_for(0.2)
    out: dict[str, object] = {
        "bench": "detection",
        "lists_per_window": n,
        "champion_list_ctr": args.ctr,
        "click_model": {"scale": round(model.scale, 4), "noise_20pct_worse": round(subtle_noise, 3)},
    }
    for design in ("interleaved", "split"):
        ilv = design == "interleaved"
        broken = run(model, 4, n, math.inf, True, args.seed, interleave=ilv)
        broken_at = next(
            (i + 1 for i, f in enumerate(broken) if any(s.startswith("challenger") for s in f)), None
        )
        # Clicks mature 30 min after a window ends: the first window matures at the end of window 7.
        subtle = run(model, 7 + 12, n, subtle_noise, False, args.seed + 1, interleave=ilv)
        subtle_at = next((i + 1 - 7 for i, f in enumerate(subtle) if "challenger-quality" in f), None)
        rates = model.outcome_rates(0.2, ilv)
        power_table = {}
        for lists in sorted({*args.power_lists, n}):
            hits = power(lists, rates, 7 + 6, args.power_runs, args.seed + 10)
            power_table[lists] = round(sum(1 for h in hits if h is not None) / len(hits), 3)
        null_rates = model.outcome_rates(0.0, ilv)
        if ilv:  # equal models: the credit is a fair coin (team draft), whatever the sample says
            even = (null_rates["challenger_wins"] + null_rates["champion_wins"]) / 2
            null_rates = {"challenger_wins": even, "champion_wins": even}
        else:
            null_rates = {"champion": null_rates["champion"], "challenger": null_rates["champion"]}
        null = power(n, null_rates, int(args.hours * 12), args.power_runs // 4, args.seed + 20)
        null_rate = round(sum(1 for h in null if h is not None) / len(null), 3)
        worse5 = promotion(n, model.outcome_rates(0.05, ilv), args.promotion_runs, args.seed + 30)
        equal = promotion(n, null_rates, args.promotion_runs // 2, args.seed + 40)
        stable_windows = int(args.hours * 12)
        stable = run(
            model, stable_windows, n, ClickModel.CHAMPION_NOISE, False, args.seed + 2, interleave=ilv
        )
        transitions = sum(1 for i, f in enumerate(stable) for s in f if i == 0 or s not in stable[i - 1])
        out[design] = {
            "broken_windows_to_alarm": broken_at,
            "subtle_windows_after_maturity": subtle_at,
            "subtle_outcome_rates": {k: round(v, 4) for k, v in rates.items()},
            "subtle_power_by_lists": power_table,
            "subtle_power": power_table[n],
            "quality_false_alarm_rate_mc": null_rate,
            "stable_windows": stable_windows,
            "stable_false_alarms": transitions,
            "promotion_5pct_worse": worse5,
            "promotion_equal": equal,
        }
        print(f"detection: {design}: {json.dumps(out[design])}", file=sys.stderr)
    # Taste drift: the champion loses --taste-drop of its CTR after 3 hours of normal traffic.
    drift_at = 36
    drifted = model._solve(
        lambda sc: model.list_ctr(ClickModel.CHAMPION_NOISE, sc), args.ctr * (1 - args.taste_drop), 0.01, 1.0
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
