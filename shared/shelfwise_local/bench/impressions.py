"""`shelfwise bench impressions --lists N --k K`: the cost of recording a served list, and of ingesting it.

Serving records each served list as one served-list log line on stdout (``ImpressionSink``). This
measures, per list of ``k`` items:

1. ``record()`` into a real pipe drained by another process (as Lambda's stdout is read by the
   runtime's log agent): wall and CPU time per call, p50/p99. Baselines in the same run: writing
   a ready line of the same length (the ``write`` system call alone, the floor) and building the
   same line with ``json.dumps`` (the obvious encoder).
2. The same requests through ``Recommender.recommend`` (a synthetic factor bundle, one ONNX
   thread), alternating blocks of 250 with the sink and without it: the latency the impression
   path adds to a request, p50 and p99 (``--ab-requests 0`` skips it).
3. The ingest of N served-list lines against the same impressions as one JSON row each (the
   row-per-impression alternative), through ``ingest_file``: seconds and rows per second.

Prints figures to stderr and one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shelfwise.cli.common import plain
from shelfwise.served_lists import MARKER_KEY, SERVED_LIST, Served, impression_rows, served_list_line
from shelfwise.serving.impressions import ImpressionSink


def _served(n: int, k: int) -> list[Served]:
    base = 1_709_287_200.0  # 2024-03-01T10:00:00Z
    return [
        (
            f"{i:032x}",
            "challenger" if i % 10 == 0 else "champion",
            "v20240301-120000",
            "user_recommendations",
            k,
            base + i * 0.013,
            [f"sku-{(i * 31 + j * 7) % 100_000:07d}" for j in range(k)],
            [1.0 / (j + 1.5) + (i % 97) * 1e-4 for j in range(k)],
        )
        for i in range(n)
    ]


def _json_dumps_line(served: Served) -> str:
    rec_id, variant, version, endpoint, k, ts, items, scores = served
    doc = {
        MARKER_KEY: SERVED_LIST,
        "schema_version": 1,
        "recommendation_id": rec_id,
        "variant": variant,
        "model_version": version,
        "endpoint": endpoint,
        "k": k,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000Z",
        "items": items,
        "scores": [round(s, 6) for s in scores],
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 4)


def _timed(calls: list[Any]) -> tuple[list[float], list[float]]:
    """Wall and CPU microseconds of each zero-argument call."""
    wall: list[float] = []
    cpu: list[float] = []
    for call in calls:
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        call()
        cpu.append((time.thread_time_ns() - c) / 1000)
        wall.append((time.perf_counter_ns() - t) / 1000)
    return wall, cpu


def _record_costs(served: list[Served]) -> dict[str, Any]:
    # A pipe read by another process, like Lambda's stdout; line-buffered text, one write per line.
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    stream = open(reader.stdin.fileno(), "w", buffering=1, closefd=False)  # noqa: SIM115
    sink = ImpressionSink(stream)
    lines = [served_list_line(s) for s in served]
    results: dict[str, Any] = {}
    try:
        for s in served[:500]:  # warm-up
            sink.record(s)
        # Interleave the three in blocks, so load changes hit them alike.
        parts: dict[str, tuple[list[float], list[float]]] = {
            "record": ([], []),
            "write": ([], []),
            "dumps": ([], []),
        }
        for start in range(0, len(served), 500):
            block = served[start : start + 500]
            ready = lines[start : start + 500]
            for name, calls in (
                ("record", [lambda s=s: sink.record(s) for s in block]),
                ("write", [lambda line=line: stream.write(line) for line in ready]),
                ("dumps", [lambda s=s: stream.write(_json_dumps_line(s)) for s in block]),
            ):
                wall, cpu = _timed(calls)
                parts[name][0].extend(wall)
                parts[name][1].extend(cpu)
        for name, (wall, cpu) in parts.items():
            results[name] = {
                "wall_p50_us": _pct(wall, 50),
                "wall_p99_us": _pct(wall, 99),
                "cpu_p50_us": _pct(cpu, 50),
                "cpu_p99_us": _pct(cpu, 99),
            }
        results["line_bytes"] = round(statistics.mean(len(line) for line in lines), 1)
        results["recorded"], results["dropped"] = sink.recorded, sink.dropped
    finally:
        stream.close()
        reader.stdin.close()
        reader.wait(timeout=30)
    return results


def _ingest_costs(served: list[Served], work: Path) -> dict[str, Any]:
    from shelfwise.ingest import ingest_file

    rows_file = work / "rows.jsonl"
    lists_file = work / "lists.jsonl"
    with open(rows_file, "w") as f:
        for s in served:
            f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in impression_rows(s))
    with open(lists_file, "w") as f:
        f.writelines(served_list_line(s) for s in served)
    out: dict[str, Any] = {}
    for name, path in (("rows", rows_file), ("served_lists", lists_file)):
        t = time.perf_counter()
        summary = ingest_file(path, work / f"out-{name}")
        seconds = time.perf_counter() - t
        out[name] = {
            "seconds": round(seconds, 3),
            "rows_valid": summary.rows_valid,
            "rows_per_s": round(summary.rows_valid / seconds),
            "mb": round(path.stat().st_size / 2**20, 1),
        }
    return out


def _recommend_ab(requests: int, items: int, dim: int, k: int, work: Path) -> dict[str, Any]:
    """recommend() latency with and without the sink, alternating blocks in one process."""
    import shutil

    from shelfwise.registry import Aliases
    from shelfwise.serving import ModelLoader, Recommender, ServingConfig
    from shelfwise_local.bench.serve import build_synthetic_bundle

    remote = build_synthetic_bundle(work / "remote" / "v1", n_items=items, dim=dim, n_users=2000)

    def fetch(version: str, directory: Path) -> Path:
        if not directory.exists():
            shutil.copytree(remote, directory)
        return directory

    config = ServingConfig(model_name="recs", cache_dir=str(work / "cache"), alias_ttl_seconds=3600)
    loader = ModelLoader(None, "bucket", "recs", config.cache_dir, fetch=fetch)
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    stream = open(reader.stdin.fileno(), "w", buffering=1, closefd=False)  # noqa: SIM115
    sink = ImpressionSink(stream)
    rec = Recommender(config, loader, lambda: Aliases(champion="v1"), sink, background=False)
    rec.start()
    users = [f"user-{i % 2000:06d}" for i in range(requests)]
    times: dict[str, tuple[list[float], list[float]]] = {"with": ([], []), "without": ([], [])}
    try:
        for u in users[:200]:  # warm-up
            rec.recommend(user_id=u, k=k)
        for block, start in enumerate(range(0, requests, 250)):
            name = "with" if block % 2 == 0 else "without"
            rec.impressions = sink if name == "with" else None
            wall, cpu = _timed(
                [lambda u=u: rec.recommend(user_id=u, k=k) for u in users[start : start + 250]]
            )
            times[name][0].extend(us / 1000 for us in wall)
            times[name][1].extend(us / 1000 for us in cpu)
    finally:
        stream.close()
        reader.stdin.close()
        reader.wait(timeout=30)
    out: dict[str, Any] = {"items": items, "dim": dim, "requests": requests}
    for name, (wall, cpu) in times.items():
        out[name] = {
            "p50_ms": _pct(wall, 50),
            "p99_ms": _pct(wall, 99),
            "cpu_p50_ms": _pct(cpu, 50),
            "cpu_p99_ms": _pct(cpu, 99),
        }
    out["p50_delta_ms"] = round(out["with"]["p50_ms"] - out["without"]["p50_ms"], 4)
    out["p99_delta_ms"] = round(out["with"]["p99_ms"] - out["without"]["p99_ms"], 4)
    out["cpu_p50_delta_ms"] = round(out["with"]["cpu_p50_ms"] - out["without"]["cpu_p50_ms"], 4)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench impressions", description=plain(__doc__))
    p.add_argument("--lists", type=int, default=20_000, help="served lists to record")
    p.add_argument("--k", type=int, default=20, help="items per served list")
    p.add_argument(
        "--ingest-lists", type=int, default=20_000, help="served lists for the ingest part (0: skip)"
    )
    p.add_argument("--ab-requests", type=int, default=4000, help="recommend() calls for the A/B (0: skip)")
    p.add_argument("--ab-items", type=int, default=100_000, help="items of the A/B's synthetic bundle")
    p.add_argument("--ab-dim", type=int, default=64, help="factor dimension of the A/B's bundle")
    args = p.parse_args(argv)
    served = _served(args.lists, args.k)
    load = os.getloadavg()[0]
    record = _record_costs(served)
    for name in ("record", "write", "dumps"):
        r = record[name]
        print(
            f"{name:>6}: CPU p50 {r['cpu_p50_us']:.1f} us p99 {r['cpu_p99_us']:.1f} us, "
            f"wall p50 {r['wall_p50_us']:.1f} us p99 {r['wall_p99_us']:.1f} us",
            file=sys.stderr,
        )
    ab: dict[str, Any] = {}
    if args.ab_requests:
        with tempfile.TemporaryDirectory(prefix="bench-impressions-ab-") as tmp:
            ab = _recommend_ab(args.ab_requests, args.ab_items, args.ab_dim, args.k, Path(tmp))
        for name in ("with", "without"):
            r = ab[name]
            print(
                f"recommend() {name:>7} sink: p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms "
                f"(CPU p50 {r['cpu_p50_ms']:.3f} p99 {r['cpu_p99_ms']:.3f})",
                file=sys.stderr,
            )
    ingest: dict[str, Any] = {}
    if args.ingest_lists:
        with tempfile.TemporaryDirectory(prefix="bench-impressions-") as tmp:
            ingest = _ingest_costs(_served(args.ingest_lists, args.k), Path(tmp))
        for name, r in ingest.items():
            print(f"ingest {name}: {r['seconds']} s, {r['rows_per_s']} rows/s, {r['mb']} MB", file=sys.stderr)
    result = {
        "benchmark": "impressions",
        "lists": args.lists,
        "k": args.k,
        "load_1m": round(load, 2),
        "line_bytes": record["line_bytes"],
        "record_cpu_p50_us": record["record"]["cpu_p50_us"],
        "record_cpu_p99_us": record["record"]["cpu_p99_us"],
        "record_wall_p50_us": record["record"]["wall_p50_us"],
        "record_wall_p99_us": record["record"]["wall_p99_us"],
        "write_only_cpu_p50_us": record["write"]["cpu_p50_us"],
        "json_dumps_cpu_p50_us": record["dumps"]["cpu_p50_us"],
        "recommend_ab": ab,
        "ingest": ingest,
    }
    print(json.dumps(result), flush=True)
    return 0
