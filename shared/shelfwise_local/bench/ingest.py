"""`shelfwise bench ingest --rows N`: full ingest vs bare pyarrow read_csv + write_table, same file.

Generates a native-format CSV (streamed, in a child process) with realistic noise: ~1% repeated
events (client retries), ~0.2% bad rows (an unknown event type), 10% searches without an item,
30% anonymous rows; ``--days`` spreads the events (default one day: a daily export).
Runs the full ingest, then the baseline, alternately ``--repeat`` times in the same process and
reports the medians and their ratio. Peak RSS is read after the first ingest, before any baseline
run (the baseline reads the whole file into memory). Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from shelfwise.cli.common import plain
from shelfwise_local.bench._common import emit, peak_rss_mb

TYPES = np.array(
    ["view", "view", "view", "view", "click", "click", "add_to_cart", "purchase", "search", "impression"]
)
CHUNK = 200_000


def generate(path: Path, rows: int, seed: int = 7, session_ids: bool = True, days: int = 1) -> None:
    """A raw native CSV of ``rows`` events over ``days`` days, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    t0 = 1_759_968_000_000  # 2025-10-09T00:00:00Z
    span = days * 86_400_000
    writer: pcsv.CSVWriter | None = None
    written = 0
    try:
        while written < rows:
            n = min(CHUNK, rows - written)
            ids = np.arange(written, written + n, dtype=np.uint64)
            # ~1% of rows repeat an earlier id of the same chunk (retried deliveries).
            repeat = rng.random(n) < 0.01
            ids[repeat] = ids[repeat] - rng.integers(1, 1000, repeat.sum()).astype(np.uint64).clip(
                0, ids[repeat]
            )
            ts = t0 + np.sort(rng.integers(written * span // rows, (written + n) * span // rows, n))
            ev = TYPES[rng.integers(0, len(TYPES), n)]
            user = rng.integers(0, 200_000, n)
            logged_in = rng.random(n) < 0.7
            item = rng.integers(0, 50_000, n)
            ts_text = pc_iso(ts)
            cols = {
                "event_id": pa.array(np.char.add("e", np.char.zfill(ids.astype(str), 15))),
                "event_type": pa.array(ev),
                "user_id": pa.array(np.char.add("user", user.astype(str)), mask=~logged_in),
                "session_id": pa.array(np.char.add("s", (user * 31 + ts // 3_600_000).astype(str))),
                "item_id": pa.array(np.char.add("sku", item.astype(str)), mask=ev == "search"),
                "timestamp": ts_text,
                "price": pa.array(np.round(rng.gamma(2.0, 15.0, n), 2)),
                "quantity": pa.array(rng.integers(1, 4, n).astype(np.float64)),
                "query": pa.array(np.where(ev == "search", "red mug", None)),
            }
            if not session_ids:
                cols["session_id"] = pa.array(
                    np.where(logged_in, None, cols["session_id"].to_numpy(zero_copy_only=False))
                )
            table = pa.table(cols)
            bad = rng.random(n) < 0.002
            if bad.any():
                et = np.asarray(table.column("event_type").to_pylist(), dtype=object)
                et[bad] = "teleport"
                table = table.set_column(1, "event_type", pa.array(et.tolist(), pa.string()))
            if writer is None:
                writer = pcsv.CSVWriter(
                    str(path), table.schema, write_options=pcsv.WriteOptions(quoting_style="needed")
                )
            writer.write_table(table)
            written += n
    finally:
        if writer is not None:
            writer.close()


def pc_iso(ts_ms: np.ndarray) -> pa.Array:
    """ISO 8601 text with milliseconds and a Z (``2025-10-09 08:53:20.000Z``)."""
    return pa.array(ts_ms, pa.timestamp("ms", tz="UTC")).cast(pa.string())


def baseline(path: Path, out: Path) -> float:
    started = time.perf_counter()
    table = pcsv.read_csv(str(path))
    pq.write_table(table, str(out))
    seconds = time.perf_counter() - started
    del table
    return seconds


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench ingest", description=plain(__doc__.splitlines()[0]))
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated CSV (default 1M)")
    p.add_argument("--no-session-ids", action="store_true", help="logged-in users' rows lack session_id")
    p.add_argument("--days", type=int, default=1, help="days the events span (1: a daily export)")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="ingest/baseline pairs; medians reported (shared machines are noisy)",
    )
    p.add_argument("--pseudonymise", action="store_true", help="keyed hashing of user ids on")
    p.add_argument("--keep", metavar="DIR", help="generate into DIR and keep the files")
    args = p.parse_args(argv)
    from shelfwise.ingest import ingest_file

    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        raw = root / f"events-{args.rows}.csv"
        started = time.perf_counter()
        # Generate in a child process, so its memory does not count towards the ingest's peak RSS.
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(
            target=generate,
            args=(raw, args.rows),
            kwargs={"session_ids": not args.no_session_ids, "days": args.days},
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            print("bench ingest: generating the raw file failed", file=sys.stderr)
            return 1
        print(
            f"bench ingest: generated {raw.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        gc.collect()
        rss_before = peak_rss_mb()
        key = b"bench-key" if args.pseudonymise else None
        runs: list[float] = []
        bases: list[float] = []
        rss = rss_before
        for i in range(args.repeat):
            started = time.perf_counter()
            summary = ingest_file(raw, root / "out", pseudonymisation_key=key, force=True)
            runs.append(time.perf_counter() - started)
            if i == 0:
                rss = peak_rss_mb()  # before any baseline run, which reads the whole file
            print(
                f"bench ingest: ingest {runs[-1]:.2f}s: {summary.rows_valid} valid, "
                f"{summary.rows_quarantined} quarantined, {summary.duplicates} duplicates, "
                f"{len(summary.outputs)} files",
                file=sys.stderr,
            )
            gc.collect()
            bases.append(baseline(raw, root / "baseline.parquet"))
            print(f"bench ingest: baseline {bases[-1]:.2f}s", file=sys.stderr)
            gc.collect()
    seconds, base = statistics.median(runs), statistics.median(bases)
    emit(
        {
            "rows": summary.rows_read,
            "seconds": round(seconds, 3),
            "rows_per_s": round(summary.rows_read / seconds),
            "baseline_seconds": round(base, 3),
            "baseline_rows_per_s": round(summary.rows_read / base),
            "ratio": round(seconds / base, 3),
            "ratio_of_best": round(min(runs) / min(bases), 3),
            "repeat": args.repeat,
            "peak_rss_mb": rss,
            "rss_before_ingest_mb": rss_before,
            "rows_valid": summary.rows_valid,
            "rows_quarantined": summary.rows_quarantined,
            "duplicates": summary.duplicates,
            "sessions_derived": summary.sessions_derived,
            "partitions": len(summary.event_dates),
        }
    )
    return 0
