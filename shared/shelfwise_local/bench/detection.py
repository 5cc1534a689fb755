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
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.cli.common import plain
from shelfwise.monitoring.comparison import guarded_compare
from shelfwise.monitoring.config import DEFAULT_ALARMS, MonitoringConfig, alarm_state
from shelfwise.monitoring.job import Deployment, MemoryStateStore, MonitoringJob
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


def window_traffic(
    rng: np.random.Generator,
    start: datetime,
    lists: int,
    share: float,
    ctr: dict[str, float],
    versions: dict[str, str],
    broken_scores: bool,
) -> pa.Table:
    t0 = int(start.timestamp() * 1000)
    ts = t0 + rng.integers(0, 300_000, lists)
    variant = np.where(rng.uniform(size=lists) < share, "challenger", "champion")
    rid = np.char.add(f"w{t0}-", np.arange(lists).astype(str))
    items = rng.zipf(1.3, size=(lists, K)) % 5000
    scores = np.sort(rng.beta(5, 2, size=(lists, K)), axis=1)[:, ::-1]
    if broken_scores:
        bad = variant == "challenger"
        scores[bad] = np.sort(rng.uniform(0.0, 0.3, size=(int(bad.sum()), K)), axis=1)[:, ::-1]
    p = np.where(variant == "challenger", ctr["challenger"], ctr["champion"])
    clicked = np.flatnonzero(rng.uniform(size=lists) < p)
    pos = np.minimum(rng.geometric(0.35, clicked.size) - 1, K - 1)
    n_imp = lists * K
    cats = np.char.add("c", rng.integers(0, 8, lists).astype(str))
    cols = {
        "event_type": np.concatenate(
            [np.full(n_imp, "impression"), np.full(clicked.size, "click"), np.full(lists, "view")]
        ),
        "recommendation_id": np.concatenate([np.repeat(rid, K), rid[clicked], np.full(lists, None)]),
        "item_id": np.concatenate(
            [
                np.char.add("i", items.ravel().astype(str)),
                np.char.add("i", items[clicked, pos].astype(str)),
                np.char.add("i", items[:, 0].astype(str)),
            ]
        ),
        "timestamp": np.concatenate(
            [np.repeat(ts, K), ts[clicked] + rng.integers(2_000, 60_000, clicked.size), ts - 1000]
        ),
        "position": np.concatenate([np.tile(np.arange(K), lists), pos, np.zeros(lists, dtype=np.int64)]),
        "score": np.concatenate([scores.ravel(), np.full(clicked.size, np.nan), np.full(lists, np.nan)]),
        "variant": np.concatenate([np.repeat(variant, K), np.full(clicked.size + lists, None)]),
        "model_version": np.concatenate(
            [
                np.repeat(np.where(variant == "challenger", versions["challenger"], versions["champion"]), K),
                np.full(clicked.size + lists, None),
            ]
        ),
        "category": np.concatenate([np.full(n_imp + clicked.size, None), cats]),
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
    windows: int,
    lists: int,
    ctr: float,
    challenger_ctr: float,
    broken: bool,
    seed: int,
    canary: bool = True,
    champion_ctr_after: tuple[int, float] | None = None,
) -> list[list[str]]:
    """Alarm suffixes in ALARM after each window's pass.

    ``champion_ctr_after = (window, ctr)`` changes the champion's CTR from that window on (taste drift).
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
    for w in range(windows):
        start = T0 + timedelta(minutes=5 * w)
        champ = ctr if champion_ctr_after is None or w < champion_ctr_after[0] else champion_ctr_after[1]
        source.add(
            start,
            window_traffic(
                rng, start, lists, share, {"champion": champ, "challenger": challenger_ctr}, versions, broken
            ),
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


def power(
    lists: int,
    ctr: float,
    drop: float,
    windows: int,
    runs: int,
    seed: int,
    datapoints: tuple[int, int] | None = None,
) -> list[int | None]:
    """Counts-level Monte Carlo of the quality alarm: per run, the first window after canary start
    at which ``challenger-quality`` is in ALARM (None: not within ``windows``).

    It mirrors what the job computes when clicks come within a minute (the bench's and the
    simulator's delays): cumulative lists and clicked lists per variant since the canary started,
    the same guard, bound and M-of-N rule (``datapoints`` overrides the alarm's M of N). The job
    itself runs in ``run``; this is the cheap way to get detection-time distributions (power).
    """
    spec = next(a for a in DEFAULT_ALARMS if a.suffix == "challenger-quality")
    if datapoints is not None:
        spec = replace(spec, datapoints_to_alarm=datapoints[0], evaluation_periods=datapoints[1])
    cfg = MonitoringConfig()
    rng = np.random.default_rng(seed)
    out: list[int | None] = []
    for _ in range(runs):
        n_c = rng.binomial(lists, 0.1, windows)
        n_b = lists - n_c
        x_c = np.cumsum(rng.binomial(n_c, ctr * (1 - drop)))
        x_b = np.cumsum(rng.binomial(n_b, ctr))
        n_c, n_b = np.cumsum(n_c), np.cumsum(n_b)
        points: list[float | None] = []
        hit = None
        for w in range(windows):
            b = guarded_compare(
                int(x_c[w]),
                int(n_c[w]),
                int(x_b[w]),
                int(n_b[w]),
                alpha=cfg.alpha,
                tau=cfg.tau,
                min_lists=cfg.min_lists_for_comparison,
                min_champion_successes=cfg.min_clicks_for_comparison,
                margin=cfg.quality_margin,
            )
            points.append(None if b is None else b.drop_lcb)
            if alarm_state(spec, points) == "ALARM":
                hit = w + 1
                break
        out.append(hit)
    return out


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
        default=[500, 750, 1000, 1250, 1500, 2000, 2500],
        help="lists per window for the power table (comma-separated)",
    )
    p.add_argument("--power-runs", type=int, default=400, help="Monte Carlo canaries per traffic level")
    args = p.parse_args(argv)
    t = time.perf_counter()
    n = args.lists_per_window
    broken = run(4, n, args.ctr, args.ctr * 0.1, True, args.seed)
    broken_at = next(
        (i + 1 for i, f in enumerate(broken) if any(s.startswith("challenger") for s in f)), None
    )
    print(f"detection: broken -> {broken_at} windows ({broken[:4]})", file=sys.stderr)
    # Clicks mature 30 min after a window ends: the first window matures at the end of window 7.
    subtle = run(7 + 12, n, args.ctr, args.ctr * 0.8, False, args.seed + 1)
    subtle_at = next((i + 1 - 7 for i, f in enumerate(subtle) if "challenger-quality" in f), None)
    print(f"detection: subtle -> {subtle_at} windows after first maturity", file=sys.stderr)
    # Taste drift: the champion loses --taste-drop of its CTR after 3 hours of normal traffic.
    drift_at = 36
    taste = run(
        drift_at + 36,
        n,
        args.ctr,
        args.ctr,
        False,
        args.seed + 3,
        canary=False,
        champion_ctr_after=(drift_at, args.ctr * (1 - args.taste_drop)),
    )
    taste_at = next(
        (i - drift_at + 1 for i, f in enumerate(taste) if i >= drift_at and "champion-ctr-drift" in f), None
    )
    taste_false = sum(1 for f in taste[:drift_at] if f)
    print(
        f"detection: taste drift -> {taste_at} windows after it began ({taste_false} alarms before)",
        file=sys.stderr,
    )
    # Power: the share of simulated canaries whose 20% drop alarms within 6 windows after the first
    # window matures (13 windows from canary start), per traffic level; counts-level Monte Carlo.
    power_table = {}
    for lists in args.power_lists:
        hits = power(lists, args.ctr, 0.2, 7 + 6, args.power_runs, args.seed + 10)
        power_table[lists] = round(sum(1 for h in hits if h is not None) / len(hits), 3)
    print(
        f"detection: P(20% drop within 6 windows after maturity) by lists/window: {power_table}",
        file=sys.stderr,
    )
    smallest = {
        f"p{int(p * 100)}": next((n for n, v in sorted(power_table.items()) if v >= p), None)
        for p in (0.5, 0.8, 0.9)
    }
    null = power(n, args.ctr, 0.0, int(args.hours * 12), args.power_runs // 4, args.seed + 20)
    null_rate = round(sum(1 for h in null if h is not None) / len(null), 3)
    print(
        f"detection: quality-alarm false alarms per {args.hours:g}-hour canary at {n} lists/window "
        f"(Monte Carlo, {len(null)} runs): {null_rate}",
        file=sys.stderr,
    )
    stable_windows = int(args.hours * 12)
    stable = run(stable_windows, n, args.ctr, args.ctr, False, args.seed + 2)
    transitions = sum(1 for i, f in enumerate(stable) for s in f if i == 0 or s not in stable[i - 1])
    print(
        f"detection: stable -> {transitions} alarm transitions over {stable_windows} windows", file=sys.stderr
    )
    emit(
        {
            "bench": "detection",
            "lists_per_window": n,
            "champion_list_ctr": args.ctr,
            "broken_windows_to_alarm": broken_at,
            "subtle_windows_after_maturity": subtle_at,
            "taste_drop": args.taste_drop,
            "taste_drift_windows_to_alarm": taste_at,
            "taste_drift_minutes_to_alarm": None if taste_at is None else taste_at * 5,
            "subtle_power_by_lists": power_table,
            "subtle_smallest_lists": smallest,
            "quality_false_alarm_rate_mc": null_rate,
            "stable_windows": stable_windows,
            "stable_false_alarms": transitions,
            "wall_s": round(time.perf_counter() - t, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0
