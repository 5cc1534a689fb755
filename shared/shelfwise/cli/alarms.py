"""shelfwise alarms: the dashboard and the docs' alarm table, generated from config.DEFAULT_ALARMS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shelfwise.cli.common import command, emit


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shelfwise alarms",
        description="Print the alarm table, or rewrite/check infra/dashboard.json, template.yaml's "
        "DashboardBody and docs/monitoring.md's table from the one alarm definition.",
    )
    p.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: .)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the three generated places")
    mode.add_argument("--check", action="store_true", help="exit 1 when any of them is out of date")
    return p


@command("shelfwise alarms")
def main(argv: list[str]) -> int:
    """shelfwise alarms [--write | --check] [--root DIR]."""
    from shelfwise.monitoring.dashboard import alarm_table, stale, write_all

    args = parser().parse_args(argv)
    if args.write:
        emit({"written": write_all(args.root)})
        return 0
    if args.check:
        out = stale(args.root)
        emit({"stale": out})
        return 1 if out else 0
    sys.stdout.write(alarm_table())
    return 0
