"""Challenger vs champion bounds: golden numbers, properties, and the repeated-looks guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.monitoring.comparison import (
    compare_rates,
    guarded_compare,
    lists_needed,
    mixture_halfwidth,
    one_sided_halfwidth,
)
from shelfwise.monitoring.config import MonitoringConfig


def test_mixture_halfwidth_golden() -> None:
    # v = 0.01, tau = 0.2, alpha = 0.05: 2*0.01*0.05/0.04 * (ln 20 + ln(5)/2) = 0.025 * 3.8004...
    expected = math.sqrt(0.025 * (math.log(20) + 0.5 * math.log(5)))
    assert mixture_halfwidth(0.01, 0.05, 0.2) == pytest.approx(expected)


@pytest.mark.parametrize(("v", "alpha", "tau"), [(0.01, 0.05, 0.2), (0.002, 0.1, 0.2), (0.3, 0.01, 1.0)])
def test_one_sided_halfwidth_solves_the_half_normal_mixture(v: float, alpha: float, tau: float) -> None:
    """At the returned width the mixture of likelihood ratios, integrated numerically, equals 1/alpha."""
    w = one_sided_halfwidth(v, alpha, tau)
    lam = np.linspace(-12 * tau, 0.0, 400_001)  # alternatives below theta0 = theta_hat + w
    lr = np.exp(lam * (-w) / v - lam**2 / (2 * v))
    density = 2 * np.exp(-(lam**2) / (2 * tau**2)) / (tau * math.sqrt(2 * math.pi))
    y = lr * density
    mixture = float(np.sum((y[1:] + y[:-1]) * np.diff(lam)) / 2)
    assert mixture == pytest.approx(1 / alpha, rel=1e-3)
    # One-sided: narrower than the two-sided mixture at the same alpha, wider than at 2 alpha.
    assert mixture_halfwidth(v, 2 * alpha, tau) <= w < mixture_halfwidth(v, alpha, tau)


def test_compare_rates_golden() -> None:
    b = compare_rates(100, 1000, 1000, 9000, alpha=0.05, tau=0.2, margin=0.05)
    xc, nc, xb, nb = 100.5, 1000.5, 1000.5, 9000.5
    qb = xb / nb
    qc = 0.95 * qb
    log_ratio = math.log((xc / nc) / qb)
    w = one_sided_halfwidth((1 - qc) / (nc * qc) + (1 - qb) / (nb * qb), 0.05, 0.2)
    assert b.ratio == pytest.approx(math.exp(log_ratio))
    assert b.drop_lcb == pytest.approx(1 - math.exp(log_ratio + w))
    assert b.drop_lcb < 0  # equal rates: no evidence of a drop


def test_clear_drop_gives_positive_lcb_and_zero_clicks_is_finite() -> None:
    assert compare_rates(100, 2000, 1800, 18000, 0.05, 0.2).drop_lcb > 0.3
    b = compare_rates(0, 300, 300, 2700, 0.01, 0.2, margin=0.3)
    assert math.isfinite(b.drop_lcb) and b.drop_lcb > 0.3


def test_guard_returns_none_on_small_samples() -> None:
    kw = dict(alpha=0.05, tau=0.2, min_lists=200, min_champion_successes=20)
    assert guarded_compare(1, 100, 50, 900, **kw) is None
    assert guarded_compare(1, 300, 10, 2700, **kw) is None
    assert guarded_compare(30, 300, 300, 2700, **kw) is not None


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.data())
def test_bounds_bracket_the_estimate(nc: int, nb: int, data: st.DataObject) -> None:
    xc = data.draw(st.integers(0, nc))
    xb = data.draw(st.integers(0, nb))
    b = compare_rates(xc, nc, xb, nb, 0.05, 0.2, data.draw(st.sampled_from([0.0, 0.05, 0.3])))
    assert 0 < b.lower <= b.ratio <= b.upper
    assert b.drop_lcb <= b.drop


def test_repeated_looks_under_no_difference_rarely_alarm() -> None:
    """576 looks (48 h of 5-minute windows) at cumulative counts: the LCB stays below the margin."""
    cfg = MonitoringConfig()
    rng = np.random.default_rng(7)
    alarms = 0
    runs = 40
    for _ in range(runs):
        xc = nc = xb = nb = 0
        for _look in range(576):
            nc += 30
            nb += 270
            xc += rng.binomial(30, 0.1)
            xb += rng.binomial(270, 0.1)
            if (
                compare_rates(xc, nc, xb, nb, cfg.alpha, cfg.tau, cfg.quality_margin).drop_lcb
                > cfg.quality_margin
            ):
                alarms += 1
                break
    assert alarms <= 1


def test_twenty_percent_drop_is_detected_by_lists_needed() -> None:
    cfg = MonitoringConfig()
    n = lists_needed(
        base_rate=0.2, drop=0.2, share=0.1, margin=cfg.quality_margin, alpha=cfg.alpha, tau=cfg.tau
    )
    assert 500 < n < 1500
    b = compare_rates(round(n * 0.16), n, round(9 * n * 0.2), 9 * n, cfg.alpha, cfg.tau, cfg.quality_margin)
    assert b.drop_lcb > cfg.quality_margin
