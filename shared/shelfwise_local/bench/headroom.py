"""How far a simulated shop's models are from what its own generator knows.

``python -m shelfwise_local.bench.headroom --seed S``: simulates the shop (`shelfwise simulate`'s
sizes), takes the protocol's temporal split and its 5000 test users, and scores NDCG@10 of:

- ``oracle``: each item ranked by the simulator's expected views of it over the test window: the
  user's true favourite categories and tastes, the popularity draw inside a category (the better of
  two draws by the true affinity), the mission running at the cut known and later missions by
  their odds (a follow-up's complement, else a need or a favourite);
- ``oracle_no_missions``: the same without missions (tastes and favourites only);
- ``counting_rule``: no learning: the user's share of events per category, plus a bonus for the
  category of their last event and a little of the shop's category shares, times the item's share
  of its category;
- ``als``: the ALS family's quick setting, as a reference in the same split.

Analysis, not a family of the platform: the oracle reads the simulator's hidden state. Prints one
JSON line. Figures: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date

import numpy as np

from shelfwise.cli.common import read_table
from shelfwise.evaluation import rank_users
from shelfwise.simulator.blocks import DAY_MS, HOUR_MS, STREAM_MISSION
from shelfwise.simulator.generate import simulate_to_files
from shelfwise.simulator.params import ShopParams
from shelfwise.simulator.sessions import HOURLY, WEEKLY, hash_uniform, mission_leaves
from shelfwise.simulator.shop import ShopModel
from shelfwise.training.data import Split, interactions_from_table, sample_users, temporal_split
from shelfwise.training.search import _metrics, evaluate_model, make_model

LAST_BONUS, SHOP_SHARE = 0.5, 0.05  # the counting rule's weights (frequency counts 1)


def _ndcg(scores: Callable[[np.ndarray], np.ndarray], split: Split) -> float:
    tr = split.train
    ranked = rank_users(scores, split.users, tr.matrix("user"), tr.n_items, 10)
    return round(float(_metrics(ranked, split, 10)["ndcg@10"]), 4)


def oracle(model: ShopModel, split: Split, missions: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Scores [users, items] of each user's expected views over the test window (see module doc)."""
    p, cat, tr = model.params, model.catalogue, split.train
    n_leaves = len(cat.leaf_names)
    sim_item = np.array([int(x) - 1 for x in tr.item_ids])
    sim_user = np.array([int(x) - 1 for x in tr.user_ids])
    leaf_of = cat.leaf[sim_item].astype(np.int64)
    pop = cat.popularity[sim_item].astype(np.float64)
    share = pop / np.bincount(cat.leaf, weights=cat.popularity, minlength=n_leaves)[leaf_of]
    ts = np.arange(split.cut_ms - split.cut_ms % HOUR_MS, split.end_ms, HOUR_MS)
    hour, day = ((ts - p.start_ms) % DAY_MS) // HOUR_MS, (ts - p.start_ms) // DAY_MS
    tw = HOURLY[hour] * WEEKLY[[p.day_date(int(d)).weekday() for d in day]]
    tw = tw / tw.sum()
    leaf_w = model.leaf_weight * model.leaf_available(int(day[0]))
    leaf_w[model.n_leaves_base :] = 0.0
    mission_ms = p.mission_days * DAY_MS

    def leaves(su: int) -> np.ndarray:
        fav, cum, _ = model.user_state(np.array([su]), int(split.cut_ms))
        w_fav = np.diff(np.concatenate([[0.0], cum[0]]))
        base = p.explore_share * leaf_w / leaf_w.sum()
        np.add.at(base, fav[0].astype(np.int64), (1 - p.explore_share) * w_fav)
        if not missions:
            return base
        own = p.mission_explore * leaf_w / leaf_w.sum()
        np.add.at(own, fav[0].astype(np.int64), (1 - p.mission_explore) * w_fav)
        phase = float(hash_uniform(model.seed, STREAM_MISSION, np.array([su]))[0]) * mission_ms
        number = np.floor((ts - model.start_ms + phase) / mission_ms).astype(np.int64)
        # the mission running at the cut: every session of this user follows it (mission_share 1)
        everyone = model.params
        object.__setattr__(model, "params", replace(everyone, mission_share=1.0))
        try:
            now = int(
                mission_leaves(model, np.zeros(1, np.int64), np.array([su]), ts[:1], fav, cum, leaf_w, 0)[0]
            )
        finally:
            object.__setattr__(model, "params", everyone)
        by_mission = np.zeros(n_leaves)
        by_mission[now] += tw[number == number[0]].sum()
        follow = tw[number == number[0] + 1].sum()
        by_mission[model.complement_leaf[now]] += p.mission_complement * follow
        by_mission += own * ((1 - p.mission_complement) * follow + tw[number > number[0] + 1].sum())
        return p.mission_share * by_mission + (1 - p.mission_share) * base

    def scores(users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), tr.n_items), dtype=np.float32)
        for r, u in enumerate(users.tolist()):
            su = int(sim_user[u])
            if su >= len(model.users):  # an anonymous visitor or the bot: the shop's popularity
                out[r] = pop
                continue
            f = model.user_state(np.array([su]), int(split.cut_ms))[2]
            a = model.affinity(np.repeat(f, tr.n_items, 0), sim_item)
            order = np.lexsort((a, leaf_of))
            q, lf = share[order], leaf_of[order]
            cs = np.cumsum(q)
            first = np.searchsorted(lf, lf)
            below = cs - q - np.where(first > 0, cs[np.maximum(first - 1, 0)], 0.0)
            pick = np.empty(tr.n_items)
            pick[order] = q * (q + 2 * below)  # the better of two popularity draws by affinity
            out[r] = leaves(su)[leaf_of] * pick
        return out

    return scores


