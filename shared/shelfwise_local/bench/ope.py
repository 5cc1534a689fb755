"""`shelfwise bench ope --lists N`: every off-policy estimator over N logged lists, with the truth.

Synthesises N logged lists (vectorised) from a position-based click model: per list, the logging
model's ranked top-(k + pool) candidates with true attractiveness falling with rank plus noise;
the logging policy is serving's slot-swap exploration (same propensities as
:mod:`shelfwise.exploration`); clicks and conversions are drawn from theta[p] * gamma. The
candidate ranks the same candidates by a noisy view of the truth, so its true value is known.
Times the whole :func:`shelfwise.offpolicy.evaluate` (both levels, three estimators, CTR and
conversion), and, as the same-run baseline, one pass of the plain on-policy mean over the same
arrays. Prints the estimates against the truth, seconds and peak memory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from shelfwise.exploration import ExplorationPolicy, _swap_law
from shelfwise.offpolicy import LoggedLists, OpeConfig, default_examination, evaluate, rank_direct_model
from shelfwise_local.bench._common import emit, peak_rss_mb


@dataclass
class SyntheticLog:
    logged: LoggedLists
    target: np.ndarray
    truth: dict[str, float]
    n_items: int
    # ranks for the two-rank direct model: the logging model's of the logged and the target items,
    # and the candidate's of the logged items (within the k + pool candidates of each list)
    ranks_logged: np.ndarray | None = None
    ranks_target: np.ndarray | None = None
    candidate_ranks_logged: np.ndarray | None = None


def synthesize(
    n: int,
    *,
    k: int = 10,
    policy: ExplorationPolicy = ExplorationPolicy(share=1.0, epsilon=0.05, pool=10),
    n_items: int = 20_000,
    candidate_noise: float = 0.5,
    seed: int = 0,
) -> SyntheticLog:
    """N logged lists under slot-swap exploration and one candidate's lists, with true values."""
    rng = np.random.default_rng(seed)
    m = policy.pool
    width = k + m
    theta = default_examination(k)
    cands = rng.integers(0, n_items, size=(n, width), dtype=np.int64)
    # distinct per list is not needed for the estimators' maths, but make collisions rare
    cands = (cands + np.arange(width) * 7919) % n_items
    rank_effect = np.exp(-np.arange(width) / 8.0)
    gamma = 0.25 * rank_effect[None, :] * np.exp(0.5 * rng.standard_normal((n, width)))
    gamma = np.minimum(gamma, 1.0)
    buy = 0.3 * gamma
    # logging: explore with prob share, swap each slot with prob epsilon (capped at m), pool uniform
    explored = rng.random(n) < policy.share
    swap = (rng.random((n, k)) < policy.epsilon) & explored[:, None]
    over = swap.sum(axis=1) > m
    if over.any():  # keep m of them at random, as serving does
        keys = np.where(swap[over], rng.random((int(over.sum()), k)), 2.0)
        kth = np.sort(keys, axis=1)[:, m - 1 : m]
        swap[over] = keys <= kth
    pool_order = np.argsort(rng.random((n, m)), axis=1) + k
    slot_rank = np.cumsum(swap, axis=1) - 1
    order = np.where(swap, np.take_along_axis(pool_order, np.clip(slot_rank, 0, m - 1), axis=1), np.arange(k))
    items = np.take_along_axis(cands, order, axis=1)
    g_shown = np.take_along_axis(gamma, order, axis=1)
    clicks = (rng.random((n, k)) < theta[None, :] * g_shown).astype(np.float64)
    conv = clicks * (rng.random((n, k)) < np.take_along_axis(buy, order, axis=1) / np.maximum(g_shown, 1e-12))
    q, p_set = _swap_law(k, m, policy.epsilon)
    keep, swap_p = 1.0 - policy.share * q, policy.share * q / m
    prop = np.where(swap, swap_p, keep)
    s = swap.sum(axis=1)
    perm = np.array([math.perm(m, j) for j in range(min(k, m) + 1)], dtype=np.float64)
    table = policy.share * np.asarray(p_set) / perm
    table[0] = (1 - policy.share) + policy.share * p_set[0]
    list_p = table[s]
    logged = LoggedLists(items, prop, swap, clicks, conv, list_p)
    # the candidate: ranks the k + m candidates by a noisy view of the truth
    view = np.log(gamma) + candidate_noise * rng.standard_normal((n, width))
    by_candidate = np.argsort(-view, axis=1)
    top = by_candidate[:, :k]
    candidate_rank = np.argsort(by_candidate, axis=1)  # the candidate's rank of each candidate
    target = np.take_along_axis(cands, top, axis=1)
    g_t = np.take_along_axis(gamma, top, axis=1)
    truth = {
        "clicks_per_list": float((theta[None, :] * g_t).sum(axis=1).mean()),
        "conversions_per_list": float(
            (theta[None, :] * np.take_along_axis(buy, top, axis=1)).sum(axis=1).mean()
        ),
        "list_ctr": float((1 - np.prod(1 - theta[None, :] * g_t, axis=1)).mean()),
    }
    return SyntheticLog(
        logged, target, truth, n_items, order, top, np.take_along_axis(candidate_rank, order, axis=1)
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shelfwise bench ope", description=__doc__)
    p.add_argument("--lists", type=int, default=1_000_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--share", type=float, default=1.0, help="share of lists explored")
    p.add_argument("--epsilon", type=float, default=0.05, help="share of an explored list's slots swapped")
    p.add_argument("--pool", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.lists < 1 or args.k < 1:
        print("shelfwise bench ope: --lists and --k must be positive", file=sys.stderr)
        return 2
    policy = ExplorationPolicy(share=args.share, epsilon=args.epsilon, pool=args.pool)
    t0 = time.perf_counter()
    log = synthesize(args.lists, k=args.k, policy=policy, seed=args.seed)
    synth_s = time.perf_counter() - t0
    print(f"synthesised {args.lists} lists in {synth_s:.1f} s", file=sys.stderr)
    t0 = time.perf_counter()
    baseline = float(log.logged.clicks.sum(axis=1).mean())
    baseline_s = time.perf_counter() - t0
    import tracemalloc

    rss_before = peak_rss_mb()
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the estimators' own peak
    t0 = time.perf_counter()
    report = evaluate(log.logged, log.target, config=OpeConfig(), n_items=log.n_items)
    ope_s = time.perf_counter() - t0
    ope_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.reset_peak()
    # DR as the gate runs it: the direct model by both models' ranks, fitted, then every estimator
    t0 = time.perf_counter()
    direct = rank_direct_model(
        log.logged,
        log.ranks_logged,
        log.ranks_target,
        candidate_ranks_logged=log.candidate_ranks_logged,
        scale="normal",
        n_ranked=log.n_items,
    )
    fit_s = time.perf_counter() - t0
    two_rank = evaluate(log.logged, log.target, config=OpeConfig(), n_items=log.n_items, direct=direct)
    two_rank_s = time.perf_counter() - t0
    two_rank_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    dr2 = two_rank.get("dr")
    print(
        "position/dr/ctr, two-rank direct model: "
        + (
            "refused: " + dr2.refused
            if dr2.refused
            else f"{dr2.value:.5f} [{dr2.lower:.5f}, {dr2.upper:.5f}]"
        )
        + f"  ({two_rank_s:.1f} s)",
        file=sys.stderr,
    )
    rows = {}
    for e in report.estimates:
        truth = (
            log.truth[
                {"ctr": "clicks_per_list", "conversion": "conversions_per_list"}[e.metric]
                if e.level == "position"
                else "list_ctr"
            ]
            if (e.level == "position" or e.metric == "ctr")
            else None
        )
        key = f"{e.level}/{e.estimator}/{e.metric}"
        rows[key] = {
            "value": None if e.value is None else round(e.value, 5),
            "interval": None if e.lower is None else [round(e.lower, 5), round(e.upper or 0, 5)],
            "truth": None if truth is None else round(truth, 5),
            "ess": round(e.ess, 1),
            "refused": e.refused,
        }
        shown = "refused: " + e.refused if e.refused else f"{e.value:.5f} [{e.lower:.5f}, {e.upper:.5f}]"
        print(f"{key:28s} {shown}  truth {truth if truth is None else round(truth, 5)}", file=sys.stderr)
    emit(
        {
            "lists": args.lists,
            "slots": int((log.logged.items >= 0).sum()),
            "policy": policy.params(),
            "ope_seconds": round(ope_s, 2),
            "lists_per_second": round(args.lists / ope_s),
            "baseline_on_policy_mean_seconds": round(baseline_s, 3),
            "synthesis_seconds": round(synth_s, 2),
            "logged_clicks_per_list": round(baseline, 5),
            "coverage": round(report.coverage, 4),
            "estimates": rows,
            "ope_peak_allocated_mb": round(ope_peak_mb, 1),
            "two_rank_direct_model": {
                "fit_seconds": round(fit_s, 2),
                "seconds_with_every_estimator": round(two_rank_s, 2),
                "peak_allocated_mb": round(two_rank_peak_mb, 1),
                "dr_ctr": None if dr2.value is None else round(dr2.value, 5),
                "interval": None if dr2.lower is None else [round(dr2.lower, 5), round(dr2.upper or 0, 5)],
                "truth": round(log.truth["clicks_per_list"], 5),
            },
            "log_arrays_mb": round(
                sum(a.nbytes for a in vars(log.logged).values() if isinstance(a, np.ndarray)) / 2**20, 1
            ),
            "peak_rss_before_ope_mb": rss_before,
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0
