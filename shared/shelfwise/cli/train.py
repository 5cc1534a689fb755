"""shelfwise train and shelfwise evaluate: the training job and the offline protocol from a terminal.

Progress goes to stderr for a person; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from shelfwise import bots
from shelfwise.cli.common import command, emit, read_table
from shelfwise.errors import InputError
from shelfwise.training.guard import FamilyOverride
from shelfwise.training.job import (
    Progress,
    TrainConfig,
    evaluate_log,
    load_bot_flags,
    load_catalogue,
    load_curated,
    run_training,
    summary,
)
from shelfwise.training.search import ALL_FAMILIES, BASELINE_FAMILIES, OPTIONAL_FAMILIES, parse_families


def _config(args: argparse.Namespace) -> TrainConfig:
    families = parse_families(args.families, args.extra_families)
    return TrainConfig(
        model_name=getattr(args, "model_name", "recs"),
        k=args.k,
        search=args.search,
        families=families,
        primary_metric=f"ndcg@{args.k}",
        threads=args.threads,
        float16=getattr(args, "float16", False),
        code_version=_code_version(),
        override=_override(args),
    )


def _override(args: argparse.Namespace) -> FamilyOverride | None:
    """``--family`` (and its reason, ``--past-gate``): an operator's override of the guarded selection."""
    family = getattr(args, "family", None)
    if not family:
        if getattr(args, "past_gate", False) or getattr(args, "override_reason", None):
            raise InputError("--past-gate and --override-reason go with --family")
        return None
    return FamilyOverride(family, reason=args.override_reason or "", past_gate=bool(args.past_gate))


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shelfwise")
    except PackageNotFoundError:
        return "unknown"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=10, help="list length for the metrics (default 10)")
    p.add_argument(
        "--search", choices=("none", "small", "full"), default="small", help="hyper-parameter grid"
    )
    p.add_argument(
        "--families",
        default="",
        help=f"comma-separated families of {','.join(ALL_FAMILIES)} (default: all but "
        f"{','.join(OPTIONAL_FAMILIES)}; {' and '.join(BASELINE_FAMILIES)} are always added)",
    )
    p.add_argument(
        "--extra-families",
        default="",
        help="comma-separated families added to --families or to the default ones, e.g. "
        f"{OPTIONAL_FAMILIES[0]} (the stack's TrainingFamilies parameter)",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="threads for ALS, neighbour tables and evaluation (default 2)"
    )
    p.add_argument(
        "--min-time",
        default=None,
        help="drop events before this ISO date/time (UTC) as out of range (default: only before 1970)",
    )


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shelfwise evaluate", description="The offline evaluation protocol on any event log."
    )
    p.add_argument("--events", required=True, help="event log (file) in any format the ingest reads")
    p.add_argument(
        "--format", default="auto", help="source format (auto, native, retailrocket, ..., curated)"
    )
    _common(p)
    return p


