"""The Thompson-sampling canary split (the rollout steps that use it are in test_rollout.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.canary_bandit import Allocation, BanditPolicy, allocate
from shelfwise.errors import InputError
from shelfwise.rollout import RolloutPolicy


def split(
    challenger: str, n_c: int, x_c: int, n_b: int, x_b: int, lower: float | None = None
) -> dict[str, Any]:
    """The monitor's evidence of a split canary (``MonitoringJob.evidence``)."""
    return {
        "challenger": challenger,
        "champion": "v1",
        "design": "split",
        "lists_challenger": n_c,
        "clicked_challenger": x_c,
        "lists_champion": n_b,
        "clicked_champion": x_b,
        "margin": 0.03,
        "confidence": 0.95,
        "mature_windows": 8,
        "estimate": None if lower is None else lower + 0.05,
        "lower": lower,
        "upper": None if lower is None else lower + 0.1,
        "n_challenger": n_c,
        "n_champion": n_b,
    }


def lbeta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def p_better_exact(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(Beta(a1, b1) > Beta(a2, b2)) in closed form for integer parameters (Evan Miller's sum)."""
    return sum(
        math.exp(lbeta(a2 + i, b2 + b1) - math.log(b1 + i) - lbeta(1 + i, b1) - lbeta(a2, b2))
        for i in range(a1)
    )


def test_allocation_matches_the_exact_posterior_probability_and_is_reproducible() -> None:
    policy = BanditPolicy(champion_floor=0.0, challenger_cap=1.0, challenger_min=0.01, draws=20_000)
    ev = split("v2", 400, 60, 3600, 450)  # 15% vs 12.5% clicked lists
    a = allocate(ev, policy)
    assert isinstance(a, Allocation)
    exact = p_better_exact(61, 341, 451, 3151)
    assert abs(a.p_challenger_better - exact) < 0.015, (a.p_challenger_better, exact)
    assert a.weight == pytest.approx(a.p_challenger_better, abs=1e-4)
    assert a.posterior_challenger == (61, 341) and a.posterior_champion == (451, 3151)
    # Same evidence, same split (seeded by the counts); another policy seed, another draw.
    assert allocate(ev, policy) == a
    assert (
        allocate(
            ev,
            BanditPolicy(champion_floor=0.0, challenger_cap=1.0, challenger_min=0.01, draws=20_000, seed=1),
        )
        != a
    )


def test_the_bounds_hold_the_champion_floor_and_the_challenger_cap() -> None:
    policy = BanditPolicy(champion_floor=0.6, challenger_cap=0.5, challenger_min=0.05)
    assert policy.ceiling == pytest.approx(0.4)
    great = allocate(split("v2", 2000, 600, 2000, 200), policy)
    awful = allocate(split("v2", 2000, 20, 2000, 200), policy)
    assert isinstance(great, Allocation) and isinstance(awful, Allocation)
    assert great.p_challenger_better > 0.99 and great.weight == pytest.approx(0.4)
    assert awful.p_challenger_better < 0.01 and awful.weight == 0.05


def test_interleaved_evidence_uses_the_wins() -> None:
    policy = BanditPolicy()
    ev = {"challenger": "v2", "design": "interleaved", "wins_challenger": 120, "wins_champion": 60}
    a = allocate(ev, policy)
    assert isinstance(a, Allocation) and a.design == "interleaved"
    assert a.p_challenger_better > 0.99 and a.weight == 0.5 and a.posterior_champion is None
    assert "decisive" in str(allocate({**ev, "wins_challenger": 10, "wins_champion": 5}, policy))


def test_too_little_evidence_gives_no_split_and_says_why() -> None:
    assert "no evidence" in str(allocate(None, BanditPolicy()))
    assert "matured lists" in str(allocate(split("v2", 10, 2, 900, 100), BanditPolicy()))
    assert "design" in str(allocate({"challenger": "v2", "design": None}, BanditPolicy()))
    with pytest.raises(InputError):
        allocate(split("v2", 100, 101, 900, 100), BanditPolicy())


def test_policy_validation() -> None:
    with pytest.raises(InputError):
        BanditPolicy(champion_floor=0.99, challenger_min=0.05)  # ceiling below the minimum
    with pytest.raises(InputError):
        BanditPolicy(challenger_cap=1.5)
    with pytest.raises(InputError):
        RolloutPolicy(allocation="greedy")


@settings(max_examples=60, deadline=None)
@given(
    n_c=st.integers(50, 5000),
    n_b=st.integers(50, 5000),
    r_c=st.floats(0, 1),
    r_b=st.floats(0, 1),
    floor=st.floats(0, 0.9),
    cap=st.floats(0.1, 1),
)
def test_any_evidence_gives_a_weight_within_the_bounds(
    n_c: int, n_b: int, r_c: float, r_b: float, floor: float, cap: float
) -> None:
    policy = BanditPolicy(champion_floor=floor, challenger_cap=cap, challenger_min=0.05, draws=200)
    a = allocate(split("v2", n_c, int(r_c * n_c), n_b, int(r_b * n_b)), policy)
    assert isinstance(a, Allocation)
    assert 0 <= a.p_challenger_better <= 1
    assert 0.05 <= a.weight <= min(cap, 1 - floor)
    moved = allocate(split("v2", n_c, int(r_c * n_c), n_b, int(r_b * n_b)), policy, current=0.1)
    assert isinstance(moved, Allocation) and 0.05 <= moved.weight <= 0.2


def test_rollout_imports_no_numpy_for_the_rollback_function() -> None:
    """rollback_model ships without the data layer: importing rollout (and the bandit) must not need numpy."""
    import subprocess
    import sys

    code = "import sys, shelfwise.rollout; sys.exit('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
