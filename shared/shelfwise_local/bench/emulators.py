"""`shelfwise bench emulators`: start time, memory and per-call latency of moto server vs LocalStack.

Both emulators are measured in the same run, moto first as the baseline; the JSON line last
reports each figure and LocalStack's ratio to moto. Moto runs embedded (in this process, as the
runtime uses it); LocalStack 4.14 is started in host mode with infra/localstack/start.sh on a free
port (or ``--localstack-endpoint`` uses a running one, without start figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from shelfwise.cli.common import plain
from shelfwise_local.bench._common import emit, peak_rss_mb
from shelfwise_local.runtime.emulator import Emulator, free_port

REPO = Path(__file__).resolve().parents[3]


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return round(total / 1024, 1)


def _clients(url: str) -> tuple[Any, Any]:
    kw: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": "eu-west-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "config": Config(retries={"mode": "standard", "max_attempts": 2}, s3={"addressing_style": "path"}),
    }
    session = boto3.session.Session()
    return session.client("s3", **kw), session.client("cloudwatch", **kw)


def _latencies(url: str, calls: int) -> dict[str, Any]:
    """Median and p95 (ms) of S3 PutObject (1 KiB) and PutMetricData (one datum), after warm-up."""
    s3, cw = _clients(url)
    bucket = f"bench-{int(time.time() * 1000)}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    body = os.urandom(1024)
    out: dict[str, Any] = {}
    for name, call in {
        "s3_put": lambda i: s3.put_object(Bucket=bucket, Key=f"k/{i}", Body=body),
        "put_metric_data": lambda i: cw.put_metric_data(
            Namespace="Bench",
            MetricData=[
                {
                    "MetricName": "Latency",
                    "Dimensions": [{"Name": "Variant", "Value": "champion"}],
                    "Timestamp": datetime.now(tz=UTC),
                    "Value": float(i),
                    "Unit": "Milliseconds",
                }
            ],
        ),
    }.items():
        for i in range(10):
            call(-i - 1)
        times = []
        for i in range(calls):
            t0 = time.perf_counter()
            call(i)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[f"{name}_median_ms"] = round(statistics.median(times), 2)
        out[f"{name}_p95_ms"] = round(times[int(0.95 * (len(times) - 1))], 2)
    return out


def _moto(calls: int) -> dict[str, Any]:
    rss0 = _rss_mb(os.getpid())
    t0 = time.perf_counter()
    emulator = Emulator.start_moto()
    s3, _ = _clients(emulator.endpoint_url)
    s3.list_buckets()  # first request loads moto's backends: count it as start-up
    start_s = time.perf_counter() - t0
    try:
        figures = {"start_s": round(start_s, 2), **_latencies(emulator.endpoint_url, calls)}
        figures["rss_mb"] = round(_rss_mb(os.getpid()) - rss0, 1)  # what embedding moto added
    finally:
        emulator.stop()
    return figures


def _localstack(calls: int, endpoint: str | None) -> dict[str, Any]:
    if endpoint:
        Emulator.connect(endpoint)
        return {"start_s": None, "rss_mb": None, **_latencies(endpoint, calls)}
    port = free_port()
    t0 = time.perf_counter()
    subprocess.run(["bash", str(REPO / "infra/localstack/setup.sh")], check=True, capture_output=True)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(REPO / "infra/localstack/start.sh"), str(port)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"LocalStack did not start:\n{proc.stderr}")
    url = proc.stdout.strip().splitlines()[-1]
    s3, _ = _clients(url)
    s3.list_buckets()
    start_s = time.perf_counter() - t0
    try:
        pid = int((REPO / ".localstack" / str(port) / "pid").read_text())
        figures = {"start_s": round(start_s, 2), "venv_setup_s": round(setup_s, 2)}
        figures.update(_latencies(url, calls))
        figures["rss_mb"] = _rss_mb(pid)
    finally:
        subprocess.run(["bash", str(REPO / "infra/localstack/stop.sh"), str(port)], capture_output=True)
    return figures


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench emulators", description=plain(__doc__.splitlines()[0]))
    p.add_argument("--calls", type=int, default=200, help="timed calls per operation (default 200)")
    p.add_argument("--skip-localstack", action="store_true", help="measure moto only")
    p.add_argument("--localstack-endpoint", help="measure a running LocalStack instead of starting one")
    args = p.parse_args(argv)

    result: dict[str, Any] = {"benchmark": "emulators", "calls": args.calls}
    print("bench emulators: moto (embedded) ...", file=sys.stderr)
    result["moto"] = _moto(args.calls)
    if not args.skip_localstack:
        print("bench emulators: LocalStack 4.14 (host mode) ...", file=sys.stderr)
        result["localstack"] = ls = _localstack(args.calls, args.localstack_endpoint)
        result["localstack_vs_moto"] = {
            k: round(ls[k] / v, 2)
            for k, v in result["moto"].items()
            if isinstance(ls.get(k), float | int) and v
        }
    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)
    return 0
