"""shelfwise simulate: write a simulated shop's export files, or print a log's realism figures.

    shelfwise simulate --users 10000 --items 5000 --days 7 --seed 1 --out DIR \\
        [--format native|jsonl|taobao|retailrocket] [--split day|hour] [--incident NAME@DAY ...]
    shelfwise simulate --stats PATH [--stats-format auto]

Progress goes to stderr; the last line on stdout is one JSON object (events, files, seconds,
events_per_s; or the figures for --stats).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

from shelfwise.cli.common import command, emit
from shelfwise.errors import InputError
from shelfwise.simulator.export import FORMATS, SPLITS
from shelfwise.simulator.generate import simulate_to_files
from shelfwise.simulator.params import INCIDENTS, Incident, ShopParams


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="shelfwise simulate",
        description="Write a simulated shop's event files, or print a log's realism figures.",
    )
    ap.add_argument("--users", type=int, default=ShopParams.n_users, help="number of users")
    ap.add_argument("--items", type=int, default=ShopParams.n_items, help="number of catalogue items")
    ap.add_argument("--days", type=int, default=ShopParams.n_days, help="number of simulated days")
    ap.add_argument(
        "--start", type=date.fromisoformat, default=ShopParams.start, help="first day (YYYY-MM-DD)"
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same bytes)")
    ap.add_argument("--out", help="output directory (files go to OUT/events/)")
    ap.add_argument(
        "--format", choices=FORMATS, default="native", help="export format (jsonl = native JSON Lines)"
    )
    ap.add_argument("--split", choices=SPLITS, default="day", help="one file per day or per hour")
    ap.add_argument(
        "--incident",
        action="append",
        default=[],
        metavar="NAME@DAY",
        help=f"switch an incident on at a (fractional) day; NAME in {', '.join(INCIDENTS)}",
    )
    ap.add_argument("--workers", type=int, default=1, help="processes writing days in parallel")
    ap.add_argument(
        "--stats",
        metavar="PATH",
        help="print the realism figures of any ingestible log instead (a file, or a directory such as --out's)",
    )
    ap.add_argument("--stats-format", default="auto", help="source format for --stats (default: detect)")
    return ap


@command("shelfwise simulate")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.stats:
        return _stats(args.stats, args.stats_format)
    if not args.out:
        raise InputError("--out DIR is required (or --stats PATH)")
    params = ShopParams(
        n_users=args.users,
        n_items=args.items,
        n_days=args.days,
        start=args.start,
        incidents=tuple(Incident.parse(s) for s in args.incident),
    )
    print(
        f"simulate: {args.users} users, {args.items} items, {args.days} days, seed {args.seed}, "
        f"{args.format} per {args.split} -> {args.out}",
        file=sys.stderr,
    )
    result = simulate_to_files(
        params, args.seed, args.out, fmt=args.format, split=args.split, workers=max(1, args.workers)
    )
    for rec in result.ground_truth:
        print(f"incident {rec['incident']} from {rec['start']}", file=sys.stderr)
    emit(result.summary())
    return 0


def _stats(path: str, fmt: str) -> int:
    from shelfwise.ingest import read_events
    from shelfwise.simulator.stats import compute_stats

    t0 = time.perf_counter()
    table = read_events(_events_path(Path(path)), fmt=fmt)
    figures = compute_stats(table)
    figures["path"] = path
    figures["seconds"] = round(time.perf_counter() - t0, 3)
    emit(figures)
    return 0


def _events_path(path: Path) -> Path:
    """The event files of ``path``: a directory the simulator wrote holds them under ``events/``
    (next to ``catalogue.parquet``, which is no event log); anything else is read as given."""
    from shelfwise.simulator.generate import CATALOGUE_FILE

    events = path / "events"
    if path.is_dir() and events.is_dir() and (path / CATALOGUE_FILE).exists():
        return events
    return path
