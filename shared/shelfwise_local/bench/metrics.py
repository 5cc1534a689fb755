"""`shelfwise bench metrics --impressions N`: one monitoring window over N impressions + feedback.

Writes synthetic curated Parquet (the contract's columns) for one 5-minute window of N impression
rows (lists of 5) with clicks, carts and purchases, then times: reading the window back, the
feedback join (``compute_quality``) and a whole fast pass (label-free drift, early clicks, matured
window, comparisons). The baseline, timed in the same run on the same rows, is the obvious pure-
Python version of the join (dicts keyed by recommendation id and item); the figure that matters is
the ratio, since these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shelfwise.cli.common import plain
from shelfwise.monitoring.config import MonitoringConfig
from shelfwise.monitoring.data import LocalEventSource
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.quality import compute_quality
from shelfwise.monitoring.state import Deployment, MemoryStateStore
from shelfwise_local.bench._common import emit, peak_rss_mb

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
K = 5
EDGES = np.linspace(0.0, 1.0, 21)


def synthesize(impressions: int, seed: int, root: Path) -> dict[str, int]:
    """Write one window of curated events under ``root`` (bucket layout); return row counts."""
    rng = np.random.default_rng(seed)
    lists = max(1, impressions // K)
    n = lists * K
    t0 = int(T0.timestamp() * 1000)
    list_ts = t0 + rng.integers(0, 300_000, lists)
    rid = np.char.add("r", np.arange(lists).astype(str))
    variant = np.where(rng.uniform(size=lists) < 0.1, "challenger", "champion")
    items = rng.zipf(1.3, size=(lists, K)) % 50_000
    item_ids = np.char.add("i", items.astype(str))
    scores = np.sort(rng.beta(5, 2, size=(lists, K)), axis=1)[:, ::-1]
    imp = {
        "event_type": np.full(n, "impression"),
        "recommendation_id": np.repeat(rid, K),
        "item_id": item_ids.ravel(),
        "timestamp": np.repeat(list_ts, K),
        "position": np.tile(np.arange(K, dtype=np.int32), lists),
        "score": scores.ravel().astype(np.float32),
        "variant": np.repeat(variant, K),
        "model_version": np.repeat(np.where(variant == "champion", "v1", "v2"), K),
        "price": np.full(n, np.nan),
        "category": np.full(n, None),
    }
    # Feedback: 20% of lists clicked once (delay ~ exp(2 min)); half of those carted, a third bought.
    clicked = np.flatnonzero(rng.uniform(size=lists) < 0.2)
    pos = rng.integers(0, K, clicked.size)
    base = list_ts[clicked] + rng.exponential(120_000, clicked.size).astype(np.int64)
    carted = clicked[rng.uniform(size=clicked.size) < 0.5]
    bought = carted[rng.uniform(size=carted.size) < 0.33]
    fb_parts = []
    for kind, idx, delay in (
        ("click", clicked, 0),
        ("add_to_cart", carted, 600_000),
        ("purchase", bought, 3_600_000),
    ):
        sel = np.searchsorted(clicked, idx)
        fb_parts.append(
            {
                "event_type": np.full(idx.size, kind),
                "recommendation_id": rid[idx],
                "item_id": item_ids[idx, pos[sel]],
                "timestamp": base[sel] + delay,
                "position": pos[sel].astype(np.int32),
                "score": np.full(idx.size, np.nan, dtype=np.float32),
                "variant": np.full(idx.size, None),
                "model_version": np.full(idx.size, None),
                "price": rng.uniform(5, 100, idx.size) if kind == "purchase" else np.full(idx.size, np.nan),
                "category": np.char.add("c", (items[idx, pos[sel]] % 20).astype(str)),
            }
        )
    columns = {}
    for c in imp:
        columns[c] = np.concatenate([imp[c]] + [p[c] for p in fb_parts])
    table = pa.table(
        {
            "event_type": pa.array(columns["event_type"]).dictionary_encode(),
            "recommendation_id": pa.array(columns["recommendation_id"]),
            "item_id": pa.array(columns["item_id"]),
            "timestamp": pa.array(columns["timestamp"].astype("datetime64[ms]")).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "position": pa.array(columns["position"], pa.int32()),
            "score": pa.array(columns["score"], pa.float32(), from_pandas=True),
            "variant": pa.array(columns["variant"], pa.string()),
            "model_version": pa.array(columns["model_version"], pa.string()),
            "price": pa.array(columns["price"], pa.float64(), from_pandas=True),
            "quantity": pa.nulls(len(columns["price"]), pa.float64()),
            "category": pa.array(columns["category"], pa.string()),
        }
    )
    out = root / "curated" / "events" / f"event_date={T0:%Y-%m-%d}"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "bench.parquet")
    return {"impressions": n, "lists": lists, "feedback_rows": table.num_rows - n}


def python_baseline(table: pa.Table, windows_click_ms: int) -> dict[str, int]:
    """The obvious pure-Python join: dicts keyed by (recommendation_id, item_id)."""
    rows = table.select(["event_type", "recommendation_id", "item_id", "timestamp", "variant"]).to_pylist()
    imp: dict[tuple[str, str], tuple[object, str]] = {}
    lists: dict[str, str] = {}
    for r in rows:
        if r["event_type"] == "impression":
            imp[(r["recommendation_id"], r["item_id"])] = (r["timestamp"], r["variant"])
            lists[r["recommendation_id"]] = r["variant"]
    clicked: set[str] = set()
    for r in rows:
        if r["event_type"] == "click":
            hit = imp.get((r["recommendation_id"], r["item_id"]))
            if hit and 0 <= (r["timestamp"] - hit[0]).total_seconds() * 1000 <= windows_click_ms:
                clicked.add(r["recommendation_id"])
    out: dict[str, int] = {}
    for rid, var in lists.items():
        out[f"{var}_lists"] = out.get(f"{var}_lists", 0) + 1
        if rid in clicked:
            out[f"{var}_clicked"] = out.get(f"{var}_clicked", 0) + 1
    return out


class _Manifests:
    def manifest(self, version: str) -> dict:
        counts = np.diff(6 * EDGES**5 - 5 * EDGES**6)
        return {"reference": {"score_histogram": {"bins": EDGES.tolist(), "counts": counts.tolist()}}}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench metrics", description=plain(__doc__))
    p.add_argument(
        "--impressions", type=int, default=1_000_000, help="impressions in the window (default 1M)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-baseline", action="store_true", help="skip the pure-Python baseline")
    args = p.parse_args(argv)
    if args.impressions < K:
        p.error(f"--impressions must be at least {K}")
    cfg = MonitoringConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        counts = synthesize(args.impressions, args.seed, root)
        synth_s = time.perf_counter() - t
        print(f"bench metrics: wrote {counts} in {synth_s:.1f}s", file=sys.stderr)
        source = LocalEventSource(root)
        end = T0 + cfg.window
        as_of = T0 + timedelta(hours=26)

        t = time.perf_counter()
        events = source.read(T0, as_of)
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        quality = compute_quality(events, T0, end, cfg.attribution, as_of)
        quality_s = time.perf_counter() - t
        # A whole fast pass evaluated 35 minutes after the window: drift, early clicks, matured clicks.
        job = MonitoringJob(source, _Manifests(), MemoryStateStore(), cfg)
        deployment = Deployment(champion="v1", challenger="v2", canary_weight=0.1)
        t = time.perf_counter()
        job.fast_pass(T0 + timedelta(minutes=5, seconds=10), deployment)
        result = job.fast_pass(T0 + timedelta(minutes=35, seconds=10), deployment)
        fast_s = (time.perf_counter() - t) / 2
        champ = quality[("champion", "v1")]
        baseline_s = None
        if not args.no_baseline:
            t = time.perf_counter()
            base = python_baseline(events, cfg.attribution.click * 1000)
            baseline_s = time.perf_counter() - t
            if base.get("champion_clicked") != champ.clicked_lists:
                print(f"bench metrics: baseline disagrees: {base} vs {champ}", file=sys.stderr)
                return 1
    emit(
        {
            "bench": "metrics",
            **counts,
            "read_s": round(read_s, 3),
            "quality_join_s": round(quality_s, 3),
            "fast_pass_s": round(fast_s, 3),
            "python_baseline_join_s": None if baseline_s is None else round(baseline_s, 3),
            "speedup_vs_python": None if baseline_s is None else round(baseline_s / quality_s, 1),
            "champion_list_ctr": round(champ.list_ctr or 0.0, 4),
            "metrics_published": len(result.data),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0
