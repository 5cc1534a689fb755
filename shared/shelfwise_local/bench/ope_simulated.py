"""`shelfwise bench ope_simulated`: off-policy estimates checked against the shop simulator's truth.

The champion (true factors + noise) serves the logging days with serving's slot-swap exploration
(:mod:`shelfwise.exploration`); each list becomes a served-list line (propensities, policy, user
reference) read back through the contract's reader, and the simulated shoppers answer it
(``Shop.respond``). Then each candidate (good: less noise; slightly worse: more noise; broken: the
champion with its item scores shuffled) is estimated off-policy on that log, and measured in a
simulated canary on the next day (the same shoppers' true click probabilities, and the clicks they
actually make). Reported per candidate and estimator: the estimate, its interval, the online truth,
the relative bias, whether the interval covers the truth, and the gate's verdict. DR's direct
model is the gate's (by the champion's and the candidate's rank, ``--direct-model two-rank``) or
the champion's rank alone (``rank``); the other, and the item-level one, are reported beside it,
on the same log. Known-user
requests only (a candidate is scored for the user the log references; anonymous sessions would
need the request history in the log).

``--seeds N`` repeats the whole experiment with N shop seeds (a new shop, log, candidates and
canary each time) and reports how often each estimator's 95% interval covers the truth, at the
position level (expected clicks per list) and at the list level (probability that the list gets a
click): against the online truth of the canary day, and against the estimand itself (the
candidate's expected reward on the logged shoppers at the logged times), and in how many runs
each direct model's DR was within 10% of the online truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from shelfwise.exploration import ExplorationPolicy, explore
from shelfwise.offpolicy import LoggedLists, OpeConfig, evaluate, exploration_cost, rank_direct_model
from shelfwise.offpolicy_gate import off_policy_verdict
from shelfwise.served_lists import ListLogging, served_list_line, served_list_rows
from shelfwise.simulator import Shop, ShopParams, oracle_factors
from shelfwise_local.bench._common import emit, peak_rss_mb

Ranker = Callable[[int, int], np.ndarray]  # (user index, n) -> top-n item indices


def factor_ranker(u: np.ndarray, v: np.ndarray, bias: np.ndarray, perm: np.ndarray | None = None) -> Ranker:
    def rank(user: int, n: int) -> np.ndarray:
        scores = v @ u[user] + bias
        if perm is not None:  # a broken export: every item gets another item's score
            scores = scores[perm]
        top = np.argpartition(-scores, n)[:n]
        return top[np.argsort(-scores[top], kind="stable")]

    return rank


def truths(shop: Shop, ctx: object, items: np.ndarray) -> tuple[float, float]:
    """The shopper's true expected clicks on a list, and the probability of at least one click
    (what ``Shop.respond`` draws from)."""
    p = shop.params
    f = shop.model.user_state(np.array([ctx.true_user]), ctx.ts_ms)[2]  # type: ignore[attr-defined]
    aff = shop.model.affinity(np.repeat(f, len(items), axis=0), items)
    exam = 1.0 / np.log2(np.arange(len(items)) + 2.0)
    click = exam / (1.0 + np.exp(-(p.click_base + p.funnel_slope * aff)))
    return float(click.sum()), float(1.0 - np.prod(1.0 - click))


def expected_clicks(shop: Shop, ctx: object, items: np.ndarray) -> float:
    """The shopper's true expected clicks on a list."""
    return truths(shop, ctx, items)[0]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="shelfwise bench ope_simulated", description=__doc__)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--log-days", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--share", type=float, default=1.0, help="share of lists explored")
    ap.add_argument("--epsilon", type=float, default=0.05, help="share of an explored list's slots swapped")
    ap.add_argument("--pool", type=int, default=10)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--min-coverage", type=float, default=OpeConfig.min_coverage)
    ap.add_argument("--champion-noise", type=float, default=0.8)
    ap.add_argument("--good-noise", type=float, default=0.4)
    ap.add_argument("--worse-noise", type=float, default=1.1)
    ap.add_argument(
        "--direct-model",
        choices=("two-rank", "rank"),
        default="two-rank",
        help="DR's direct model: by the champion's and the candidate's rank, or the champion's alone "
        "(the other is reported beside it)",
    )
    ap.add_argument(
        "--rank-scale",
        choices=("normal", "log"),
        default="normal",
        help="the two-rank model's rank feature: its normal quantile among the items (as the gate) or log(rank + 1)",
    )
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--seeds", type=int, default=1, help="repeat with this many shop seeds; report coverage")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    if args.seeds == 1:
        emit(run(args, args.seed))
        return 0
    t_start = time.perf_counter()
    runs = []
    for i in range(args.seeds):
        runs.append(run(args, args.seed + i))
        print(f"seed {args.seed + i} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    summary = coverage_summary(runs)
    summary["per_seed_dr_position"] = {
        name: [r["candidates"][name]["levels"]["position"]["dr"] for r in runs]
        for name in runs[0]["candidates"]
    }
    summary["dr_within_10pct"] = within_summary(runs, args.direct_model)
    summary["median_support_coverage"] = {
        name: round(float(np.median([r["candidates"][name]["coverage"] for r in runs])), 4)
        for name in runs[0]["candidates"]
    }
    summary["gate_passed"] = {
        name: f"{sum(r['candidates'][name]['gate']['passed'] for r in runs)} of {len(runs)}"
        for name in runs[0]["candidates"]
        if name != "champion"
    }
    costs = [r["exploration_cost"]["cost"] for r in runs if r["exploration_cost"]]
    summary["median_exploration_cost"] = {
        "estimated": round(float(np.median(costs)), 4) if costs else None,
        "true": round(float(np.median([r["exploration_cost_true"] for r in runs])), 4),
    }
    summary.update(
        seeds=[args.seed, args.seed + args.seeds - 1],
        seconds=round(time.perf_counter() - t_start, 1),
        peak_rss_mb=peak_rss_mb(),
    )
    emit(summary)
    return 0


def within_summary(runs: list[dict[str, Any]], primary: str) -> dict[str, Any]:
    """Per candidate and direct model: in how many runs DR (position level) was within 10% of the
    online truth, and its median and worst relative bias."""
    out: dict[str, Any] = {}
    for name in runs[0]["candidates"]:
        per: dict[str, Any] = {}
        rows = [r["candidates"][name] for r in runs]
        for model, key in (
            (primary, "dr"),
            ("rank" if primary == "two-rank" else "two-rank", "dr_other_rank_model"),
            ("item", "dr_item_direct_model"),
        ):
            bias = [x[key]["relative_bias"] for x in rows if x.get(key) and "relative_bias" in x[key]]
            per[model] = (
                {"refused": len(rows)}
                if not bias
                else {
                    "within": f"{sum(abs(b) <= 0.10 for b in bias)} of {len(rows)}",
                    "median_bias": round(float(np.median(bias)), 4),
                    "worst_bias": round(float(max(bias, key=abs)), 4),
                    "refused": len(rows) - len(bias),
                }
            )
        out[name] = per
    return out


def coverage_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per candidate, level and estimator over the seeds: how often the interval covered each
    truth, how often the estimate was refused, and the median relative bias."""
    out: dict[str, Any] = {}
    for name in runs[0]["candidates"]:
        per: dict[str, Any] = {}
        for level in ("position", "list"):
            for est in ("ips", "snips", "dr"):
                rows = [r["candidates"][name]["levels"][level][est] for r in runs]
                done = [x for x in rows if "value" in x]
                entry: dict[str, Any] = {"runs": len(rows), "refused": len(rows) - len(done)}
                if done:
                    entry.update(
                        covers_online=round(float(np.mean([x["covers_truth"] for x in done])), 3),
                        covers_estimand=round(float(np.mean([x["covers_estimand"] for x in done])), 3),
                        normal_covers_online=round(
                            float(np.mean([x["normal_covers_truth"] for x in done])), 3
                        ),
                        normal_covers_estimand=round(
                            float(np.mean([x["normal_covers_estimand"] for x in done])), 3
                        ),
                        median_normal_relative_half_width=round(
                            float(np.median([x["normal_relative_half_width"] for x in done])), 4
                        ),
                        median_relative_bias=round(float(np.median([x["relative_bias"] for x in done])), 4),
                        median_relative_half_width=round(
                            float(np.median([x["relative_half_width"] for x in done])), 4
                        ),
                    )
                per[f"{level}/{est}"] = entry
        out[name] = per
    return {"runs": len(runs), "coverage": out}


def run(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One experiment on the shop of ``seed``: log, estimates, simulated canary, and the comparison."""
    t_start = time.perf_counter()
    shop = Shop(
        ShopParams(
            n_users=args.users, n_items=args.items, n_days=args.log_days + 1, sessions_per_user_day=0.5
        ),
        seed=seed,
    )
    k, policy = args.k, ExplorationPolicy(share=args.share, epsilon=args.epsilon, pool=args.pool)
    rng = np.random.default_rng(seed)
    champ_u, champ_v, bias = oracle_factors(shop, noise=args.champion_noise, seed=1)
    rankers: dict[str, Ranker] = {
        "champion": factor_ranker(champ_u, champ_v, bias),
        "good": factor_ranker(*oracle_factors(shop, noise=args.good_noise, seed=2)),
        "slightly_worse": factor_ranker(*oracle_factors(shop, noise=args.worse_noise, seed=3)),
        "broken": factor_ranker(
            champ_u, champ_v, bias, perm=np.random.default_rng(4).permutation(args.items)
        ),
    }
    # ---- logging days: the champion explores; lines through the contract; shoppers respond
    rows: list[tuple[list[int], list[float], list[bool], float, list[int], int]] = []
    ranked_truth: list[tuple[float, float]] = []
    logged_contexts: list[Any] = []
    for day in range(args.log_days):
        for ctx in shop.traffic(day):
            if ctx.user_id is None:
                continue
            user = int(ctx.user_id) - 1
            logged_contexts.append(ctx)
            cands = rankers["champion"](user, k + policy.pool)
            ex = explore(len(cands), k, policy, rng)
            served = cands[ex.order]
            ids = [str(i + 1) for i in served]
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
                    [0.0] * len(ids),
                ),
                logging,
            )
            imp = served_list_rows(json.loads(line))
            events = shop.respond({"recommendation_id": ctx.request_id, "items": ids}, ctx)
            clicked = {e["position"] for e in events if e["event_type"] == "click"}
            bought = {e["position"] for e in events if e["event_type"] == "purchase"}
            props = [r["properties"] for r in imp]
            rows.append(
                (
                    [int(r["item_id"]) - 1 for r in imp],
                    [p["propensity"] for p in props],
                    [p["spread"] for p in props],
                    props[0]["list_propensity"],
                    [1 if p in clicked else 0 for p in range(len(ids))]
                    + [1 if p in bought else 0 for p in range(len(ids))],
                    user,
                )
            )
            ranked_truth.append((expected_clicks(shop, ctx, cands[:k]), expected_clicks(shop, ctx, served)))
    n = len(rows)
    width = max(len(r[0]) for r in rows)

    def pad(values: list[list[float]], fill: float) -> np.ndarray:
        out = np.full((n, width), fill, dtype=np.float64)
        for i, v in enumerate(values):
            out[i, : len(v)] = v
        return out

    items = pad([r[0] for r in rows], -1).astype(np.int64)
    lens = [len(r[0]) for r in rows]
    logged = LoggedLists(
        items,
        pad([r[1] for r in rows], 1.0),
        pad([[float(s) for s in r[2]] for r in rows], 0.0).astype(bool),
        pad([r[4][: lens[i]] for i, r in enumerate(rows)], 0.0),
        pad([r[4][lens[i] :] for i, r in enumerate(rows)], 0.0),
        np.array([r[3] for r in rows]),
    )
    users = np.array([r[5] for r in rows])
    t_log = time.perf_counter() - t_start
    print(f"logged {n} lists over {args.log_days} days in {t_log:.1f} s", file=sys.stderr)
    cost = exploration_cost(logged)
    # ---- estimates for each ranker (as the deterministic policy it would serve)
    cfg = OpeConfig(min_coverage=args.min_coverage)
    max_rank = 200
    rank_tables: dict[tuple[str, int], np.ndarray] = {}

    def ranks_of(u: int, ids: np.ndarray, by: str = "champion") -> np.ndarray:
        table = rank_tables.get((by, u))
        if table is None:
            table = np.full(args.items, max_rank, dtype=np.int16)
            table[rankers[by](u, max_rank)] = np.arange(max_rank)
            rank_tables[(by, u)] = table
        return table[np.maximum(ids, 0)]

    ranks_logged = np.stack([ranks_of(u, items[i]) for i, u in enumerate(users.tolist())])
    reports = {}
    reports_item_dm = {}
    reports_champion_rank_dm = {}
    estimand: dict[str, tuple[float, float]] = {}
    for name, rank in rankers.items():
        per_user: dict[int, np.ndarray] = {}
        target = np.full((n, k), -1, dtype=np.int64)
        for i, u in enumerate(users.tolist()):
            if u not in per_user:
                per_user[u] = rank(u, k)
            target[i] = per_user[u]
        ranks_target = np.stack([ranks_of(u, target[i]) for i, u in enumerate(users.tolist())])
        own_logged = np.stack([ranks_of(u, items[i], name) for i, u in enumerate(users.tolist())])
        if name != "champion":  # the candidate's tables are not needed again (memory)
            for key in [key for key in rank_tables if key[0] == name]:
                del rank_tables[key]
        two_rank = rank_direct_model(
            logged,
            ranks_logged,
            ranks_target,
            max_rank=max_rank,
            candidate_ranks_logged=own_logged,
            scale=args.rank_scale,
            n_ranked=args.items,
        )
        champion_rank_only = rank_direct_model(logged, ranks_logged, ranks_target, max_rank=max_rank)
        primary, other = (
            (two_rank, champion_rank_only)
            if args.direct_model == "two-rank"
            else (champion_rank_only, two_rank)
        )
        reports[name] = evaluate(logged, target, config=cfg, n_items=args.items, direct=primary)
        reports_champion_rank_dm[name] = evaluate(
            logged, target, config=cfg, n_items=args.items, direct=other
        )
        reports_item_dm[name] = evaluate(logged, target, config=cfg, n_items=args.items)
        # The estimand: the candidate's expected reward on the logged shoppers at the logged times.
        both = np.array([truths(shop, ctx, target[i]) for i, ctx in enumerate(logged_contexts)])
        estimand[name] = (float(both[:, 0].mean()), float(both[:, 1].mean()))
    # ---- simulated canary on the next day: each ranker serves the known-user traffic
    canary_day = args.log_days
    online: dict[str, dict[str, float]] = {}
    contexts = [c for c in shop.traffic(canary_day) if c.user_id is not None]
    for name, rank in rankers.items():
        expected = any_click = measured = 0.0
        for ctx in contexts:
            top = rank(int(ctx.user_id) - 1, k)  # type: ignore[arg-type]
            clicks, list_click = truths(shop, ctx, top)
            expected += clicks
            any_click += list_click
            events = shop.respond([str(i + 1) for i in top], ctx)
            measured += sum(1 for e in events if e["event_type"] == "click")
        online[name] = {
            "expected": expected / len(contexts),
            "list": any_click / len(contexts),
            "measured": measured / len(contexts),
        }
    result: dict[str, Any] = {
        "seed": seed,
        "logged_lists": n,
        "canary_lists": len(contexts),
        "policy": policy.params(),
        "budget": policy.budget,
        "exploration_cost": cost.to_json() if cost else None,
        # the truth: 1 - expected clicks as served / expected clicks of the same lists as ranked
        "exploration_cost_true": round(
            1 - sum(s for _, s in ranked_truth) / sum(r for r, _ in ranked_truth), 6
        ),
    }
    table = {}
    champ_dr = reports["champion"].get("dr")
    for name in rankers:
        truth = online[name]["expected"]
        entry: dict[str, Any] = {
            "online_expected_clicks_per_list": round(truth, 5),
            "online_measured_clicks_per_list": round(online[name]["measured"], 5),
            "coverage": round(reports[name].coverage, 4),
        }
        for est in ("ips", "snips", "dr"):
            e = reports[name].get(est)
            if e.value is None:
                entry[est] = {"refused": e.refused}
                continue
            entry[est] = {
                "value": round(e.value, 5),
                "interval": [round(e.lower or 0, 5), round(e.upper or 0, 5)],
                "relative_bias": round(e.value / truth - 1, 4),
                "covers_truth": bool((e.lower or 0) <= truth <= (e.upper or 0)),
                "ess": round(e.ess, 1),
            }
        levels: dict[str, dict[str, Any]] = {}
        for level, online_truth, own in (
            ("position", truth, estimand[name][0]),
            ("list", online[name]["list"], estimand[name][1]),
        ):
            levels[level] = {"online_truth": round(online_truth, 5), "estimand": round(own, 5)}
            for est in ("ips", "snips", "dr"):
                e = reports[name].get(est, level)
                if e.value is None:
                    levels[level][est] = {"refused": e.refused}
                    continue
                lo, hi = e.lower or 0.0, e.upper or 0.0
                half = e.sampling_half_width or 0.0
                n_lo, n_hi = e.value - half, e.value + half
                levels[level][est] = {
                    "value": round(e.value, 5),
                    "relative_bias": round(e.value / online_truth - 1, 4),
                    "relative_half_width": round((hi - lo) / 2 / online_truth, 4),
                    "covers_truth": bool(lo <= online_truth <= hi),
                    "covers_estimand": bool(lo <= own <= hi),
                    # the normal interval over lists alone (sampling error only)
                    "normal_covers_truth": bool(n_lo <= online_truth <= n_hi),
                    "normal_covers_estimand": bool(n_lo <= own <= n_hi),
                    "normal_relative_half_width": round(half / online_truth, 4),
                }
        entry["levels"] = levels
        e_item = reports_item_dm[name].get("dr")
        entry["dr_item_direct_model"] = (
            None
            if e_item.value is None
            else {
                "value": round(e_item.value, 5),
                "relative_bias": round(e_item.value / truth - 1, 4),
                "covers_truth": bool((e_item.lower or 0) <= truth <= (e_item.upper or 0)),
            }
        )
        e_other = reports_champion_rank_dm[name].get("dr")
        entry["dr_other_rank_model"] = (
            None
            if e_other.value is None
            else {
                "model": "rank" if args.direct_model == "two-rank" else "two-rank",
                "value": round(e_other.value, 5),
                "relative_bias": round(e_other.value / truth - 1, 4),
                "covers_truth": bool((e_other.lower or 0) <= truth <= (e_other.upper or 0)),
            }
        )
        if name != "champion":
            verdict = off_policy_verdict(reports[name], reports["champion"], args.tolerance)
            entry["gate"] = {"passed": verdict.passed, "applied": verdict.applied, "reasons": verdict.reasons}
        table[name] = entry
        print(
            f"{name:15s} truth {truth:.4f} "
            + " ".join(f"{est} {entry[est]}" for est in ("dr",))
            + (f" gate {entry.get('gate')}" if name != "champion" else ""),
            file=sys.stderr,
        )
    result["candidates"] = table
    result["champion_dr"] = None if champ_dr.value is None else round(champ_dr.value, 5)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["peak_rss_mb"] = peak_rss_mb()
    return result
