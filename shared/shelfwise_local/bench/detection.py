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
from shelfwise.monitoring.config import DEFAULT_ALARMS, MonitoringConfig, alarm_state
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.state import Deployment, MemoryStateStore
from shelfwise_local.bench import detection_mc
from shelfwise_local.bench._common import emit, peak_rss_mb
from shelfwise_local.bench.detection_mc import CanaryMC, _share, power, promotion
from shelfwise_local.bench.detection_world import ClickModel, K

T0 = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
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
        default=detection_mc.ILV_FACTOR,
        help="interleaved lists per challenger list of a split at the same weight (2: the same challenger exposure)",
    )
    p.add_argument("--skip-stable", action="store_true", help="skip the 48-hour runs through the job")
    args = p.parse_args(argv)
    t = time.perf_counter()
    n = args.lists_per_window
    detection_mc.ILV_FACTOR = args.interleave_factor
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
