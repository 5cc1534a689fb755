"""``shelfwise evaluate --off-policy``: off-policy estimates of a candidate bundle on a served-list log.

Reads curated events (impressions with their logged propensities, clicks, purchases), scores the
candidate bundle for every logged list whose user it knows, and prints each estimator's CTR and
conversion (position and list level) with intervals, effective sample sizes and refusals. Progress
on stderr; one JSON object last on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shelfwise.cli.common import command, emit
from shelfwise.offpolicy import (
    OpeConfig,
    default_examination,
    estimate_examination,
    evaluate,
)
from shelfwise.offpolicy_log import bundle_scorer, candidate_lists, logged_lists, two_rank_direct_model


@command("shelfwise evaluate --off-policy")
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise evaluate --off-policy", description=__doc__)
    p.add_argument("--off-policy", action="store_true", required=True)
    p.add_argument("--events", required=True, help="curated events (a Parquet file or directory)")
    p.add_argument("--format", default="curated", help="source format of --events (curated, native, ...)")
    p.add_argument("--candidate", required=True, help="the candidate's bundle directory")
    p.add_argument(
        "--logging-model",
        default=None,
        help="bundle directory of the model that served the log: DR's direct model by its ranks",
    )
    p.add_argument("--clip", type=float, default=OpeConfig.clip)
    p.add_argument("--min-lists", type=int, default=OpeConfig.min_lists)
    p.add_argument("--min-coverage", type=float, default=OpeConfig.min_coverage)
    p.add_argument("--min-ess", type=float, default=OpeConfig.min_ess)
    p.add_argument(
        "--examination",
        choices=("default", "estimate"),
        default="default",
        help="position bias: 1/log2(p+2), or estimated from the explored slots (falls back to the default)",
    )
    args = p.parse_args(argv)
    from shelfwise.cli.common import read_table
    from shelfwise.serving.model import LoadedModel

    cfg = OpeConfig(
        clip=args.clip, min_lists=args.min_lists, min_coverage=args.min_coverage, min_ess=args.min_ess
    )
    data = logged_lists(read_table(args.events, args.format))
    print(f"{data.lists.n} logged lists, {data.explored_share:.1%} explored", file=sys.stderr)
    model = LoadedModel.from_directory(Path(args.candidate), Path(args.candidate).name)
    candidate = bundle_scorer(model)
    usable, target, n_items = candidate_lists(data, candidate)
    print(f"{usable.lists.n} lists with a user the candidate knows", file=sys.stderr)
    width = max(usable.lists.items.shape[1], target.shape[1])
    theta = default_examination(width)
    if args.examination == "estimate":
        got = estimate_examination(usable.lists, usable.lists.items.shape[1])
        if got is not None and got.size >= width:
            theta = got
    direct = None
    if args.logging_model:
        # DR's direct model: click rates by the logging model's and the candidate's rank for the shopper
        logging_model = bundle_scorer(LoadedModel.from_directory(Path(args.logging_model), "logging"))
        direct = two_rank_direct_model(usable, target, logging_model, candidate, model.catalog.n_items, theta)
    report = evaluate(usable.lists, target, theta=theta, config=cfg, n_items=n_items, direct=direct)
    for e in report.estimates:
        shown = f"refused ({e.refused})" if e.refused else f"{e.value:.5f} [{e.lower:.5f}, {e.upper:.5f}]"
        print(f"{e.level:8s} {e.estimator:5s} {e.metric:10s} {shown}", file=sys.stderr)
    out = report.to_json()
    out.update(
        {
            "candidate": str(args.candidate),
            "lists_in_log": data.lists.n,
            "explored_share": round(data.explored_share, 6),
            "examination": [round(float(t), 4) for t in theta],
        }
    )
    emit(out)
    return 0
