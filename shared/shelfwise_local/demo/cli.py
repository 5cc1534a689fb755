"""``shelfwise demo``: the whole loop of the platform, locally, on a simulated shop.

Prints the timeline on stderr and one JSON line (the result) on stdout; exits 1 when an
expectation fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
from datetime import date
from pathlib import Path

from shelfwise.cli.common import plain
from shelfwise_local.demo.config import DemoConfig
from shelfwise_local.demo.run import Demo, expectations_met


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shelfwise demo", description=plain(__doc__.splitlines()[0]))
    p.add_argument("--fast", action="store_true", help="the smaller run the e2e test uses")
    p.add_argument(
        "--backend",
        default=os.environ.get("SHELFWISE_BACKEND", "moto"),
        help="moto (embedded, default), localstack (SHELFWISE_LOCALSTACK_ENDPOINT) or an endpoint URL",
    )
    p.add_argument("--out", type=Path, help="working directory (default: a new temporary directory)")
    p.add_argument("--report", type=Path, help="HTML report path (default: OUT/report.html)")
    p.add_argument("--seed", type=int, help="simulator seed")
    p.add_argument("--serving-day", type=date.fromisoformat, help="the shop's serving day (default today)")
    p.add_argument("--canary-mode", choices=("split", "interleave"), help="template parameter CanaryMode")
    p.add_argument(
        "--canary-allocation", choices=("stages", "thompson"), help="template parameter CanaryAllocation"
    )
    p.add_argument("--quiet", action="store_true", help="no timeline on stderr")
    p.add_argument(
        "--families",
        default="",
        help="families trained beside the defaults, e.g. 'sequential' (the challenger if the guard picks it)",
    )
    p.add_argument(
        "--challenger-family",
        default="",
        help="train v2 as this family by an operator override (e.g. 'sequential', needs `make torch`): "
        "canaried past the guard and the gate's comparisons, then promoted or rolled back online",
    )
    args = p.parse_args(argv)
    cfg = DemoConfig.fast() if args.fast else DemoConfig()
    if args.challenger_family:
        from shelfwise.training.ranker import RANKER
        from shelfwise.training.search import ALL_FAMILIES
        from shelfwise.training.trigger import TORCH_FAMILIES

        named = [f for f in ALL_FAMILIES if f not in ("popularity_all", RANKER)]
        if args.challenger_family not in named:
            p.error(f"--challenger-family must be one of {', '.join(named)}")
        if args.challenger_family in TORCH_FAMILIES and importlib.util.find_spec("torch") is None:
            p.error(
                f"--challenger-family {args.challenger_family} trains with PyTorch: run `make torch` first"
            )
        cfg = dataclasses.replace(cfg, challenger_family=args.challenger_family)
    if args.families:
        cfg = dataclasses.replace(cfg, extra_families=args.families)
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    if args.serving_day is not None:
        cfg = dataclasses.replace(cfg, serving_day=args.serving_day)
    if args.canary_mode is not None:
        cfg = dataclasses.replace(cfg, canary_mode=args.canary_mode)
    if args.canary_allocation is not None:
        cfg = dataclasses.replace(cfg, canary_allocation=args.canary_allocation)
    demo = Demo(
        cfg,
        backend=args.backend,
        out_dir=args.out,
        report_path=args.report,
        stream=None if args.quiet else sys.stderr,
    )
    result = demo.run()
    failed = expectations_met(result, cfg)
    result["failed"] = failed
    for f in failed:
        print(f"EXPECTATION FAILED: {f}", file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
