"""`shelfwise bench train --events N`: the training job end to end (train + evaluate + export + register).

Data: a synthetic shop with latent tastes (users prefer one of 32 item clusters, Zipf popularity
inside a cluster, view < click < cart < purchase funnel, 60 days), generated in numpy straight
into the curated schema so generation is not timed; or any log with ``--path P --format F``.
The registry is the real one against in-process moto S3/SSM/EventBridge.

Baseline, same process and data: one bare ``implicit`` ALS fit on the full interaction matrix
with the job's ALS settings (the single most expensive library call inside the job). The JSON
line reports wall time per stage, peak RSS and the ratio job / baseline.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shelfwise.cli.common import plain
from shelfwise_local.bench._common import emit, peak_rss_mb

EVENT_TYPES = np.array(["view", "click", "add_to_cart", "purchase"])
TYPE_P = np.array([0.6, 0.2, 0.12, 0.08])
CLUSTERS = 32


def synthetic(n_events: int, seed: int = 11) -> pa.Table:
    """A curated-schema table of ``n_events`` events with planted tastes."""
    from shelfwise.events import EVENT_WEIGHTS

    rng = np.random.default_rng(seed)
    n_users = max(100, n_events // 25)
    n_items = int(min(100_000, max(200, n_events // 20)))
    per_cluster = max(1, n_items // CLUSTERS)
    activity = rng.lognormal(0.0, 1.0, n_users)
    user = rng.choice(n_users, size=n_events, p=activity / activity.sum())
    taste = rng.integers(0, CLUSTERS, n_users)
    zipf = 1.0 / np.arange(1, per_cluster + 1) ** 0.9
    rank = rng.choice(per_cluster, size=n_events, p=zipf / zipf.sum())
    in_taste = rng.random(n_events) < 0.8
    cluster = np.where(in_taste, taste[user], rng.integers(0, CLUSTERS, n_events))
    item = np.minimum(cluster + CLUSTERS * rank, n_items - 1)
    day = rng.integers(0, 60, n_events)
    ts = (
        np.datetime64("2026-09-01T00:00:00", "ms").astype(np.int64)
        + day * 86_400_000
        + rng.integers(0, 86_400_000, n_events)
    )
    kind_idx = rng.choice(len(EVENT_TYPES), size=n_events, p=TYPE_P)
    kinds = EVENT_TYPES[kind_idx]
    weights = np.array([EVENT_WEIGHTS[k] for k in EVENT_TYPES], np.float32)[kind_idx]
    users = pa.array(np.char.add("u", user.astype(str)))
    return pa.table(
        {
            "event_type": pa.array(kinds).dictionary_encode(),
            "user_id": users,
            "session_id": pa.array(
                np.char.add(np.char.add("u", user.astype(str)), np.char.add("-", day.astype(str)))
            ),
            "item_id": pa.array(np.char.add("i", item.astype(str))),
            "timestamp": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "category": pa.array(np.char.add("c", (item % CLUSTERS).astype(str))),
            "price": pa.array(rng.uniform(1, 100, n_events)),
            "weight": pa.array(weights),
        }
    )


def _bare_als(table: pa.Table, params: dict[str, Any], threads: int) -> float:
    from shelfwise.training.data import interactions_from_table
    from shelfwise.training.mf import ALS

    data = interactions_from_table(table)
    t0 = time.perf_counter()
    ALS(**{k: v for k, v in params.items() if k != "seed"}, threads=threads).fit(data)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="shelfwise bench train", description=plain(__doc__.split("\n")[0]))
    ap.add_argument("--events", type=int, default=1_000_000, help="synthetic events (default 1M)")
    ap.add_argument("--path", default=None, help="use this event log instead of synthetic data")
    ap.add_argument("--format", default="auto", help="format of --path")
    ap.add_argument("--search", choices=("none", "small", "full"), default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--families",
        default="",
        help="families to train (the baselines are always added; default: all but sequential)",
    )
    args = ap.parse_args(argv)

    import boto3
    from moto import mock_aws

    from shelfwise.registry import Registry
    from shelfwise.training.job import Progress, TrainConfig, run_training
    from shelfwise.training.search import parse_families

    t0 = time.perf_counter()
    if args.path:
        from shelfwise.ingest import read_events

        table = read_events(args.path, args.format)
    else:
        table = synthetic(args.events)
    gen_s = time.perf_counter() - t0
    peak_before_job = peak_rss_mb()  # the generated table and imports, not the job's doing
    print(f"bench train: {table.num_rows} events ready in {gen_s:.1f}s", file=sys.stderr)
    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="bench-models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        registry = Registry(
            s3,
            boto3.client("ssm", region_name="eu-west-1"),
            boto3.client("events", region_name="eu-west-1"),
            "bench-models",
            "bench",
            "recs",
        )
        # Every step, search trials included, with the process CPU time at that moment: wall
        # time on a shared machine includes waiting for a core, CPU time does not.
        steps: list[tuple[str, float, float]] = []
        peak_after: dict[str, float] = {}  # process peak RSS (MB) once each step had run

        def record(event: dict[str, Any]) -> None:
            name = event["stage"]
            if name in {"search", "test", "epoch"}:
                name = f"{name}:{event.get('family')}"
            steps.append((name, float(event["elapsed_s"]), time.process_time()))
            peak_after[name] = peak_rss_mb()

        progress = Progress(stream=sys.stderr, sinks=[record])
        cpu0 = time.process_time()
        t1 = time.perf_counter()
        result = run_training(
            table,
            Path(tmp) / "bundle",
            TrainConfig(search=args.search, threads=args.threads, families=parse_families(args.families)),
            registry=registry,
            progress=progress,
            now=datetime.now(UTC),
        )
        job_s = time.perf_counter() - t1
        bundle_mb = sum(p.stat().st_size for p in (Path(tmp) / "bundle").iterdir()) / 2**20
    peak = peak_rss_mb()
    validation = result.manifest["evaluation"]["validation"]
    als_params = validation["als"]["params"] if "als" in validation else {"factors": 64}
    baseline_s = _bare_als(table, als_params, args.threads)
    stages: dict[str, float] = {}
    stages_cpu: dict[str, float] = {}
    last_wall, last_cpu = 0.0, cpu0
    for name, wall, cpu in steps:
        stages[name] = round(stages.get(name, 0.0) + wall - last_wall, 2)
        stages_cpu[name] = round(stages_cpu.get(name, 0.0) + cpu - last_cpu, 2)
        last_wall, last_cpu = wall, cpu
    emit(
        {
            "benchmark": "train",
            "events": table.num_rows,
            "usable_events": result.manifest["training_window"]["events"],
            "users": result.manifest["training_window"]["users"],
            "items": result.manifest["training_window"]["items"],
            "search": args.search,
            "threads": args.threads,
            "wall_s": round(job_s, 2),
            # CPU seconds of the whole process (job + baseline): on a shared machine wall time
            # includes waiting for the cores; CPU time does not.
            "process_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
            "job_cpu_s": round(last_cpu - cpu0, 1),
            "stages_s": stages,
            "stages_cpu_s": stages_cpu,
            "peak_rss_mb": peak,
            "peak_rss_mb_before_job": peak_before_job,
            "peak_rss_mb_after": peak_after,
            "bundle_mb": round(bundle_mb, 1),
            "best": result.manifest["algorithm"],
            "selection": result.manifest["evaluation"]["selection"],
            "curves": result.manifest["evaluation"]["curves"],
            "ndcg@10": {k: v["ndcg@10"] for k, v in result.manifest["evaluation"]["models"].items()},
            "registered": result.registration.version if result.registration else None,
            "baseline_bare_als_fit_s": round(baseline_s, 2),
            "ratio_job_to_bare_als": round(job_s / baseline_s, 1) if baseline_s else None,
        }
    )
    return 0
