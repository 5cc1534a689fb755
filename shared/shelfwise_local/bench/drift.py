"""`shelfwise bench drift`: a healthy champion's served-score PSI over stable hours, per request path.

A simulated shop's history goes through the ingest (``read_events``: the same pipeline, optionally
with user ids pseudonymised), the training job trains and bundles a model on it (with the shop's
catalogue, so new items can be served), and the serving code (``Recommender``, the bundle's ONNX
graph, the given serving rules, the same pseudonymisation key) answers the shop's requests of the
following days at a stable rate: known shoppers by id, anonymous sessions with their history.
The served-list log lines are read back into impression rows as the ingest does, and every
5-minute window's champion scores are compared with the bundle's reference
(``manifest.reference.score_histogram``) by the monitoring job's own ``drift.score_psi``.

Prints the per-window PSI (p50, p95, max, windows above 0.1 and 0.25: what the ScorePSI alarms
see), the PSI pooled over all windows (all paths, and known shoppers alone), how many lists took
each path (known shopper, session fold-in, popularity fallback; with explored or new-item slots),
and one JSON line last.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.cli.common import plain
from shelfwise_local.bench._common import emit, peak_rss_mb

WINDOW_S = 300


def _train(args: argparse.Namespace, work: Path) -> tuple[Any, Path, dict[str, Any]]:
    import pyarrow.parquet as pq

    from shelfwise.ingest import read_events
    from shelfwise.simulator import Shop, ShopParams
    from shelfwise.simulator.generate import simulate_to_files
    from shelfwise.training.job import Progress, TrainConfig, run_training

    params = ShopParams(
        n_users=args.users, n_items=args.items, n_days=args.history_days + max(1, -(-args.hours // 24))
    )
    simulate_to_files(params, seed=args.seed, out_dir=work / "shop")
    files = sorted((work / "shop" / "events").iterdir())[: args.history_days]
    hist = work / "history"
    hist.mkdir()
    for f in files:
        shutil.copy(f, hist / f.name)
    key = args.key.encode() if args.key else None
    table = read_events(hist, "auto", pseudonymisation_key=key)
    catalogue = pq.read_table(work / "shop" / "catalogue.parquet")
    config = TrainConfig(k=args.k, search=args.search, threads=1)
    result = run_training(
        table, work / "bundle", config, version="v1", progress=Progress(stream=None), catalogue=catalogue
    )
    manifest = json.loads((result.bundle_dir / "manifest.json").read_text())
    return Shop(params, seed=args.seed), result.bundle_dir, manifest


def _recommender(args: argparse.Namespace, bundle: Path, work: Path, sink: Any) -> Any:
    from shelfwise.pseudonym import Pseudonymiser
    from shelfwise.registry import Aliases
    from shelfwise.serving import ModelLoader, Recommender, ServingConfig
    from shelfwise.serving.config import ServingRules

    def fetch(version: str, directory: Path) -> Path:
        if not directory.exists():
            shutil.copytree(bundle, directory)
        return directory

    rules = ServingRules.model_validate_json(args.rules)
    config = ServingConfig(
        model_name="recs", cache_dir=str(work / "cache"), alias_ttl_seconds=1e9, rules=rules
    )
    loader = ModelLoader(None, "bucket", "recs", config.cache_dir, fetch=fetch)
    pseudonymise = Pseudonymiser(args.key.encode()).one if args.key else None
    rec = Recommender(
        config,
        loader,
        lambda: Aliases(champion="v1"),
        sink,
        background=False,
        pseudonymise=pseudonymise,
    )
    rec.start()
    return rec


def _window_rows(lines: str) -> list[dict[str, Any]]:
    from shelfwise.served_lists import served_list_rows

    rows: list[dict[str, Any]] = []
    for line in lines.splitlines():
        if line.strip():
            rows.extend(served_list_rows(json.loads(line)))
    return rows


def _quantile(values: list[float], q: float) -> float | None:
    return round(float(np.quantile(values, q)), 4) if values else None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench drift", description=plain(__doc__))
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--history-days", type=int, default=6, help="days of history the model is trained on")
    p.add_argument("--hours", type=int, default=48, help="stable hours served after the history")
    p.add_argument("--requests-per-window", type=int, default=400)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--search", choices=("none", "small", "full"), default="small", help="training's grid")
    p.add_argument(
        "--rules",
        default=json.dumps(
            {
                "exclude_out_of_stock": True,
                "exclude_purchased": True,
                "exploration": {"share": 1.0, "epsilon": 0.05, "pool": 30},
            }
        ),
        help="ServingRules JSON (default: the demo's, exploring 5%% of slots)",
    )
    p.add_argument(
        "--key",
        default="bench-key",
        help="pseudonymisation key for ingest and serving ('' = ids as they are)",
    )
    args = p.parse_args(argv)
    if args.hours < 1 or args.requests_per_window < 1:
        p.error("--hours and --requests-per-window must be positive")

    from shelfwise.monitoring.config import MonitoringConfig
    from shelfwise.monitoring.drift import DriftReference, score_psi
    from shelfwise.serving import HistoryEvent
    from shelfwise.serving.impressions import ImpressionSink

    cfg = MonitoringConfig()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-drift-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        shop, bundle, manifest = _train(args, work)
        train_s = time.perf_counter() - t
        ref = DriftReference.from_manifest(manifest).score_histogram
        assert ref is not None
        print(
            f"trained {manifest['algorithm']} on {args.history_days} days in {train_s:.0f}s", file=sys.stderr
        )
        stream = io.StringIO()
        rec = _recommender(args, bundle, work, ImpressionSink(stream))
        contexts = [ctx for day in range(args.history_days, shop.params.n_days) for ctx in shop.traffic(day)]
        windows = args.hours * 3600 // WINDOW_S
        per_window: list[float] = []
        pooled: dict[str, list[float]] = defaultdict(list)
        lists: dict[str, int] = defaultdict(int)
        served_s = 0.0
        i = 0
        model = rec.state.models["v1"]
        for _ in range(windows):
            scores: list[float] = []
            for _ in range(args.requests_per_window):
                ctx = contexts[i % len(contexts)]
                i += 1
                stream.seek(0)
                stream.truncate()
                t = time.perf_counter()
                if ctx.user_id is not None:
                    r = rec.recommend(user_id=ctx.user_id, k=args.k)
                else:
                    r = rec.recommend(
                        session_id=ctx.session_id,
                        history=[HistoryEvent(item, kind) for item, kind in ctx.history],
                        k=args.k,
                    )
                served_s += time.perf_counter() - t
                rows = _window_rows(stream.getvalue())
                if r.variant != "champion":
                    lists[r.variant] += 1
                    continue
                row_scores = [float(x["score"]) for x in rows if x.get("score") is not None]
                scores.extend(row_scores)
                lists["known" if ctx.user_id is not None else "session"] += 1
                if ctx.user_id is not None:
                    pooled["known shoppers only"].extend(row_scores)
                if any(bool((x.get("properties") or {}).get("spread")) for x in rows):
                    lists["with explored slots"] += 1
                if any(model.catalog.index_of(item) is None for item in r.item_ids):
                    lists["with new-item slots"] += 1
            v = score_psi(np.asarray(scores), ref, cfg.min_scores_for_drift, cfg.histogram_epsilon)
            if v is not None:
                per_window.append(v)
            pooled["all paths"].extend(scores)
        paths = {
            name: {
                "scores": len(vals),
                "psi": None
                if len(vals) < cfg.min_scores_for_drift
                else round(score_psi(np.asarray(vals), ref, cfg.min_scores_for_drift), 4),
            }
            for name, vals in sorted(pooled.items())
        }
    result = {
        "benchmark": "drift",
        "algorithm": manifest["algorithm"],
        "hours": args.hours,
        "windows": len(per_window),
        "requests_per_window": args.requests_per_window,
        "psi_p50": _quantile(per_window, 0.5),
        "psi_p95": _quantile(per_window, 0.95),
        "psi_max": round(max(per_window), 4) if per_window else None,
        "windows_above_0.1": sum(v > 0.1 for v in per_window),
        "windows_above_0.25": sum(v > 0.25 for v in per_window),
        "paths": paths,
        "lists": dict(lists),
        "train_s": round(train_s, 1),
        "serve_ms_per_request": round(1000 * served_s / max(i, 1), 3),
        "wall_s": round(time.perf_counter() - t_all, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(
        f"champion ScorePSI over {result['windows']} windows ({args.hours} h x {args.requests_per_window} "
        f"requests/window): p50 {result['psi_p50']}, p95 {result['psi_p95']}, max {result['psi_max']}; "
        f"windows > 0.1: {result['windows_above_0.1']}, > 0.25: {result['windows_above_0.25']}",
        file=sys.stderr,
    )
    for name, v in paths.items():
        print(f"  pooled over all windows, {name}: PSI {v['psi']} ({v['scores']} scores)", file=sys.stderr)
    print(f"  champion and fallback lists by path: {dict(lists)}", file=sys.stderr)
    emit(result)
    return 0
