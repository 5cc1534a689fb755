"""`shelfwise bench shards`: a catalogue split over shards, scatter-gather and merge (docs/serving.md).

Beyond one function's memory (ten million items and more) the catalogue is cut into shards of up
to a million items (by item hash; each shard its own bundle and serving function) and a request is
sent to every shard, whose page-index graph answers its top-k; the caller merges them. This runs
the part that can run here on synthetic data: builds each shard's index and graph (the probe count
chosen on shard 0 by the exporter's recall sweep and used for all), answers the same queries on
every shard (in this process, one after the other, each on one thread), and reports:

- recall@20 of the merged answer against the exact top-20 over the whole catalogue (the merge of
  the shards' exact top-20, so the whole float32 matrix is never held);
- per-shard latency, and the scatter-gather latency as deployed: for each request the slowest
  shard (they run in parallel, one function each) plus the measured merge;
- memory: each shard's bundle, and this process's peak RSS;
- cost per million requests from Lambda's list prices (assumptions in the JSON).

Figures only: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np

from shelfwise_local.bench._common import emit, peak_rss_mb

# Lambda list prices (x86, us-east-1) used for the cost estimate; check the current price list.
LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.20 / 1e6
SHARD_MEMORY_MB = 1769
ROUTER_MEMORY_MB = 512
# what a synchronous Lambda invoke adds to a shard's handler time, inside one region (assumption)
INVOKE_OVERHEAD_MS = 8.0


def _shard_model(n: int, dim: int, n_users: int, shard: int, seed: int) -> tuple[Any, np.ndarray]:
    """One shard's items (same category centroids for every shard) and the shared query users."""
    from shelfwise import onnx_export as ox

    base = np.random.default_rng(seed)
    n_categories = 20
    centroids = base.normal(size=(n_categories, dim)).astype(np.float32)
    users = (
        centroids[base.integers(0, n_categories, n_users)] + 0.3 * base.normal(size=(n_users, dim))
    ).astype(np.float32)
    rng = np.random.default_rng([seed, shard + 1])
    cats = rng.integers(0, n_categories, size=n)
    items = (centroids[cats] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32) / np.sqrt(dim)
    return ox.FactorModel.create(items, users, ox.als_projection(items, 1.0)), users