@command("shelfwise evaluate")
def evaluate_main(argv: list[str]) -> int:
    """shelfwise evaluate --events PATH --format FMT [--k 10].

    With ``--off-policy --candidate BUNDLE``: off-policy estimates on a served-list log instead
    (``shelfwise.cli.offpolicy``)."""
    if "--off-policy" in argv:
        from shelfwise.cli.offpolicy import main as off_policy_main

        return off_policy_main(argv)
    args = evaluate_parser().parse_args(argv)
    from shelfwise.training.data import interactions_from_table

    progress = Progress()
    table = read_table(args.events, args.format, args.min_time)
    data = interactions_from_table(table)
    progress("load", {"events": data.n_events, "users": data.n_users, "items": data.n_items})
    ev = evaluate_log(data, replace(_config(args), in_session=True), progress, table)
    result = ev.to_json()
    result["validation"] = {f: v["params"] for f, v in ev.validation.items()}
    emit(result)
    return 0


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shelfwise train",
        description="Train, evaluate and export a model bundle; optionally register it.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", help="local event log in any format the ingest reads")
    src.add_argument("--curated-bucket", help="read curated Parquet from this bucket (curated/events/)")
    p.add_argument("--format", default="auto", help="source format of --events (or 'curated')")
    p.add_argument("--since", default=None, help="only curated partitions with event_date >= YYYY-MM-DD")
    p.add_argument("--out", default=None, help="bundle directory (default: a temporary directory)")
    p.add_argument("--register", action="store_true", help="register the bundle in the model registry")
    p.add_argument("--models-bucket", default=os.environ.get("MODELS_BUCKET"), help="env MODELS_BUCKET")
    p.add_argument("--env", default=os.environ.get("SHELFWISE_ENV", "dev"), help="env SHELFWISE_ENV (dev)")
    p.add_argument("--model-name", default=os.environ.get("MODEL_NAME", "recs"), help="env MODEL_NAME (recs)")
    p.add_argument(
        "--version",
        default=os.environ.get("TRAINING_VERSION") or None,
        help="version id (default v<UTC time>-<data hash>). With --register, a version already "
        "registered is answered with, not trained again (a retried scheduled run; env TRAINING_VERSION)",
    )
    p.add_argument(
        "--as-of",
        default=os.environ.get("TRAINING_AS_OF") or None,
        help="ISO 8601 instant the run is for: the bundle's created_at and the default version's "
        "time (default now; a scheduled run's Batch job gets its scheduled time, env TRAINING_AS_OF)",
    )
    p.add_argument("--float16", action="store_true", help="store ALS item factors in float16")
    p.add_argument("--gate-tolerance", type=float, default=0.02, help="relative loss allowed vs champion")
    p.add_argument(
        "--ope-min-lists",
        type=int,
        default=None,
        help="with --register: logged lists the gate's off-policy half needs (default 1000)",
    )
    p.add_argument(
        "--ope-min-ess",
        type=float,
        default=None,
        help="with --register: effective sample size the off-policy half needs (default 200)",
    )
    p.add_argument(
        "--catalogue",
        default=None,
        help="a catalogue snapshot (Parquet) for titles, categories, prices and stock "
        "(default with --curated-bucket: the bucket's latest snapshot)",
    )
    # An operator's override (the Batch job takes it from its environment: containerOverrides).
    p.add_argument(
        "--family",
        default=os.environ.get("TRAINING_OVERRIDE_FAMILY") or None,
        help="serve this family whatever the guarded selection picks (trained if optional); the "
        "manifest records the override and what the guard would have served. The offline gate "
        "still applies (env TRAINING_OVERRIDE_FAMILY)",
    )
    p.add_argument(
        "--override-reason",
        default=os.environ.get("TRAINING_OVERRIDE_REASON") or None,
        help="why, for the manifest and the audit trail (env TRAINING_OVERRIDE_REASON)",
    )
    p.add_argument(
        "--past-gate",
        action="store_true",
        default=os.environ.get("TRAINING_OVERRIDE_PAST_GATE", "").lower() in {"1", "true", "yes"},
        help="with --family: offer it for canary even when it loses to ItemKNN or the champion "
        "offline (recorded as waived), never when it loses to popularity (env TRAINING_OVERRIDE_PAST_GATE)",
    )
    p.add_argument(
        "--report-progress",
        action="store_true",
        help="also send every step as an EventBridge TrainingProgress event and CloudWatch metrics "
        "(what the Batch job does, so its progress reaches operators like the Lambda's)",
    )
    _common(p)
    return p


