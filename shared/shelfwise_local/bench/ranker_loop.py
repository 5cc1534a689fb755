"""`shelfwise bench ranker_loop`: the neural ranker trained on the loop's own served lists against
the same ranker trained on retrieval candidates, and against the retrieval model alone.

The simulator's shop writes its organic log; from day ``--serve-from`` on, an ALS model fitted on
the days before serves every known shopper's requests: its top 20, explored like serving explores
(``shelfwise.exploration``: a share of the slots swapped from the next ``--pool`` candidates, with
their propensities), logged as served-list lines and turned into impression rows exactly as the
ingest does (``served_list_rows``; the shopper named by ``user_hash`` only), and the shop's
shoppers click and buy (``Shop.respond``, joined by recommendation id). The offline protocol
(``shelfwise.training.job.evaluate_log``) then runs twice on that log with the ranker: once with
the served lists (the ranker learns from them, with a position term and inverse-propensity
weights, together with the candidate lists) and once without (candidates alone). Same splits,
same retrieval models.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.events import EVENT_WEIGHTS
from shelfwise.exploration import ExplorationPolicy, explore
from shelfwise.served_lists import ListLogging, served_list_line, served_list_rows, user_hash
from shelfwise.simulator import Shop, ShopParams
from shelfwise_local.bench._common import emit, peak_rss_mb


def _served_log(
    shop: Shop, first_day: int, k: int, policy: ExplorationPolicy, seed: int
) -> tuple[list[dict[str, Any]], pa.Table]:
    """Impression rows and feedback of days ``first_day..`` served by ALS fitted on the days before
    (refit each day), and the shop's organic log."""
    from shelfwise.cli.common import read_table
    from shelfwise.training.data import interactions_from_table
    from shelfwise.training.mf import ALS

    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="bench-ranker-") as tmp:
        shop.simulate(tmp)
        organic = read_table(str(Path(tmp) / "events"), "auto")
    for day in range(first_day, shop.params.n_days):
        cut = shop.day_ms(day)
        before = organic.filter(pc.less(organic["timestamp"].cast(pa.int64()), cut))
        data = interactions_from_table(before)
        als = ALS(factors=64, regularization=0.1, alpha=1.0, threads=1).fit(data)
        for ctx in shop.traffic(day):
            if ctx.user_id is None:
                continue
            u = int(np.searchsorted(data.user_ids, ctx.user_id))
            if u >= data.n_users or data.user_ids[u] != ctx.user_id:
                continue
            scores = als.score_users(np.array([u]))[0]
            cands = np.argsort(-scores, kind="stable")[: k + policy.pool]
            ex = explore(len(cands), k, policy, rng)
            served = cands[ex.order]
            ids = [str(x) for x in data.item_ids[served]]
            logging = ListLogging(ex.propensities, ex.spread, ex.list_propensity, policy.params())
            line = served_list_line(
                (
                    ctx.request_id,
                    "champion",
                    "v1",
                    "recommendations",
                    k,
                    ctx.ts_ms / 1000,
                    ids,
                    [float(s) for s in scores[served]],
                    user_hash(ctx.user_id),
                ),
                logging,
            )
            rows.extend(served_list_rows(json.loads(line)))
            rows.extend(shop.respond({"recommendation_id": ctx.request_id, "items": ids}, ctx))
    return rows, organic


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="shelfwise bench ranker_loop", description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--serve-from", type=int, default=9, help="first day served by the logged model")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--epsilon", type=float, default=0.1, help="share of an explored list's slots swapped")
    ap.add_argument("--pool", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    from shelfwise.training.data import interactions_from_table
    from shelfwise.training.job import Progress, TrainConfig, evaluate_log

    t0 = time.perf_counter()
    shop = Shop(ShopParams(n_users=args.users, n_items=args.items, n_days=args.days), seed=args.seed)
    policy = ExplorationPolicy(share=1.0, epsilon=args.epsilon, pool=args.pool)
    served_rows, organic = _served_log(shop, args.serve_from, args.k, policy, args.seed)
    logged = pa.Table.from_pylist(
        [
            {
                "event_type": r["event_type"],
                "user_id": r.get("user_id"),
                "session_id": r.get("session_id"),
                "item_id": r.get("item_id"),
                "timestamp": r["timestamp"],
                "recommendation_id": r.get("recommendation_id"),
                "position": r.get("position"),
                "properties": json.dumps(r["properties"]) if r.get("properties") else None,
                "weight": EVENT_WEIGHTS.get(r["event_type"], 0.0),
            }
            for r in served_rows
        ]
    )
    logged = logged.set_column(
        logged.schema.get_field_index("timestamp"),
        "timestamp",
        pc.cast(logged["timestamp"], pa.timestamp("ms", tz="UTC")),
    )
    keep = {"event_type", "user_id", "session_id", "item_id", "timestamp", "weight", "price", "category"}
    organic = organic.select([c for c in organic.column_names if c in keep])
    organic = pa.table(
        {
            c: organic[c].cast(logged.schema.field(c).type) if c in logged.column_names else organic[c]
            for c in organic.column_names
        }
    )
    table = pa.concat_tables([organic, logged], promote_options="permissive")
    lists = int(sum(1 for r in served_rows if r["event_type"] == "impression" and r["position"] == 0))
    print(
        f"log: {table.num_rows} events, {lists} served lists, {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    data = interactions_from_table(table)
    config = TrainConfig(search="none", families=("popularity", "itemknn", "als", "ranker"), threads=2)
    runs = {}
    for name, source in (("impressions", table), ("candidates", None)):
        t = time.perf_counter()
        ev = evaluate_log(data, config, Progress(stream=sys.stderr), source)
        runs[name] = {
            "ndcg@10": {f: m["ndcg@10"] for f, m in ev.models.items()},
            "ranker": ev.selection["ranker"],
            "served": ev.selection["served"],
            "seconds": round(time.perf_counter() - t, 1),
        }
    emit(
        {
            "benchmark": "ranker_loop",
            "users": args.users,
            "items": args.items,
            "days": args.days,
            "serve_from": args.serve_from,
            "served_lists": lists,
            "events": table.num_rows,
            "runs": runs,
            "rss_mb": peak_rss_mb(),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    )
    return 0
