"""`shelfwise bench serve`: latency of the serving handler, the bare ONNX kernel, the HTTP API, cold start.

Builds a synthetic factor-model bundle (``--items`` x ``--dim``), registers it in an embedded moto
server (S3 + SSM + Firehose), then measures in the same run:

1. the bare ONNX MatMul+TopK kernel on the same item matrix (the baseline);
2. the serve_recommendations handler in-process (payload 2.0 events, per request p50/p95/p99);
   with a ranker bundle, also serving the ranker graph against the retrieval graph it wraps;
3. the same requests through a local HTTP API (real loopback socket, payload 2.0);
4. cold start: a fresh interpreter importing the handler, loading the bundle from the emulator's
   S3 and answering one request; and the serving package size (function + layers).

Prints one JSON line last. Figures only: nothing here asserts on time.

The parts: ``synthetic`` (the bundle), ``events`` (the request mix), ``kernel`` (1), ``handler``
(2 and 3), ``cold_start`` (4); :func:`main` runs them (cold starts before the in-process handler,
whose imports would otherwise warm the page cache for them) and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shelfwise.cli.common import plain
from shelfwise_local.bench._common import emit, pct, peak_rss_mb
from shelfwise_local.bench.serve.cold_start import (
    SERVING_LIBRARIES,
    cold_start,
    import_seconds,
    lambda_paths,
    one_core,
    package_mb,
)
from shelfwise_local.bench.serve.events import SHOP_CLIENT, Context, apigw_event, iam_authorizer, request_mix
from shelfwise_local.bench.serve.handler import exploration_ab, graph_ab, handler_times, http_api, load_app
from shelfwise_local.bench.serve.kernel import KERNEL_ITEMS, kernel_after_eviction, kernel_times
from shelfwise_local.bench.serve.ranker import RETRIEVAL_GRAPH, ranker_ab
from shelfwise_local.bench.serve.synthetic import build_synthetic_bundle, synthetic_factors

__all__ = [
    "SHOP_CLIENT",
    "apigw_event",
    "build_synthetic_bundle",
    "iam_authorizer",
    "main",
    "synthetic_factors",
]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto in server mode in its own process, so its work never shares this process's GIL."""
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise bench serve", description=plain(__doc__.splitlines()[0]))
    parser.add_argument("--items", type=int, default=100_000, help="catalogue size (default 100k)")
    parser.add_argument("--dim", type=int, default=64, help="factor dimension (default 64)")
    parser.add_argument("--users", type=int, default=10_000, help="known users (default 10k)")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per phase (default 10k)")
    parser.add_argument("--http-requests", type=int, default=None, help="default: requests / 5")
    parser.add_argument(
        "--cold-runs", type=int, default=3, help="cold starts measured, best kept (default 3)"
    )
    parser.add_argument("--float16", action="store_true", help="store the item matrix in half precision")
    parser.add_argument(
        "--exact-graph", action="store_true", help="export the exact graph (no int8 candidate stage)"
    )
    parser.add_argument(
        "--model",
        choices=("als", "sequential", "ranker", "sequential-ranker"),
        default="als",
        help="served graph: ALS factors, the sequential model (2 blocks, 50 stored events per user), "
        "ALS with the neural ranker re-ranking its top 100 (50 stored events per user), or the "
        "sequential model with the ranker over its top 100",
    )
    parser.add_argument(
        "--history", type=int, default=None, help="events per session request (default 5; 50 for sequential)"
    )
    args = parser.parse_args(argv)
    history = args.history or (50 if args.model.startswith("sequential") else 5)

    import boto3

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    # the sequential model's exact graph beside its int8 one: both timed in the same run (A/B)
    exact_file = work / "exact.onnx" if args.model == "sequential" and not args.exact_graph else None
    t = time.perf_counter()
    bundle_dir = build_synthetic_bundle(
        work / "bundle",
        n_items=args.items,
        dim=args.dim,
        n_users=args.users,
        float16=args.float16,
        int8_candidates=not args.exact_graph,
        save_items=work / KERNEL_ITEMS,
        model_kind=args.model,
        save_exact=exact_file,
    )
    export_s = time.perf_counter() - t
    graph_record = json.loads((bundle_dir / "manifest.json").read_text())["onnx_graph"]
    bundle_mb = sum(p.stat().st_size for p in bundle_dir.iterdir()) / 2**20
    print(
        f"bundle: {args.items} x {args.dim}, {bundle_mb:.1f} MiB, built in {time.perf_counter() - t:.1f}s",
        file=sys.stderr,
    )

    moto, endpoint = _start_moto()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "MODELS_BUCKET": "bench-models",
            "MODEL_NAME": "recs",
            "SHELFWISE_ENV": "bench",
            "POWERTOOLS_METRICS_NAMESPACE": "Shelfwise",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    try:
        from shelfwise.aws import reset_clients
        from shelfwise.bundle import upload_bundle

        reset_clients()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench-models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        upload_bundle(s3, bundle_dir, "bench-models", "models/recs/v1")
        boto3.client("ssm").put_parameter(
            Name="/shelfwise/bench/models/recs/champion", Value="v1", Type="String", Overwrite=True
        )

        # 1. the bare kernel on the same item matrix (the baseline), in this process
        kernel, kernel_cpu, served, exact_times = kernel_times(
            bundle_dir, args.items, args.requests, served=True, also=exact_file
        )
        kernel_evicted = kernel_after_eviction(bundle_dir, args.items)
        print(
            f"kernel p50 {statistics.median(kernel):.3f} ms; served graph ({graph_record['graph']}) "
            f"p50 {pct(served, 50):.3f} ms p99 {pct(served, 99):.3f} ms (one thread, top-20)",
            file=sys.stderr,
        )
        ranker_vs_retrieval = (
            ranker_ab(bundle_dir, args.items, args.users, args.requests, history)
            if args.model.endswith("ranker")
            else None
        )
        if ranker_vs_retrieval is not None:
            print(f"ranker A/B {ranker_vs_retrieval}", file=sys.stderr)

        # 4. cold starts: fresh interpreters with an empty /tmp cache (download included), then one
        # with the bundle already cached (an environment re-initialised on the same host)
        paths = lambda_paths(work)
        baseline_import = min(import_seconds(paths) for _ in range(args.cold_runs))
        libraries_import = min(import_seconds(paths, SERVING_LIBRARIES) for _ in range(args.cold_runs))
        boto3_import = min(import_seconds(paths, "boto3") for _ in range(args.cold_runs))
        cold = [cold_start(work / f"cold-cache-{i}", paths) for i in range(args.cold_runs)]
        cold_one_core = [
            cold_start(work / f"cold-cache-1core-{i}", paths, one_core()) for i in range(args.cold_runs)
        ]
        # an environment re-initialised on the same host (bundle cached), which then answers
        # the request mix: the function's own peak RSS, against its configured memory
        replay = work / "replay.json"
        replay.write_text(json.dumps(request_mix(min(args.requests, 2000), args.items, args.users, seed=3)))
        cached = cold_start(work / "cold-cache-0", paths, replay=replay)
        print(f"cold start {[round(c['first_answer_s'], 3) for c in cold]} s", file=sys.stderr)

        # 2. the handler in-process
        app = load_app(work / "cold-cache-0")
        ctx = Context()
        events = request_mix(args.requests, args.items, args.users, history=history)
        handler = handler_times(app, events, ctx)
        handler_ms, handler_cpu = handler.wall_ms, handler.cpu_ms
        print(
            f"handler p50 {statistics.median(handler_ms):.3f} ms, impressions recorded {handler.recorded}",
            file=sys.stderr,
        )

        # 2a. --model *ranker: the handler serving the ranker graph against serving the retrieval
        # graph it wraps, alternating blocks of the same requests
        ranker_handler = (
            graph_ab(app, events, ctx, work / RETRIEVAL_GRAPH, ("ranker", "retrieval"))
            if args.model.endswith("ranker")
            else None
        )
        if ranker_handler is not None:
            print(f"ranker handler A/B {ranker_handler}", file=sys.stderr)

        # 2b. exploration on vs off (5% of slots swapped from the next 30 items), alternating
        # blocks of the same requests so both see the same load
        explore_ab = exploration_ab(app, events, ctx)
        print(f"exploration A/B {explore_ab}", file=sys.stderr)

        # 3. the same requests through the local runtime's HTTP API (loopback socket, payload 2.0)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            http_ms = http_api(app, events[: args.http_requests or max(args.requests // 5, 100)])
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        # bundle + four cold-start caches: about 260 MB per run on a shared disk
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "serve",
        "items": args.items,
        "dim": args.dim,
        "requests": args.requests,
        "model": args.model,
        "session_history_events": history,
        "float16": args.float16,
        "bundle_mb": round(bundle_mb, 1),
        "statuses": handler.statuses,
        "kernel_p50_ms": pct(kernel, 50),
        "kernel_p99_ms": pct(kernel, 99),
        # CPU time of the calling thread (ONNX Runtime runs on it with one intra-op thread): close to
        # the wall time means the kernel computed rather than waited for a core. The matrix is read
        # once per request, so its size over the kernel's time is the memory bandwidth it got.
        "kernel_cpu_p50_ms": pct(kernel_cpu, 50),
        "kernel_after_cache_eviction_p50_ms": kernel_evicted,
        "kernel_matrix_gb_per_s": round(
            args.items * args.dim * 4 / 1e9 / (statistics.median(kernel) / 1000), 1
        ),
        # the bundle's model.onnx alone, one thread, alternating with the kernel (the serving target's figure)
        "served_graph": graph_record["graph"],
        "served_graph_check": graph_record["candidate_check"],
        "served_graph_p50_ms": pct(served, 50),
        "served_graph_p99_ms": pct(served, 99),
        "served_graph_over_kernel_p50": round(statistics.median(served) / statistics.median(kernel), 2),
        # the sequential model's exact graph on the same requests, alternating (A/B of the export)
        **(
            {"exact_graph_p50_ms": pct(exact_times, 50), "exact_graph_p99_ms": pct(exact_times, 99)}
            if exact_times
            else {}
        ),
        # --model ranker: its graph against the plain retrieval graph, alternating, same requests
        "ranker_vs_retrieval": ranker_vs_retrieval,
        # --model *ranker: the same, inside the handler (every route of the request mix)
        "ranker_vs_retrieval_handler": ranker_handler,
        "handler_p50_ms": pct(handler_ms, 50),
        "handler_p95_ms": pct(handler_ms, 95),
        "handler_p99_ms": pct(handler_ms, 99),
        "handler_cpu_p50_ms": pct(handler_cpu, 50),
        "handler_cpu_p99_ms": pct(handler_cpu, 99),
        # CPU per request by kind of request: the model routes run the graph, the other two do not
        "handler_cpu_by_route_ms": {
            route: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99)}
            for route, v in sorted(handler.cpu_by_route.items())
        },
        "handler_rps": round(handler.rps, 1),
        "exploration_ab": explore_ab,
        "handler_over_kernel_p50": round(statistics.median(handler_ms) / statistics.median(kernel), 2),
        "http_p50_ms": pct(http_ms, 50),
        "http_p99_ms": pct(http_ms, 99),
        "cold_start_s": round(min(c["first_answer_s"] for c in cold), 3),
        "cold_start_runs_s": [round(c["first_answer_s"], 3) for c in cold],
        # the same, pinned to one core (the "one core"; Lambda at 1769 MB has one vCPU)
        "cold_start_one_core_s": round(min(c["first_answer_s"] for c in cold_one_core), 3),
        "cold_start_one_core_runs_s": [round(c["first_answer_s"], 3) for c in cold_one_core],
        "cold_start_process_wall_s": round(min(c["process_wall_s"] for c in cold), 3),
        # how long the load waited for the bundle: the download itself starts earlier (prefetch)
        "cold_start_bundle_fetch_s": round(min(c["bundle_fetch_s"] or 0 for c in cold), 3),
        "cold_start_bundle_load_s": round(min(c["bundle_load_s"] or 0 for c in cold), 3),
        "cold_start_first_request_ms": round(min(c["first_request_s"] for c in cold) * 1000, 1),
        "cold_start_first_other_route_ms": round(min(c["first_other_route_s"] for c in cold) * 1000, 1),
        "cold_start_cached_bundle_s": round(cached["first_answer_s"], 3),
        "baseline_import_numpy_onnxruntime_s": round(baseline_import, 3),
        "cold_start_over_baseline_import": round(min(c["first_answer_s"] for c in cold) / baseline_import, 1),
        "baseline_import_serving_libraries_s": round(libraries_import, 3),
        "cold_start_over_serving_libraries": round(
            min(c["first_answer_s"] for c in cold) / libraries_import, 2
        ),
        "reference_import_boto3_s": round(boto3_import, 3),
        "package_mb": package_mb(),
        "rss_mb": peak_rss_mb(),
        # the function's process (bundle cached, init, then the request mix): what Lambda's memory holds
        "function_rss_mb": round(cached["rss_mb"], 1),
        "function_rss_after_first_request_mb": round(cached["rss_after_first_mb"], 1),
        "function_memory_mb": Context.memory_limit_in_mb,
        "recall": _recall(graph_record),
        "index_build_s": (graph_record.get("ann") or {}).get("index_build_s"),
        "export_s": round(export_s, 1),
    }
    emit(result)
    return 0


def _recall(record: dict[str, Any]) -> dict[str, Any] | None:
    """Recall@20 of the exported ANN graph: the sweep's figure at the chosen probe count (validation
    users, random queries; the index's pages alone) and the graph's own check in onnxruntime."""
    info = record.get("ann")
    if not info:
        return None
    probe = info.get("probe")
    out: dict[str, Any] = {"graph": record["graph"], "probe": probe, "pages": info.get("pages")}
    if probe is not None:
        sweep = info["sweep"].get(str(info.get("alpha")), {})
        out.update(alpha=info.get("alpha"), **{f"sweep_{k}": v.get(str(probe)) for k, v in sweep.items()})
    out.update(info.get("check") or {})
    if "rejected" in info:
        out["rejected"] = info["rejected"]
    return out