@command("shelfwise train")
def train_main(argv: list[str]) -> int:
    """shelfwise train: train, evaluate, export a bundle and optionally register it."""
    args = train_parser().parse_args(argv)
    from shelfwise import aws

    registry = _registry(args)
    if registry is not None and args.version and registry.exists(args.version):
        # a retried scheduled run whose version an earlier attempt registered: that is the answer
        registration = registry.resume_registration(args.version)
        print(f"shelfwise train: {args.version} is already registered; not trained again", file=sys.stderr)
        emit({"version": args.version, "already_registered": True, "registration": registration.to_json()})
        return 0
    progress = Progress()
    if args.report_progress:
        from shelfwise.training.progress import cloudwatch_metric_sink, event_sink

        # AWS Batch sets AWS_BATCH_JOB_ID in every job's container.
        runner = "batch" if os.environ.get("AWS_BATCH_JOB_ID") else "cli"
        progress.sinks += [
            event_sink(aws.client("events"), args.model_name, runner),
            cloudwatch_metric_sink(aws.client("cloudwatch"), runner),
        ]
    try:
        # the champion's bundle for the off-policy gate is scratch: gone when the run ends
        with tempfile.TemporaryDirectory(prefix="shelfwise-ope-") as scratch:
            result = _train(args, registry, progress, Path(scratch))
    except Exception as exc:
        progress("failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    from shelfwise.training.progress import finish_fields

    progress("done", finish_fields(result))
    emit(summary(result))
    return 0


def _registry(args: argparse.Namespace) -> Any:
    """The registry ``--register`` registers in (None without it)."""
    if not args.register:
        return None
    from shelfwise import wiring

    if not args.models_bucket:
        raise InputError("--register needs --models-bucket (or MODELS_BUCKET)")
    return wiring.registry(
        wiring.RegistrySettings(
            models_bucket=args.models_bucket, shelfwise_env=args.env, model_name=args.model_name
        ),
        gate_tolerance=args.gate_tolerance,
        actor="shelfwise-train-cli",
    )


def _as_of(raw: str | None) -> datetime:
    """``--as-of`` as an aware instant (UTC when it names no zone); now without it."""
    from datetime import UTC

    from shelfwise.instants import aware_time

    return aware_time(raw, "--as-of") if raw else datetime.now(UTC)


def _train(args: argparse.Namespace, registry: Any, progress: Progress, scratch: Path) -> Any:
    """The run behind ``shelfwise train``: read the events (and catalogue), train, register when asked."""
    from shelfwise import aws

    now = _as_of(args.as_of)
    catalogue = None
    flagged: dict[str, str] = {}
    if args.events:
        table = read_table(args.events, args.format, args.min_time)
        flags_dir = Path(args.events) / bots.FLAGS_PREFIX
        if flags_dir.is_dir():  # an ingest output directory: the ingest's bot decisions too
            import pyarrow.parquet as pq

            flagged = bots.read_flags(pq.read_table(p) for p in sorted(flags_dir.glob("*.parquet")))
    else:
        table = load_curated(aws.client("s3"), args.curated_bucket, since=args.since)
        catalogue = load_catalogue(aws.client("s3"), args.curated_bucket)
        flagged = load_bot_flags(aws.client("s3"), args.curated_bucket)
    if args.catalogue:
        import pyarrow.parquet as pq

        catalogue = pq.read_table(args.catalogue)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="shelfwise-bundle-"))
    off_policy = None
    if registry is not None:
        # The same gate as the scheduled job: the off-policy half when the champion's lists explored.
        from shelfwise.offpolicy import OpeConfig
        from shelfwise.offpolicy_gate import registration_off_policy_check

        if (args.ope_min_lists is not None and args.ope_min_lists < 1) or (
            args.ope_min_ess is not None and not args.ope_min_ess > 0
        ):
            raise InputError("--ope-min-lists and --ope-min-ess must be positive")
        ope = OpeConfig()
        if args.ope_min_lists is not None:
            ope = replace(ope, min_lists=args.ope_min_lists)
        if args.ope_min_ess is not None:
            ope = replace(ope, min_ess=args.ope_min_ess)
        off_policy = registration_off_policy_check(
            table,
            registry,
            scratch,
            ope,
            warn=lambda why: print(f"shelfwise train: {why}; the metric gate decides alone", file=sys.stderr),
        )
    return run_training(
        table,
        out,
        _config(args),
        registry=registry,
        version=args.version,
        progress=progress,
        now=now,
        catalogue=catalogue,
        flagged_bots=flagged,
        off_policy=off_policy,
    )
