"""`shelfwise bench simulate --events N`: simulate about N events to export files, against a baseline.

The shop is sized from a one-day probe (200k users, 50k items by default) so the run writes about
N events over as many days as it takes. Baseline, same process and run: the bare pyarrow CSV writer
writing already-built tables of the same number of rows (the I/O floor of any exporter). Prints one
JSON line last: events, files, seconds, events_per_s, CPU seconds of every process involved (the
parent, the workers and the fork server they come from; this machine is shared: events per
CPU-second is the steadier figure), baseline_seconds, ratio, peak memory (the parent and the
largest worker), which stays flat in N because every day is made and written alone.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv

from shelfwise.cli.common import plain
from shelfwise.simulator.export import Exporter
from shelfwise.simulator.generate import SimulationResult, simulate_to_files
from shelfwise.simulator.params import ShopParams
from shelfwise.simulator.shop import ShopModel
from shelfwise_local.bench._common import emit, peak_rss_mb


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _children_peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def _proc_cpu_seconds(pid: int) -> float:
    """CPU seconds of a live process that is not our child (the fork server), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_figures(result: SimulationResult) -> tuple[float, float]:
    """CPU seconds and the largest peak RSS of the workers that are not our children: forked by the
    fork server (whose own CPU, its imports, counts too), so ``RUSAGE_CHILDREN`` never sees them."""
    me = os.getpid()
    outside = [w for w in result.workers if w["parent_pid"] != me]
    cpu = sum(w["cpu_seconds"] for w in outside)
    cpu += sum(_proc_cpu_seconds(pid) for pid in {w["parent_pid"] for w in outside})
    return cpu, max((w["peak_rss_mb"] for w in outside), default=0.0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="shelfwise bench simulate", description=plain(__doc__.split("\n")[0]))
    ap.add_argument("--events", type=int, default=10_000_000, help="events to simulate (default 10M)")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--format", default="native", choices=["native", "jsonl", "taobao", "retailrocket"])
    ap.add_argument("--workers", type=int, default=2, help="processes (the target is for 2 cores)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="keep the files here (default: a temporary directory, removed)")
    args = ap.parse_args(argv)

    probe_params = ShopParams(n_users=args.users, n_items=args.items, n_days=14)
    probe = ShopModel(probe_params, args.seed)
    day = probe.day(3)
    days = max(1, math.ceil(args.events / max(1, len(day))))
    # The shop grows (new users arrive over the period): size it from its middle day.
    mid = ShopModel(ShopParams(n_users=args.users, n_items=args.items, n_days=days), args.seed)
    week = [len(mid.day(d)) for d in range(max(0, days // 2 - 3), min(days, days // 2 + 4))]
    per_day = max(1, round(sum(week) / len(week)))
    days = max(1, round(args.events / per_day))
    params = ShopParams(n_users=args.users, n_items=args.items, n_days=days)
    print(f"bench simulate: ~{per_day} events/day -> {days} days, {args.workers} workers", file=sys.stderr)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="shelfwise-bench-sim-"))
    load = os.getloadavg()[0]
    cpu0 = _cpu_seconds()
    try:
        result = simulate_to_files(params, args.seed, out / "sim", fmt=args.format, workers=args.workers)

        worker_cpu, worker_rss = _worker_figures(result)
        cpu = _cpu_seconds() - cpu0 + worker_cpu
        # Baseline: pyarrow's CSV writer alone, on tables already built, for the same number of rows.
        exporter = Exporter(probe, args.format, out / "baseline")
        table = (
            exporter.native_table(day)
            if args.format in ("native", "jsonl")
            else (exporter.taobao_table(day) if args.format == "taobao" else exporter.retailrocket_table(day))
        )
        (out / "baseline").mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        written, i = 0, 0
        while written < result.events:
            part = table.slice(0, min(table.num_rows, result.events - written))
            buf = io.BytesIO()
            pacsv.write_csv(part, buf, pacsv.WriteOptions(quoting_style="none"))
            (out / "baseline" / f"part-{i:04d}.csv").write_bytes(buf.getvalue())
            written += part.num_rows
            i += 1
        baseline = time.perf_counter() - t0
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)

    emit(
        {
            "events": result.events,
            "files": len(result.files),
            "days": days,
            "workers": args.workers,
            "format": args.format,
            "seconds": round(result.seconds, 3),
            "events_per_s": round(result.events_per_s),
            "cpu_seconds": round(cpu, 3),
            "events_per_cpu_s": round(result.events / cpu) if cpu else None,
            "load_average": round(load, 2),
            "baseline_seconds": round(baseline, 3),
            "baseline_events_per_s": round(result.events / baseline) if baseline else None,
            "ratio": round(result.seconds / baseline, 3) if baseline else None,
            "peak_rss_mb": peak_rss_mb(),
            "worker_peak_rss_mb": max(worker_rss, _children_peak_rss_mb()),
        }
    )
    return 0