def cost_per_million(shards: int, shard_ms: float, router_ms: float) -> dict[str, float]:
    """USD per million requests: every shard function billed for its handler time (1 ms granules),
    the router for the whole scatter-gather, plus each invocation's request fee."""

    def fn(memory_mb: int, ms: float) -> float:
        return memory_mb / 1024 * (np.ceil(ms) / 1000) * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD

    shard_cost = shards * fn(SHARD_MEMORY_MB, shard_ms)
    router_cost = fn(ROUTER_MEMORY_MB, router_ms) if shards > 1 else 0.0
    return {
        "shards_usd": round(shard_cost * 1e6, 3),
        "router_usd": round(router_cost * 1e6, 3),
        "total_usd": round((shard_cost + router_cost) * 1e6, 3),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise bench shards", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--target-recall", type=float, default=0.97)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from shelfwise import ann
    from shelfwise import onnx_ann as oa
    from shelfwise import onnx_export as ox
    from shelfwise.serving.model import session_options

    per_shard = -(-args.items // args.shards)
    k = 20
    sessions, shard_bytes, build_s = [], [], []
    exact_scores, exact_ids = [], []
    probe = alpha = None
    queries = None
    t_all = time.perf_counter()
    for s in range(args.shards):
        n = min(per_shard, args.items - s * per_shard)
        model, users = _shard_model(n, args.dim, 10_000, s, 0)
        if queries is None:
            rng = np.random.default_rng(1)
            queries = np.concatenate(
                [
                    users[rng.choice(users.shape[0], args.queries // 2, replace=False)],
                    oa.random_queries(model, args.queries - args.queries // 2, 2),
                ]
            )
        t = time.perf_counter()
        if probe is None:  # the exporter's choice on shard 0, used for every shard
            graph, record = oa.export_ann(model, target_recall=args.target_recall)
            if graph is None:
                print(f"shard 0: {record.get('rejected')}", file=sys.stderr)
                return 1
            probe, alpha = record["probe"], record["alpha"]
            index = None
        else:
            index = ann.build_page_index(model.item_factors)
        # the shard's graph with the queries as its known users: each query runs the served path
        qmodel = ox.FactorModel.create(model.item_factors, queries, model.projection)
        if index is None:
            index = ann.build_page_index(model.item_factors)
        graph = oa.build_factor_ann_model(qmodel, index, probe=probe, alpha=alpha)
        build_s.append(time.perf_counter() - t)
        shard_bytes.append(sum(t.ByteSize() for t in graph.graph.initializer))
        sessions.append(
            ort.InferenceSession(
                graph.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
            )
        )
        del graph
        scores = queries @ model.item_factors.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        exact_scores.append(np.take_along_axis(scores, top, axis=1))
        exact_ids.append(top + s * per_shard)
        print(
            f"shard {s}: {n} items, probe {probe}, built in {build_s[-1]:.1f}s, rss {peak_rss_mb()} MiB",
            file=sys.stderr,
        )
        del model, scores
    assert queries is not None
    all_scores = np.concatenate(exact_scores, axis=1)
    all_ids = np.concatenate(exact_ids, axis=1)
    exact_top = np.take_along_axis(all_ids, np.argsort(-all_scores, axis=1)[:, :k], axis=1)

    mask = np.zeros(per_shard, bool)
    masks = [mask[: s.get_inputs()[3].shape[0]] for s in sessions]
    per_request_max, shard_ms, merge_ms, recalls = [], [], [], []
    for q in range(queries.shape[0]):
        answers, times = [], []
        for s, sess in enumerate(sessions):
            feed = ox.feeds(masks[s].shape[0], user_index=q, exclude_mask=masks[s], k=k)
            t = time.perf_counter()
            sc, idx = sess.run(None, feed)
            times.append((time.perf_counter() - t) * 1000)
            answers.append((sc, idx + s * per_shard))
        t = time.perf_counter()
        merged_scores = np.concatenate([a[0] for a in answers])
        merged_ids = np.concatenate([a[1] for a in answers])
        best = merged_ids[np.argsort(-merged_scores, kind="stable")[:k]]
        merge_ms.append((time.perf_counter() - t) * 1000)
        shard_ms.extend(times)
        per_request_max.append(max(times))
        recalls.append(len(set(best.tolist()) & set(exact_top[q].tolist())) / k)
    half = queries.shape[0] // 2
    gather_p99 = float(np.percentile(per_request_max, 99)) + float(np.percentile(merge_ms, 99))
    result = {
        "benchmark": "shards",
        "items": args.items,
        "shards": args.shards,
        "items_per_shard": per_shard,
        "dim": args.dim,
        "probe": probe,
        "alpha": alpha,
        "recall_at_20": round(float(np.mean(recalls)), 4),
        "recall_at_20_validation_users": round(float(np.mean(recalls[:half])), 4),
        "recall_at_20_random_queries": round(float(np.mean(recalls[half:])), 4),
        "shard_graph_p50_ms": round(statistics.median(shard_ms), 3),
        "shard_graph_p99_ms": round(float(np.percentile(shard_ms, 99)), 3),
        "slowest_shard_p50_ms": round(statistics.median(per_request_max), 3),
        "slowest_shard_p99_ms": round(float(np.percentile(per_request_max, 99)), 3),
        "merge_p99_ms": round(float(np.percentile(merge_ms, 99)), 4),
        # as deployed: shards in parallel (one function each), the router waits for the slowest
        "scatter_gather_p99_ms_without_invoke": round(gather_p99, 3),
        "scatter_gather_p99_ms_with_invoke_assumed": round(gather_p99 + INVOKE_OVERHEAD_MS, 3),
        "shard_index_build_s": [round(b, 1) for b in build_s],
        "shard_graph_mb": round(statistics.median(shard_bytes) / 2**20, 1),
        "rss_mb": peak_rss_mb(),
        "wall_s": round(time.perf_counter() - t_all, 1),
        "cost_per_million_requests_usd": cost_per_million(
            args.shards,
            float(np.median(shard_ms)) + 1.0,  # + the handler's own ~1 ms around the graph
            float(np.median(per_request_max)) + INVOKE_OVERHEAD_MS + 1.0,
        ),
        "cost_assumptions": {
            "lambda_gb_second_usd": LAMBDA_GB_SECOND_USD,
            "lambda_request_usd": LAMBDA_REQUEST_USD,
            "shard_memory_mb": SHARD_MEMORY_MB,
            "router_memory_mb": ROUTER_MEMORY_MB,
            "invoke_overhead_ms": INVOKE_OVERHEAD_MS,
        },
    }
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