def counting_rule(split: Split) -> Callable[[np.ndarray], np.ndarray]:
    tr = split.train
    _, cat_of = np.unique(np.asarray(tr.item_info["category"], dtype=str), return_inverse=True)
    n_cat = int(cat_of.max(initial=0)) + 1
    count = np.bincount(tr.item, minlength=tr.n_items).astype(np.float64)
    cat_count = np.bincount(cat_of, weights=count, minlength=n_cat)
    log_share = np.log((count + 1) / (cat_count[cat_of] + 1))
    shop = cat_count / cat_count.sum()
    order = np.argsort(tr.user, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(tr.user, minlength=tr.n_users))])
    items = tr.item[order]

    def scores(users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), tr.n_items), dtype=np.float32)
        for r, u in enumerate(users.tolist()):
            c = cat_of[items[indptr[u] : indptr[u + 1]]]
            pc = SHOP_SHARE * shop.copy()
            if len(c):
                pc += np.bincount(c, minlength=n_cat) / len(c)
                pc[c[-1]] += LAST_BONUS
            out[r] = np.log(pc / pc.sum())[cat_of] + log_share
        return out

    return scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shelfwise_local.bench.headroom", description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    params = ShopParams(n_users=args.users, n_items=args.items, n_days=args.days, start=date(2026, 1, 5))
    with tempfile.TemporaryDirectory(prefix="shelfwise-headroom-") as tmp:
        simulate_to_files(params, args.seed, tmp)
        data = interactions_from_table(read_table(f"{tmp}/events", "native"))
    split = sample_users(temporal_split(data, 0.8), 5000, 42)
    model = ShopModel(params, args.seed)
    als = make_model("als", {"factors": 64, "regularization": 0.1, "alpha": 1.0}, threads=2).fit(split.train)
    out = {
        "seed": args.seed,
        "test_users": len(split.users),
        "oracle": _ndcg(oracle(model, split, missions=True), split),
        "oracle_no_missions": _ndcg(oracle(model, split, missions=False), split),
        "counting_rule": _ndcg(counting_rule(split), split),
        "als": round(float(evaluate_model(als, split, 10)["ndcg@10"]), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
