"""shelfwise ingest PATH --format auto --out DIR: the ingest on local files, one JSON summary.

PATH is a file or a directory (every file under it, in name order). The output directory is laid
out like the buckets: ``curated/events/event_date=.../``, ``quarantine/``, ``curated/_summaries/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shelfwise.cli.common import command, emit, min_time_ms
from shelfwise.errors import InputError
from shelfwise.events import MIN_TS_MS
from shelfwise.ingest.formats import FORMAT_NAMES
from shelfwise.ingest.pipeline import IngestSummary, ingest_file


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shelfwise ingest", description="Ingest raw event files into curated Parquet, locally."
    )
    p.add_argument("path", help="a raw file (CSV, JSON Lines, Parquet; gzip or not) or a directory of them")
    p.add_argument(
        "--format",
        default="auto",
        choices=(*FORMAT_NAMES, "catalogue"),
        help="source format (default: detect); catalogue: a product catalogue file (docs/catalogue.md)",
    )
    p.add_argument("--out", required=True, help="output directory (bucket-shaped layout)")
    p.add_argument(
        "--pseudonymisation-key-env",
        metavar="VAR",
        help="name of an environment variable holding the key for keyed hashing of user ids",
    )
    p.add_argument(
        "--min-time",
        default=None,
        help="quarantine events and catalogue rows before this ISO date/time (UTC) as out of range "
        "(default: only before 1970)",
    )
    p.add_argument("--force", action="store_true", help="reprocess even if a summary exists")
    return p


def _combine(summaries: list[IngestSummary]) -> dict[str, object]:
    if len(summaries) == 1:
        return summaries[0].to_dict()
    reasons: dict[str, int] = {}
    for s in summaries:
        for k, v in s.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    return {
        "files": len(summaries),
        "rows_read": sum(s.rows_read for s in summaries),
        "rows_valid": sum(s.rows_valid for s in summaries),
        "rows_quarantined": sum(s.rows_quarantined for s in summaries),
        "duplicates": sum(s.duplicates for s in summaries),
        "reasons": reasons,
        "outputs": [o for s in summaries for o in s.outputs],
        "seconds": round(sum(s.seconds for s in summaries), 3),
        "objects": [s.to_dict() for s in summaries],
    }


@command("shelfwise ingest")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    key = None
    if args.pseudonymisation_key_env:
        value = os.environ.get(args.pseudonymisation_key_env)
        if not value:
            raise InputError(f"environment variable {args.pseudonymisation_key_env} is empty")
        key = value.encode("utf-8")
    root = Path(args.path)
    files = (
        sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        if root.is_dir()
        else [root]
    )
    floor = MIN_TS_MS if args.min_time is None else min_time_ms(args.min_time)
    summaries: list[IngestSummary] = []
    for f in files:
        s = ingest_file(f, args.out, args.format, pseudonymisation_key=key, force=args.force, min_ts_ms=floor)
        print(
            f"ingest: {f}: {s.rows_read} read, {s.rows_valid} valid, {s.rows_quarantined} quarantined, "
            f"{s.duplicates} duplicates{' (already done)' if s.skipped else ''}",
            file=sys.stderr,
        )
        for w in s.warnings:
            print(f"ingest: {f}: warning: {w}", file=sys.stderr)
        summaries.append(s)
    if not summaries:
        raise InputError(f"no files under {root}")
    emit(_combine(summaries))
    return 0
