"""shelfwise report: the HTML monitoring report from the buckets (or a history file)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from shelfwise.cli.common import command, emit
from shelfwise.errors import InputError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shelfwise report", description="HTML monitoring report with charts of the metric history."
    )
    p.add_argument("--monitoring-bucket", help="bucket with monitoring/history and monitoring/decisions")
    p.add_argument("--history-file", type=Path, help="JSON Lines of metric records instead of the bucket")
    p.add_argument("--models-bucket", help="registry bucket, for canary/promotion/rollback markers")
    p.add_argument("--model-name", default="recs", help="the model's name in the registry (default recs)")
    p.add_argument(
        "--env", default=os.environ.get("SHELFWISE_ENV", "dev"), help="environment (env SHELFWISE_ENV, dev)"
    )
    p.add_argument(
        "--alarm-prefix", help="also mark CloudWatch alarm transitions of alarms with this name prefix"
    )
    p.add_argument("--since", help="ISO time; only history from then on")
    p.add_argument(
        "--out", type=Path, default=Path("report.html"), help="the HTML file (default report.html)"
    )
    return p


def alarm_changes(cloudwatch: Any, prefix: str) -> list[dict[str, Any]]:
    """State transitions of the alarms named ``prefix...``, from CloudWatch's alarm history."""
    changes: list[dict[str, Any]] = []
    for page in cloudwatch.get_paginator("describe_alarm_history").paginate(
        AlarmNamePrefix=prefix, HistoryItemType="StateUpdate"
    ):
        for item in page.get("AlarmHistoryItems", []):
            data = json.loads(item.get("HistoryData") or "{}")
            changes.append(
                {
                    "AlarmName": item["AlarmName"],
                    "Timestamp": item["Timestamp"],
                    "NewState": (data.get("newState") or {}).get("stateValue"),
                }
            )
    return changes


@command("shelfwise report")
def main(argv: list[str]) -> int:
    """shelfwise report --monitoring-bucket B [--models-bucket M --model-name recs] --out report.html."""
    args = parser().parse_args(argv)
    if not args.monitoring_bucket and not args.history_file:
        raise InputError("give --monitoring-bucket or --history-file")
    from shelfwise import wiring
    from shelfwise.aws import client
    from shelfwise.instants import aware_time
    from shelfwise.monitoring.publish import read_history
    from shelfwise.monitoring.report import markers_from, render_report
    from shelfwise.rollout import read_decisions

    since = aware_time(args.since, "--since") if args.since else None
    records: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    if args.history_file:
        records = [json.loads(line) for line in args.history_file.read_text().splitlines() if line.strip()]
    if args.monitoring_bucket:
        s3 = client("s3")
        records += read_history(s3, args.monitoring_bucket, since)
        decisions = read_decisions(s3, args.monitoring_bucket)
    audit: list[dict[str, Any]] = []
    if args.models_bucket:
        where = wiring.RegistrySettings(
            models_bucket=args.models_bucket, shelfwise_env=args.env, model_name=args.model_name
        )
        audit = wiring.registry(where).history()
    changes = alarm_changes(client("cloudwatch"), args.alarm_prefix) if args.alarm_prefix else []
    page = render_report(records, audit=audit, decisions=decisions, alarm_changes=changes)
    args.out.write_text(page)
    print(f"report: wrote {args.out}", file=sys.stderr)
    emit(
        {
            "report": str(args.out),
            "metric_records": len(records),
            "markers": len(markers_from(audit, changes)),
        }
    )
    return 0
