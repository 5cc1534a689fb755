"""shelfwise models: the registry for operators, against AWS or the local emulator alike.

    shelfwise models list
    shelfwise models show VERSION
    shelfwise models promote [VERSION] [--force]
    shelfwise models rollback --reason TEXT
    shelfwise models canary VERSION --weight 0.1
    shelfwise models weight 0.5
    shelfwise models history
    shelfwise models served --user USER --at 2026-11-28T12:00:00Z [--curated-bucket B]

The endpoint comes from boto3's own AWS_ENDPOINT_URL; the bucket from --bucket or MODELS_BUCKET.
``served`` answers from the recorded served lists in the curated bucket (--curated-bucket or
CURATED_BUCKET): what was actually served, fallbacks included, not a replay of the routing rule.
The last line on stdout is JSON; a readable summary goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from shelfwise import wiring
from shelfwise.cli.common import command, emit
from shelfwise.errors import InputError
from shelfwise.instants import aware_time
from shelfwise.registry import Registry


def _registry(args: argparse.Namespace) -> Registry:
    return wiring.registry(
        wiring.RegistrySettings(
            models_bucket=args.bucket, shelfwise_env=args.env, model_name=args.model_name
        ),
        actor=os.environ.get("USER", "operator") + "@shelfwise-cli",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shelfwise models", description="Model registry operations for operators."
    )
    p.add_argument(
        "--bucket", default=os.environ.get("MODELS_BUCKET"), help="models bucket (env MODELS_BUCKET)"
    )
    p.add_argument(
        "--env", default=os.environ.get("SHELFWISE_ENV", "dev"), help="environment (env SHELFWISE_ENV)"
    )
    p.add_argument(
        "--model-name", default=os.environ.get("MODEL_NAME", "recs"), help="model (env MODEL_NAME)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="committed versions with gate outcome and role")
    show = sub.add_parser("show", help="manifest summary and registration of one version")
    show.add_argument("version", help="the version id")
    promote = sub.add_parser("promote", help="make VERSION (default: the challenger) champion")
    promote.add_argument("version", nargs="?", help="the version id (default: the challenger)")
    promote.add_argument("--force", action="store_true", help="promote even if the offline gate failed")
    rollback = sub.add_parser("rollback", help="stop the canary, else restore the previous champion")
    rollback.add_argument("--reason", default="operator rollback", help="recorded in the audit trail")
    canary = sub.add_parser("canary", help="start a canary of VERSION")
    canary.add_argument("version", help="the version id")
    canary.add_argument("--weight", type=float, default=0.1, help="traffic share, 0 to 1 (default 0.1)")
    canary.add_argument("--force", action="store_true", help="start even if the offline gate failed")
    weight = sub.add_parser("weight", help="set the challenger's traffic share")
    weight.add_argument("weight", type=float, help="traffic share, 0 to 1")
    sub.add_parser("history", help="the audit trail")
    served = sub.add_parser("served", help="what a user was served up to a time (recorded served lists)")
    served.add_argument("--user", required=True, help="user id (or session id of an anonymous shopper)")
    served.add_argument("--at", required=True, help="ISO time with zone, e.g. 2026-11-28T12:00:00Z")
    served.add_argument(
        "--curated-bucket", default=os.environ.get("CURATED_BUCKET"), help="env CURATED_BUCKET"
    )
    served.add_argument("--days", type=int, default=2, help="days of lists to search back (default 2)")
    served.add_argument("--limit", type=int, default=10, help="at most this many lists (default 10)")
    return p


def _show(reg: Registry, version: str) -> dict[str, Any]:
    manifest = reg.manifest(version)
    ev = manifest.get("evaluation", {})
    return {
        "version": version,
        "algorithm": manifest.get("algorithm"),
        "hyperparameters": manifest.get("hyperparameters"),
        "training_window": manifest.get("training_window"),
        "created_at": manifest.get("created_at"),
        "code_version": manifest.get("code_version"),
        "best": ev.get("best"),
        "metrics": {
            name: {m: v for m, v in metrics.items() if m != "segments"}
            for name, metrics in (ev.get("models") or {}).items()
        },
        "registration": reg.registration(version),
        "aliases": reg.aliases().to_json(),
    }


@command("shelfwise models")
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not args.bucket:
        raise InputError("--bucket (or MODELS_BUCKET) is required")
    reg = _registry(args)
    result: Any
    if args.command == "list":
        result = {"aliases": reg.aliases().to_json(), "versions": reg.versions()}
        for v in result["versions"]:
            print(
                f"{v['version']:<32} {v['role'] or '':<10} offered={v['offered_for_canary']} "
                f"{v['registered_at']}",
                file=sys.stderr,
            )
    elif args.command == "show":
        result = _show(reg, args.version)
    elif args.command == "promote":
        result = reg.promote(args.version, force=args.force).to_json()
    elif args.command == "rollback":
        result = reg.rollback(args.reason).to_json()
    elif args.command == "canary":
        result = reg.start_canary(args.version, args.weight, force=args.force).to_json()
    elif args.command == "weight":
        result = reg.set_canary_weight(args.weight).to_json()
    elif args.command == "history":
        result = reg.history()
        for r in result:
            print(f"{r['time']} {r['action']:<16} {r['version']} by {r['actor']}", file=sys.stderr)
    else:  # served
        from shelfwise import aws
        from shelfwise.served_query import served_to

        if not args.curated_bucket:
            raise InputError("served: --curated-bucket (or CURATED_BUCKET) is required")
        at = aware_time(args.at, "--at")
        lists = served_to(
            aws.client("s3"), args.curated_bucket, args.user, at, days=args.days, limit=args.limit
        )
        result = {"user": args.user, "at": at.isoformat(), "lists": lists}
        for rec in lists:
            print(
                f"{rec['served_at']} {rec['variant']:<10} {rec['model_version']} {rec['endpoint']} "
                f"{' '.join(rec['items'][:10])}",
                file=sys.stderr,
            )
        if not lists:
            print(f"no served list recorded for that user up to {at.isoformat()}", file=sys.stderr)
    emit(result)
    return 0
