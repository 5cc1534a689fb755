"""The split canary with shoppers as the unit: per-shopper counts, the delta-method ratio and CUPED."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from shelfwise.monitoring.comparison import (
    adjusted_rates,
    compare_rates,
    compare_user_rates,
    user_sums,
)
from shelfwise.monitoring.config import AttributionWindows, MonitoringConfig
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.quality import shopper_counts
from shelfwise.monitoring.state import Deployment, MemoryStateStore

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _rows(lists: list[tuple[str, str, str, str | None, int, bool]]) -> pa.Table:
    """(recommendation id, variant, version, user hash or None, minute, clicked): 2 items per list."""
    cols: dict[str, list] = {c: [] for c in ("event_type", "recommendation_id", "item_id", "timestamp")}
    cols.update(variant=[], model_version=[], properties=[])
    for rid, variant, version, user, minute, clicked in lists:
        ts = T0 + timedelta(minutes=minute)
        props = json.dumps({"endpoint": "recommendations", "user_hash": user}) if user else None
        for pos in range(2):
            for c, v in zip(
                cols,
                ("impression", rid, f"i{pos}", ts, variant, version, props),
                strict=True,
            ):
                cols[c].append(v)
        if clicked:
            for c, v in zip(
                cols, ("click", rid, "i1", ts + timedelta(seconds=20), None, None, None), strict=True
            ):
                cols[c].append(v)
    cols["timestamp"] = pa.array(cols["timestamp"], pa.timestamp("ms", tz="UTC"))
    table = pa.table(cols)
    n = table.num_rows
    table = table.append_column("score", pa.nulls(n, pa.float32()))
    table = table.append_column("position", pa.array(np.zeros(n, dtype=np.int32)))
    for name, typ in (("price", pa.float64()), ("quantity", pa.float64()), ("category", pa.string())):
        table = table.append_column(name, pa.nulls(n, typ))
    return table


def test_shopper_counts_group_lists_by_the_served_lists_user_hash() -> None:
    table = _rows(
        [
            ("a", "champion", "v1", "u1", 0, True),
            ("b", "champion", "v1", "u1", 1, False),
            ("c", "champion", "v1", None, 1, True),  # no shopper known: the list is its own unit
            ("d", "challenger", "v2", "u2", 2, True),
            ("e", "challenger", "v2", "u2", 9, True),  # outside the window
        ]
    )
    got = shopper_counts(table, T0, T0 + timedelta(minutes=5), AttributionWindows(), T0 + timedelta(hours=1))
    champ = dict(zip(got[("champion", "v1")][0], zip(*got[("champion", "v1")][1:], strict=True), strict=True))
    assert champ == {"u1": (2, 1), "c": (1, 1)}
    assert got[("challenger", "v2")] == (["u2"], [1], [1])


def test_shopper_sums_reduce_to_the_binomial_with_one_list_per_shopper() -> None:
    rng = np.random.default_rng(1)
    y_c, y_b = rng.uniform(size=2000) < 0.12, rng.uniform(size=18000) < 0.15
    c = user_sums(np.ones(y_c.size), y_c, np.zeros(y_c.size))
    b = user_sums(np.ones(y_b.size), y_b, np.zeros(y_b.size))
    rc, _rb = adjusted_rates(c, b)
    assert rc.variance == pytest.approx(rc.rate * (1 - rc.rate) / y_c.size, rel=1e-3)
    users = compare_user_rates(c, b, alpha=0.02, tau=0.2, margin=0.02)
    lists = compare_rates(int(y_c.sum()), y_c.size, int(y_b.sum()), y_b.size, 0.02, 0.2, 0.02)
    assert users.drop_lcb == pytest.approx(lists.drop_lcb, abs=0.01)


def _shoppers(rng: np.random.Generator, n: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Shoppers' click rates (log-normal spread ``sigma`` around 0.15) and activity (lists per hour)."""
    return 0.15 * rng.lognormal(-(sigma**2) / 2, sigma, n), rng.lognormal(1.0, 0.8, n)


