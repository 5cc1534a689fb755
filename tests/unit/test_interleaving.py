"""Team-draft interleaving: the draft, its served-list log, the credit of clicks and the comparison."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.monitoring.comparison import compare_preference, guarded_preference
from shelfwise.monitoring.config import AttributionWindows
from shelfwise.monitoring.quality import compute_interleaving
from shelfwise.serving.impressions import ServedListError, served_list_line, served_list_rows
from shelfwise.serving.interleave import team_draft

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 30), max_size=15, unique=True),
    st.lists(st.integers(0, 30), max_size=15, unique=True),
    st.integers(1, 12),
    st.text(max_size=8),
)
def test_team_draft_is_balanced_distinct_and_in_each_teams_order(
    a: list[int], b: list[int], k: int, seed: str
) -> None:
    ra, rb = [str(x) for x in a], [str(x) for x in b]
    m = team_draft(ra, rb, k, seed)
    items = [(ra, rb)[t][r] for t, r in zip(m.teams, m.ranks, strict=True)]
    assert len(items) == len(set(items)) == min(k, len(set(ra) | set(rb)))
    for team in (0, 1):
        ranks = [r for t, r in zip(m.teams, m.ranks, strict=True) if t == team]
        assert ranks == sorted(ranks)
    # While both rankings have items left, the teams differ by at most one pick at any depth.
    n_a, n_b = m.teams.count(0), m.teams.count(1)
    if len(items) == k and len(ra) >= k and len(rb) >= k:
        assert abs(n_a - n_b) <= 1
    assert team_draft(ra, rb, k, seed) == m  # the coin is the seed's hash: replayable


def test_the_first_pick_is_a_fair_coin() -> None:
    firsts = [team_draft(["a", "b"], ["c", "d"], 2, f"rec-{i}").teams[0] for i in range(2000)]
    assert 0.45 < sum(firsts) / len(firsts) < 0.55


def test_an_interleaved_line_carries_each_items_source_to_the_rows() -> None:
    served = (
        "r1",
        "interleaved",
        "v2",
        "recommendations",
        3,
        1_800_000_000.0,
        ["x", "y", "z"],
        [0.9, 0.5, 0.4],
        None,
        ["v1", "v2", "v1"],
    )
    doc = json.loads(served_list_line(served))
    assert doc["sources"] == ["v1", "v2", "v1"]
    rows = served_list_rows(doc)
    assert [(r["variant"], r["model_version"]) for r in rows] == [
        ("interleaved", "v1"),
        ("interleaved", "v2"),
        ("interleaved", "v1"),
    ]
    for bad in (["v1"], ["v1", "v2", 3], "v1"):
        with pytest.raises(ServedListError, match="sources"):
            served_list_rows({**doc, "sources": bad})


def _events(rows: list[tuple[str, str, str, str, int]]) -> pa.Table:
    """(event_type, recommendation_id, item_id, model_version or '', seconds after T0)."""
    ts = [T0 + timedelta(seconds=s) for *_x, s in rows]
    return pa.table(
        {
            "event_type": [r[0] for r in rows],
            "recommendation_id": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "timestamp": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "variant": [("interleaved" if r[0] == "impression" else None) for r in rows],
            "model_version": [r[3] or None for r in rows],
            "position": [0] * len(rows),
        }
    )


def test_clicks_are_credited_to_the_version_that_placed_the_item() -> None:
    imp = [
        ("impression", rid, item, v, 10)
        for rid in ("a", "b", "c", "d")
        for item, v in (("x", "v1"), ("y", "v2"))
    ]
    fb = [
        ("click", "a", "x", "", 40),  # v1 wins a (early)
        ("click", "b", "y", "", 50),  # v2 wins b (early)
        ("click", "c", "x", "", 60),  # c: one each -> tie
        ("click", "c", "y", "", 70),
        ("click", "d", "y", "", 10 + 20 * 60),  # v2 wins d, late (after 5 min, within 30)
        ("click", "d", "y", "", 15 + 20 * 60),  # a double click counts once
        ("click", "a", "y", "", 10 + 40 * 60),  # outside the click window: ignored
        ("purchase", "b", "y", "", 3000),
    ]
    got = compute_interleaving(
        _events(imp + fb), T0, T0 + timedelta(minutes=5), AttributionWindows(), T0 + timedelta(hours=2)
    )
    assert got.lists == 4 and got.impressions == {"v1": 4, "v2": 4}
    assert got.wins == {"v1": 1, "v2": 2}
    assert got.early_wins == {"v1": 1, "v2": 1}
    assert got.purchase_wins == {"v2": 1}


def test_preference_bound_golden_and_direction() -> None:
    even = compare_preference(100, 100, alpha=0.05, tau=0.2, margin=0.02)
    assert even.ratio == pytest.approx(1.0) and even.drop_lcb < 0 < even.upper - 1
    worse = compare_preference(20, 100, alpha=0.05, tau=0.2, margin=0.02)
    assert worse.ratio == pytest.approx(20.5 / 100.5) and worse.drop_lcb > 0.5
    # More evidence, same proportion: a tighter bound.
    assert compare_preference(40, 200, 0.05, 0.2, 0.02).drop_lcb > worse.drop_lcb
    # A broken challenger that wins nothing stays finite.
    assert 0 < compare_preference(0, 15, 0.005, 1.0, 0.3).upper < 0.7
    assert guarded_preference(3, 4, alpha=0.05, tau=0.2, min_decisive=10) is None
    with pytest.raises(ValueError):
        compare_preference(0, 0, 0.05, 0.2)
