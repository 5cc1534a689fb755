"""Off-policy estimators and the exploration policy: golden numbers, properties, unbiasedness."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.errors import InputError
from shelfwise.exploration import ExplorationPolicy, explore
from shelfwise.offpolicy import (
    LoggedLists,
    OpeConfig,
    default_examination,
    estimate_examination,
    evaluate,
    poisson_log_fit,
    rank_direct_model,
    rank_feature,
)
from shelfwise_local.bench.ope import synthesize

LOOSE = OpeConfig(clip=1e9, min_lists=1, min_coverage=0.0, min_ess=0.0, prior_strength=1.0)


def _tiny() -> tuple[LoggedLists, np.ndarray]:
    logged = LoggedLists(
        items=[[0, 1], [0, 2]],
        propensity=[[0.9, 0.9], [0.9, 0.05]],
        spread=[[False, False], [False, True]],
        clicks=[[1, 0], [0, 1]],
        conversions=[[0, 0], [0, 1]],
        list_propensity=[0.81, 0.045],
    )
    return logged, np.array([[1, 0], [2, 0]])


def test_position_level_golden_numbers() -> None:
    """theta = (1, 1/2). Slot weights eta_e / eta_0: list A 5/9 and 20/9, list B 5/9 and
    1 / (0.05 * 1.5) = 40/3; IPS = (5/9 + 40/3) / 2 = 125/18; the self-normaliser's mean is 80/27;
    the direct model (strength 1, prior = the pool slot's rate, capped at 1) gives gamma = 2/3, 2/3, 1,
    so DR = (4/9 + 206/27) / 2 = 109/27."""
    logged, target = _tiny()
    r = evaluate(logged, target, theta=np.array([1.0, 0.5]), config=LOOSE)
    assert r.get("ips").value == pytest.approx(125 / 18)
    assert r.get("snips").value == pytest.approx((125 / 18) / (80 / 27))
    assert r.get("dr").value == pytest.approx(109 / 27)
    assert r.coverage == pytest.approx(80 / 27)
    assert r.get("ips").per_impression == pytest.approx(125 / 36)
    # conversions: only list B's pool slot converted, weight 40/3
    assert r.get("ips", metric="conversion").value == pytest.approx(20 / 3)
    # interval: mean +- z * sd / sqrt(n), population sd over lists
    sd = np.std([5 / 9, 40 / 3])
    ips = r.get("ips")
    assert ips.upper - ips.value == pytest.approx(1.959964 * sd / math.sqrt(2), rel=1e-5)


def test_list_level_golden_numbers() -> None:
    logged, _ = _tiny()
    target = np.array([[0, 1], [5, 6]])  # equals list A, not list B
    r = evaluate(logged, target, theta=np.array([1.0, 0.5]), config=LOOSE)
    assert r.get("ips", "list").value == pytest.approx((1 / 0.81) / 2)
    assert r.get("snips", "list").value == pytest.approx(1.0)  # the one matching list was clicked


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
)
def test_on_policy_target_on_a_deterministic_log_gives_the_logged_figures(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = rng.permutation(n * k).reshape(n, k)
    clicks = (rng.random((n, k)) < 0.3).astype(float)
    conv = clicks * (rng.random((n, k)) < 0.5)
    logged = LoggedLists.deterministic(items, clicks, conv)
    r = evaluate(logged, items, config=LOOSE)
    per_list = clicks.sum(axis=1).mean()
    for est in ("ips", "snips", "dr"):
        assert r.get(est).value == pytest.approx(per_list)
        assert r.get(est, metric="conversion").value == pytest.approx(conv.sum(axis=1).mean())
    assert r.get("ips", "list").value == pytest.approx(clicks.max(axis=1).mean())
    assert r.coverage == pytest.approx(1.0)
    assert r.get("ips").ess == pytest.approx(n)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 20), st.integers(2, 5), st.integers(0, 2**32 - 1), st.floats(1.5, 50))
def test_clipping_never_raises_a_weight_above_the_cap(n: int, k: int, seed: int, clip: float) -> None:
    rng = np.random.default_rng(seed)
    items = rng.permutation(n * k).reshape(n, k)
    logged = LoggedLists(
        items,
        rng.uniform(0.001, 1, (n, k)),
        rng.random((n, k)) < 0.3,
        np.ones((n, k)),
        np.zeros((n, k)),
        np.full(n, 0.5),
    )
    target = items[:, ::-1]
    cfg = OpeConfig(clip=clip, min_lists=1, min_coverage=0, min_ess=0)
    r = evaluate(logged, target, config=cfg)
    # every slot clicked, each weight <= clip: clicks per list <= k * clip
    assert r.get("ips").value <= k * clip + 1e-9
    assert 0 <= r.get("ips").clipped_share <= 1


def test_a_candidate_the_log_does_not_cover_is_refused_with_the_reason() -> None:
    log = synthesize(5000, seed=3)
    foreign = log.target + log.n_items  # items the log never showed
    r = evaluate(log.logged, foreign, n_items=2 * log.n_items)
    for est in ("ips", "snips", "dr"):
        assert r.get(est).value is None
        assert "support" in (r.get(est).refused or "")
    assert r.coverage < 0.01


def test_too_few_lists_are_refused_for_sample_size() -> None:
    log = synthesize(50, seed=1)
    r = evaluate(log.logged, log.target)
    assert "sample size" in (r.get("dr").refused or "")


def test_estimators_recover_the_truth_under_exploration() -> None:
    """A seeded synthetic log (truth known): every position-level interval holds the true value."""
    log = synthesize(40_000, policy=ExplorationPolicy(share=0.5, epsilon=0.2, pool=10), seed=7)
    r = evaluate(log.logged, log.target, n_items=log.n_items)
    truth = log.truth["clicks_per_list"]
    for est in ("ips", "snips", "dr"):
        e = r.get(est)
        assert e.lower <= truth <= e.upper, (est, e, truth)
        assert abs(e.value - truth) / truth < 0.05
    # the logged (champion) value differs from the candidate's, so the estimate is not the log's mean
    assert abs(r.logged["clicks_per_list"] - truth) / truth > 0.02


def test_examination_is_recovered_from_the_swapped_slots() -> None:
    log = synthesize(200_000, policy=ExplorationPolicy(share=1.0, epsilon=0.3, pool=10), seed=2)
    theta = estimate_examination(log.logged, 10)
    assert theta is not None
    expected = 1 / np.log2(np.arange(10) + 2)
    assert np.allclose(theta, expected, atol=0.1)


def test_bad_inputs_are_refused() -> None:
    logged, target = _tiny()
    with pytest.raises(InputError):
        evaluate(logged, target[:1])
    with pytest.raises(InputError):
        LoggedLists([[0]], [[0.0]], [[False]], [[0]], [[0]], [1.0])
    with pytest.raises(InputError):
        OpeConfig(clip=1.0)


# ------------------------------------------------------------------------------ exploration
def test_slot_swap_propensities_are_the_policy_s_marginals() -> None:
    """Monte Carlo over the seeded policy: how often each item lands at each slot, and each whole
    list, matches the propensities the policy records (n=4 slots, pool of 2: swaps are capped)."""
    policy = ExplorationPolicy(share=0.6, epsilon=0.4, pool=2)
    rng = np.random.default_rng(11)
    draws = 60_000
    slot_counts: Counter[tuple[int, int]] = Counter()
    list_counts: Counter[tuple[int, ...]] = Counter()
    recorded: dict[tuple[int, int], float] = {}
    list_p: dict[tuple[int, ...], float] = {}
    for _ in range(draws):
        e = explore(6, 4, policy, rng)
        key = tuple(e.order.tolist())
        list_counts[key] += 1
        list_p[key] = e.list_propensity
        for pos, (item, p) in enumerate(zip(e.order.tolist(), e.propensities, strict=True)):
            slot_counts[(item, pos)] += 1
            recorded[(item, pos)] = p
            assert e.spread[pos] == (item >= 4)
    for (item, pos), p in recorded.items():
        assert slot_counts[(item, pos)] / draws == pytest.approx(p, abs=0.01)
    assert sum(list_p.values()) == pytest.approx(1.0, abs=1e-9)
    for key, p in list_p.items():
        assert list_counts[key] / draws == pytest.approx(p, abs=0.01)


def test_every_possible_list_is_counted_once_in_the_list_propensities() -> None:
    """Enumerate the lists the policy can serve (4 slots, pool of 3): their probabilities sum to 1."""
    policy = ExplorationPolicy(share=0.3, epsilon=0.25, pool=3)
    total = 0.0
    from shelfwise.exploration import _swap_law

    _q, p_set = _swap_law(4, 3, 0.25)
    for s in range(0, 4):
        for _slots in itertools.combinations(range(4), s):
            n_orders = math.perm(3, s)
            p = (1 - policy.share) + policy.share * p_set[0] if s == 0 else policy.share * p_set[s] / n_orders
            total += p * (1 if s == 0 else n_orders)
    assert total == pytest.approx(1.0)


def test_no_budget_or_no_pool_serves_the_model_s_list() -> None:
    rng = np.random.default_rng(0)
    for n_cand, policy in [
        (10, ExplorationPolicy(share=0.0)),
        (5, ExplorationPolicy(share=1.0, epsilon=1.0)),
    ]:
        e = explore(n_cand, 5, policy, rng)
        assert e.order.tolist() == list(range(5))
        assert e.propensities == [1.0] * 5
        assert e.list_propensity == 1.0


def test_exploration_is_reproducible_with_a_seed() -> None:
    policy = ExplorationPolicy(share=1.0, epsilon=0.5, pool=5)
    a = [explore(15, 10, policy, np.random.default_rng(5)).order.tolist() for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_exploration_cost_golden_numbers() -> None:
    """Two lists: kept slots (propensity 0.8) clicked once in each list, one swapped slot clicked.
    Logged clicks per list: (1 + 2) / 2 = 1.5; as ranked: (1/0.8 + 1/0.8) / 2 = 1.25; cost = 1 - 1.5/1.25."""
    from shelfwise.offpolicy import exploration_cost

    logged = LoggedLists(
        [[0, 1], [2, 3]],
        [[0.8, 0.8], [0.8, 0.05]],
        [[False, False], [False, True]],
        [[1, 0], [1, 1]],
        [[0, 0], [0, 0]],
        [0.64, 0.04],
    )
    c = exploration_cost(logged)
    assert c is not None
    assert (c.logged, c.ranked) == (pytest.approx(1.5), pytest.approx(1.25))
    assert c.cost == pytest.approx(1 - 1.5 / 1.25)
    assert c.explored_slots == pytest.approx(0.25)


def test_exploration_cost_on_a_synthetic_log_holds_the_true_cost() -> None:
    from shelfwise.offpolicy import exploration_cost

    policy = ExplorationPolicy(share=1.0, epsilon=0.05, pool=10)
    log = synthesize(100_000, policy=policy, seed=4)
    ranked = synthesize(100_000, policy=ExplorationPolicy(share=0.0), seed=4)  # same lists, no swaps
    true_cost = 1 - log.logged.clicks.sum() / ranked.logged.clicks.sum()
    c = exploration_cost(log.logged)
    assert c is not None and c.lower - 0.01 <= true_cost <= c.upper + 0.01
    assert 0 < c.cost < 0.05


def test_dr_interval_adds_the_slots_the_log_does_not_cover_and_nothing_at_full_coverage() -> None:
    log = synthesize(5000, seed=3)
    covered = evaluate(log.logged, log.target, config=LOOSE, n_items=log.n_items).get("dr")
    # fully covered: the interval is the normal one over lists
    assert covered.sampling_half_width is not None
    assert covered.upper - covered.value == pytest.approx(covered.sampling_half_width)
    assert covered.value - covered.lower == pytest.approx(covered.sampling_half_width)
    # the last half of the candidate's slots hold items the log never showed
    partly = log.target.copy()
    k = partly.shape[1]
    partly[:, k // 2 :] = partly[:, k // 2 :] + log.n_items
    r = evaluate(log.logged, partly, config=LOOSE, n_items=2 * log.n_items)
    e = r.get("dr")
    assert 0.2 < r.coverage < 0.95
    half = e.sampling_half_width
    assert e.lower < e.value - half - 1e-6 and e.upper > e.value + half + 1e-6
    # no more than the uncovered examination at the extremes of the direct model's range
    exam = 1.0 / np.log2(np.arange(k) + 2.0)
    assert (e.upper - e.value - half) + (e.value - half - e.lower) <= exam.sum() * (1 - r.coverage) + 1e-9
    # IPS and SNIPS keep the normal interval (they are refused below 80% coverage by default)
    ips = r.get("ips")
    assert ips.upper - ips.value == pytest.approx(ips.sampling_half_width)


def _two_model_world(
    n: int = 6000, n_items: int = 250, k: int = 5, pool: int = 10, seed: int = 1
) -> tuple[LoggedLists, np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
    """Shoppers with a true affinity per item; the logger and a better candidate score it with
    noise; the logger explores its next ``pool`` items. Returns the log, the candidate's lists, its
    true expected clicks per list, and the ranks the direct models read (logger's of logged and
    target items, candidate's of logged items)."""
    rng = np.random.default_rng(seed)
    affinity = rng.standard_normal((n, n_items))
    order0 = np.argsort(-(affinity + 0.8 * rng.standard_normal((n, n_items))), axis=1)
    order1 = np.argsort(-(affinity + 0.4 * rng.standard_normal((n, n_items))), axis=1)
    rank0, rank1 = np.argsort(order0, axis=1), np.argsort(order1, axis=1)
    theta = default_examination(k)
    gamma = 1 / (1 + np.exp(-(-2.0 + 1.5 * affinity)))
    policy = ExplorationPolicy(share=1.0, epsilon=0.1, pool=pool)
    cols: list[list[np.ndarray]] = [[], [], [], []]
    for i in range(n):
        ex = explore(k + pool, k, policy, rng)
        for col, v in zip(
            cols,
            (order0[i, : k + pool][ex.order], ex.propensities, ex.spread, ex.list_propensity),
            strict=True,
        ):
            col.append(np.asarray(v))
    items = np.stack(cols[0])
    rows = np.arange(n)[:, None]
    clicks = (rng.random((n, k)) < theta * gamma[rows, items]).astype(float)
    logged = LoggedLists(
        items, np.stack(cols[1]), np.stack(cols[2]), clicks, np.zeros((n, k)), np.stack(cols[3])
    )
    target = order1[:, :k]
    truth = float((theta * gamma[rows, target]).sum(axis=1).mean())
    return logged, target, truth, rank0[rows, items], rank0[rows, target], rank1[rows, items]


def test_the_candidate_s_own_rank_corrects_the_direct_model_beyond_the_pool() -> None:
    """A better candidate's picks the logger ranks below its pool are better than that rank's
    average: the logger's rank alone under-rates them; with the candidate's rank as well, DR is close."""
    logged, target, truth, rl, rt, own = _two_model_world()
    cfg = OpeConfig(min_coverage_dr=0.0)
    one = evaluate(logged, target, config=cfg, direct=rank_direct_model(logged, rl, rt)).get("dr")
    two_report = evaluate(
        logged,
        target,
        config=cfg,
        direct=rank_direct_model(logged, rl, rt, candidate_ranks_logged=own, scale="normal", n_ranked=250),
    )
    two = two_report.get("dr")
    assert two_report.coverage < 0.8  # the log does not cover the candidate: the direct model matters
    assert one.value < truth * 0.9
    assert abs(two.value / truth - 1) < 0.05
    assert two.lower <= truth <= two.upper


def test_the_two_rank_model_fits_known_rates_and_refuses_bad_input() -> None:
    # one list shape, rates set by both ranks exactly: exp(-1 - 0.5 z0 ... ) recovered by the fit
    x = np.column_stack([np.ones(9), np.repeat([0.0, 1.0, 2.0], 3), np.tile([0.0, 1.0, 2.0], 3)])
    beta = np.array([-1.0, -0.3, -0.2])
    exposure = np.full(9, 1e6)
    fitted = poisson_log_fit(x, exposure, exposure * np.exp(x @ beta))
    assert fitted == pytest.approx(beta, abs=1e-6)
    # coinciding features (a candidate ranked as the logger): still defined, same predictions
    same = poisson_log_fit(x[:, [0, 1, 1]], exposure, exposure * np.exp(x[:, :2] @ beta[:2]))
    assert x[:, [0, 1, 1]] @ same == pytest.approx(x[:, :2] @ beta[:2], abs=1e-6)
    z = rank_feature(200, "normal", 1000)
    assert np.all(np.diff(z) < 0)  # a lower rank stands for a lower score, the rest lowest of all
    with pytest.raises(InputError, match="number of ranked items"):
        rank_feature(200, "normal")
    with pytest.raises(InputError, match="rank scale"):
        rank_feature(200, "cubic")
    logged, _ = _tiny()
    with pytest.raises(InputError, match="candidate_ranks_logged"):
        rank_direct_model(logged, np.zeros((2, 2)), np.zeros((2, 2)), candidate_ranks_logged=np.zeros((3, 2)))


def test_the_simulated_bench_reports_each_direct_model_over_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    from shelfwise_local.bench.ope_simulated import main

    assert main(["--users", "1500", "--items", "400", "--seeds", "2", "--pool", "30"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["runs"] == 2
    for name in ("good", "slightly_worse"):
        models = out["dr_within_10pct"][name]
        assert set(models) == {"two-rank", "rank", "item"}
        assert models["two-rank"]["within"].endswith("of 2")
        assert out["coverage"][name]["position/dr"]["runs"] == 2
    # the broken model is never estimated: the log does not cover it
    assert out["dr_within_10pct"]["broken"]["two-rank"] == {"refused": 2}
    assert out["gate_passed"]["broken"] == "0 of 2"
