"""Realism figures: golden numbers on a hand-computed log, and Gini's properties."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfwise.simulator.stats import compute_stats, gini


def _table(rows: list[tuple[str, str | None, str, str | None, str]]) -> pa.Table:
    """(event_type, user_id, session_id, item_id, "YYYY-MM-DD HH:MM") rows as a curated-like table."""
    ts = [datetime.strptime(r[4], "%Y-%m-%d %H:%M").replace(tzinfo=UTC) for r in rows]
    return pa.table(
        {
            "event_type": pa.array([r[0] for r in rows]).dictionary_encode(),
            "user_id": pa.array([r[1] for r in rows], pa.string()),
            "session_id": pa.array([r[2] for r in rows], pa.string()),
            "item_id": pa.array([r[3] for r in rows], pa.string()),
            "timestamp": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "quantity": pa.array([2.0 if r[0] == "purchase" else None for r in rows]),
        }
    )


LOG = _table(
    [
        ("view", "u1", "s1", "a", "2026-01-05 10:00"),
        ("view", "u1", "s1", "b", "2026-01-05 10:02"),
        ("add_to_cart", "u1", "s1", "a", "2026-01-05 10:03"),
        ("purchase", "u1", "s1", "a", "2026-01-05 10:10"),
        ("view", None, "s2", "a", "2026-01-05 11:00"),
        ("search", None, "s2", None, "2026-01-05 11:01"),
        ("view", "u1", "s3", "a", "2026-01-06 09:00"),
        ("add_to_cart", "u1", "s3", "a", "2026-01-06 09:01"),
        ("purchase", "u1", "s3", "a", "2026-01-06 09:05"),
        ("view", "u2", "s4", "c", "2026-01-06 12:00"),
        ("add_to_cart", "u2", "s4", "c", "2026-01-06 12:30"),
        ("purchase", "u2", "s4", "c", "2026-01-06 12:40"),
    ]
)


def test_golden_figures() -> None:
    f = compute_stats(LOG)
    assert f["events"] == 12
    assert f["event_types"] == {
        "view": round(5 / 12, 5),
        "add_to_cart": 0.25,
        "purchase": 0.25,
        "search": round(1 / 12, 5),
    }
    assert f["taobao_mix"] == {
        "view": round(5 / 11, 5),
        "add_to_cart": round(3 / 11, 5),
        "add_to_wishlist": 0.0,
        "purchase": round(3 / 11, 5),
    }
    assert f["view_to_cart"] == 0.6 and f["cart_to_purchase"] == 1.0
    # Users: u1 (7 events), u2 (3), the anonymous session s2 (2).
    assert f["users"] == 3
    assert f["events_per_user"]["median"] == 3 and f["events_per_user"]["mean"] == 4
    # Items: a 7 events, b 1, c 3 -> Gini = sum|xi - xj| / (2 n^2 mean) = 24 / 66.
    assert f["items"] == 3 and f["item_gini"] == round(gini([1, 3, 7]), 4) == round(12 / 33, 4)
    assert f["days"] == 2 and f["events_per_day"] == 6
    # Sessions: s1 4 events over 10 minutes, s2 2 over 1, s3 3 over 5, s4 3 over 40.
    assert f["sessions"] == 4
    assert f["session_events"]["median"] == 3
    assert f["session_minutes"]["median"] == 7.5 and f["session_minutes"]["mean"] == 14
    # Purchases: u1 bought a on two days, u2 bought c once.
    assert f["buyers"] == 2 and f["repeat_customer_rate"] == 0.5
    assert f["repeat_item_purchase_rate"] == 0.5
    assert f["purchases_per_buyer"]["mean"] == 1.5
    assert f["purchase_quantity"]["median"] == 2
    assert f["purchase_lines_per_basket"]["mean"] == 1


def test_empty_log() -> None:
    assert compute_stats(LOG.slice(0, 0)) == {"events": 0}


def test_gini_golden() -> None:
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 1]) == pytest.approx(0.75)
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)
    assert gini([]) == 0.0


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=200), st.randoms())
def test_gini_bounds_and_symmetry(values: list[int], rnd) -> None:  # type: ignore[no-untyped-def]
    g = gini(values)
    assert 0.0 <= g < 1.0
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert gini(shuffled) == pytest.approx(g)
    assert gini([v * 3 for v in values]) == pytest.approx(g)
