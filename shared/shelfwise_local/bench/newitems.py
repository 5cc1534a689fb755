"""``shelfwise bench newitems``: NDCG@10 for new items with and without content-based scores.

Two logs: the simulator's new-item incident (a new department launched on day 10 of 14; titles
and categories from the shop's catalogue file, as the platform's catalogue feed gives them) and
UCI Online Retail II (items first sold after the cut; titles from the invoice descriptions).
Protocol: :func:`shelfwise.training.content.evaluate_new_items`. One JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RETAIL = (
    Path(__file__).resolve().parents[4]
    / "shared"
    / "data"
    / "online_retail_ii"
    / "online_retail_ii_2009-2010.parquet"
)


def simulator_case(seed: int, users: int, items: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from shelfwise.ingest import read_events
    from shelfwise.simulator.generate import simulate_to_files
    from shelfwise.simulator.params import Incident, ShopParams
    from shelfwise.training.content import evaluate_new_items
    from shelfwise.training.data import interactions_from_table
    from shelfwise.training.job import item_metadata

    params = ShopParams(n_users=users, n_items=items, n_days=14).with_incidents(
        Incident("new_category", at=10.0)
    )
    with tempfile.TemporaryDirectory() as tmp:
        simulate_to_files(params, seed=seed, out_dir=tmp)
        data = interactions_from_table(read_events(Path(tmp) / "events", "auto"))
        catalogue = pq.read_table(Path(tmp) / "catalogue.parquet")
    meta = item_metadata(data.item_ids, data.item_info, catalogue)
    return evaluate_new_items(data, titles=meta["title"], categories=meta["category"])


def retail_case(path: Path) -> dict[str, Any]:
    from shelfwise.ingest import read_events
    from shelfwise.training.content import evaluate_new_items
    from shelfwise.training.data import interactions_from_table

    return evaluate_new_items(interactions_from_table(read_events(path, "online_retail")))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench newitems", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--retail", default=str(RETAIL), help="UCI Online Retail II Parquet ('' to skip)")
    args = p.parse_args(argv)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    out["simulator_new_category"] = simulator_case(args.seed, args.users, args.items)
    if args.retail:
        out["online_retail"] = retail_case(Path(args.retail))
    out["seconds"] = round(time.perf_counter() - t, 1)
    for name in ("simulator_new_category", "online_retail"):
        if name in out:
            r = out[name]
            print(
                f"{name}: {r['protocol']['new_items']} new items, {r['protocol']['users']} users; NDCG@10 "
                f"with content {r['with_content']['ndcg']:.4f} (se {r['with_content']['ndcg_se']:.4f}), "
                f"without {r['without_content']['ndcg']:.4f}",
                file=sys.stderr,
            )
    print(json.dumps(out))
    return 0