def test_shopper_unit_widens_the_bound_when_a_shoppers_lists_are_alike() -> None:
    rng = np.random.default_rng(2)
    p, activity = _shoppers(rng, 3000, 0.8)
    n = 1 + rng.poisson(activity)
    y = rng.binomial(n, np.minimum(p, 1))
    arm = rng.uniform(size=p.size) < 0.1
    c = user_sums(n[arm], y[arm], np.zeros(arm.sum()))
    b = user_sums(n[~arm], y[~arm], np.zeros((~arm).sum()))
    rc, _ = adjusted_rates(c, b)
    binomial = rc.rate * (1 - rc.rate) / rc.lists
    assert rc.variance > 1.5 * binomial  # lists of one shopper are not independent draws


def test_cuped_removes_the_variance_pre_canary_behaviour_explains_and_stays_unbiased() -> None:
    rng = np.random.default_rng(3)
    ratios, adjusted, reductions = [], [], []
    for _ in range(200):
        p, activity = _shoppers(rng, 3000, 0.8)
        p = np.minimum(p, 1)
        # The same habits before and during the canary: a day before, an hour during.
        pre_n = rng.poisson(5 * activity)
        n = 1 + rng.poisson(activity)
        pre_y = rng.binomial(pre_n, p)
        x = pre_y - pre_y.sum() / pre_n.sum() * pre_n
        y = rng.binomial(n, p)
        arm = rng.uniform(size=p.size) < 0.5
        c = user_sums(n[arm], y[arm], x[arm])
        b = user_sums(n[~arm], y[~arm], x[~arm])
        rc, rb = adjusted_rates(c, b)
        ratios.append(rc.rate / rb.rate)
        adjusted.append(rc.adjusted / rb.adjusted)
        reductions.append(1 - rb.variance / rb.variance_unadjusted)
    assert np.mean(adjusted) == pytest.approx(1.0, abs=0.01)  # equal arms: no bias
    assert np.std(adjusted) < 0.9 * np.std(ratios)  # and a real reduction of the spread
    assert np.median(reductions) > 0.2


def test_a_broken_challenger_with_no_clicks_is_still_bounded_away() -> None:
    b = user_sums(np.full(900, 2), np.random.default_rng(4).binomial(2, 0.3, 900), np.zeros(900))
    c = user_sums(np.full(100, 2), np.zeros(100), np.zeros(100))
    bound = compare_user_rates(c, b, alpha=0.005, tau=1.0, margin=0.3)
    assert bound.drop_lcb > 0.3


def test_split_canary_evidence_uses_shoppers_and_their_pre_canary_covariate() -> None:
    rng = np.random.default_rng(5)
    users = [f"u{i}" for i in range(400)]
    rate = dict(zip(users, 0.3 * rng.lognormal(-0.32, 0.8, len(users)), strict=True))
    lists = []
    for minute in range(0, 120):  # an hour before the canary, an hour of canary
        for j in range(12):
            u = users[int(rng.integers(len(users)))]
            canary = minute >= 60 and int(u[1:]) % 10 == 0
            variant, version = ("challenger", "v2") if canary else ("champion", "v1")
            lists.append((f"r{minute}-{j}", variant, version, u, minute, rng.uniform() < min(rate[u], 1)))
    table = _rows(lists)

    class Source:
        def read(self, start: datetime, end: datetime) -> pa.Table:
            ts = table["timestamp"]
            lo, hi = pa.scalar(start, ts.type), pa.scalar(end, ts.type)
            import pyarrow.compute as pc

            return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))

    cfg = MonitoringConfig(covariate_lookback_hours=1.0, min_lists_for_comparison=20)
    shoppers = MemoryStateStore()
    job = MonitoringJob(Source(), _NoManifests(), MemoryStateStore(), cfg, shoppers=shoppers)
    deploy = Deployment(champion="v1", challenger="v2", canary_weight=0.1)
    start = T0 + timedelta(minutes=60)
    job.fast_pass(start, Deployment(champion="v1"))
    result = None
    for w in range(1, 13):
        result = job.fast_pass(start + timedelta(minutes=5 * w, seconds=20), deploy)
    assert result is not None
    ev = result.summary["evidence"]
    assert ev["design"] == "split" and ev["unit"] == "shopper" and ev["covariate"] is True
    assert ev["shoppers_challenger"] <= 40 and ev["shoppers_champion"] > 100
    assert ev["lower"] is not None and ev["lower"] < ev["estimate"] < ev["upper"]
    assert "CtrDropLCB/challenger" in result.values()
    assert shoppers.state["covariate"] and shoppers.state["covariate_lists"] > 500


class _NoManifests:
    def manifest(self, version: str) -> None:
        return None
