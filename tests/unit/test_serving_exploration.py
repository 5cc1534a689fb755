"""Exploration in serving: budget, filters, opt-out, propensities in the served-list line and rows."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serving import Aliased, _recommender, remote  # noqa: F401  (fixture)

from shelfwise.served_lists import (
    ListLogging,
    ServedListError,
    impression_rows,
    served_list_line,
    served_list_rows,
    user_hash,
)
from shelfwise.serving import Filters, ImpressionSink, ServingRules
from shelfwise.serving.config import ExplorationRules


def _explorer(remote: Path, tmp_path: Path, out: io.StringIO, **rules: Any):  # noqa: F811
    exploration = ExplorationRules(**{"share": 1.0, "epsilon": 0.5, "pool": 5, "seed": 3, **rules})
    return _recommender(
        remote,
        tmp_path,
        Aliased(champion="v1"),
        rules=ServingRules(exploration=exploration),
        impressions=ImpressionSink(out),
    )


def test_explored_lists_log_exact_propensities_and_curate_them(remote: Path, tmp_path: Path) -> None:  # noqa: F811
    out = io.StringIO()
    rec = _explorer(remote, tmp_path, out)
    ranked = _recommender(remote, tmp_path / "b", Aliased(champion="v1")).recommend(
        user_id="user-000001", k=15
    )
    a = rec.recommend(user_id="user-000001", k=10)
    doc = json.loads(out.getvalue().splitlines()[0])
    top, pool = [i.item_id for i in ranked.items[:10]], [i.item_id for i in ranked.items[10:15]]
    swapped = [p for p, item in enumerate(a.item_ids) if item not in top]
    assert swapped and all(a.item_ids[p] in pool for p in swapped)
    assert all(a.item_ids[p] == top[p] for p in range(10) if p not in swapped)
    assert doc["spread"] == [p in swapped for p in range(10)]
    assert doc["policy"] == {"policy": "slot_swap", "share": 1.0, "epsilon": 0.5, "pool": 5}
    assert doc["user"] == user_hash("user-000001") and "user-000001" not in out.getvalue()
    keep = [p for p in doc["propensities"] if p > 0.1]
    assert len(set(keep)) == 1 and len(keep) == 10 - len(swapped)
    rows = served_list_rows(doc)
    props = [json.loads(json.dumps(r["properties"])) for r in rows]
    assert [p["propensity"] for p in props] == pytest.approx(doc["propensities"])
    assert all(p["user_hash"] == doc["user"] for p in props)


def test_same_seed_same_lists(remote: Path, tmp_path: Path) -> None:  # noqa: F811
    lists = []
    for run in range(2):
        rec = _explorer(remote, tmp_path / str(run), io.StringIO())
        lists.append([rec.recommend(user_id=f"user-{u:06d}", k=8).item_ids for u in range(1, 20)])
    assert lists[0] == lists[1]


def test_no_exploration_when_the_request_asks_none_or_on_fallbacks(remote: Path, tmp_path: Path) -> None:  # noqa: F811
    out = io.StringIO()
    rec = _explorer(remote, tmp_path, out, epsilon=1.0)
    rec.recommend(user_id="user-000001", k=10, explore=False)
    rec.recommend(user_id="nobody-at-all", k=5)  # popularity fallback
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    for d in docs:
        assert d["propensities"] == [1] * len(d["items"]) and d["list_propensity"] == 1
        assert d["policy"] == {"policy": "ranked"}


def test_explored_items_respect_the_filters(remote: Path, tmp_path: Path) -> None:  # noqa: F811
    rec = _explorer(remote, tmp_path, io.StringIO(), epsilon=1.0)
    ranked = _recommender(remote, tmp_path / "b", Aliased(champion="v1")).recommend(
        user_id="user-000002", k=1
    )
    banned = ranked.categories[0]
    for u in range(1, 30):
        got = rec.recommend(user_id=f"user-{u:06d}", k=6, filters=Filters(exclude_categories=(banned,)))
        assert banned not in got.categories


def test_no_exploration_config_leaves_the_line_unchanged(remote: Path, tmp_path: Path) -> None:  # noqa: F811
    out = io.StringIO()
    rec = _recommender(remote, tmp_path, Aliased(champion="v1"), impressions=ImpressionSink(out))
    rec.recommend(user_id="user-000001", k=3)
    assert "propensities" not in json.loads(out.getvalue())


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=6),
    props=st.lists(st.floats(min_value=1e-9, max_value=1.0), min_size=6, max_size=6),
    spread=st.lists(st.booleans(), min_size=6, max_size=6),
    list_p=st.one_of(st.none(), st.floats(min_value=1e-12, max_value=1.0)),
    user=st.one_of(st.none(), st.text(max_size=20)),
)
def test_a_line_with_propensities_expands_to_exactly_the_impression_rows(
    items: list[str], props: list[float], spread: list[bool], list_p: float | None, user: str | None
) -> None:
    n = len(items)
    hashed = None if user is None else user_hash(user)
    served = ("r", "champion", "v1", "recommendations", n, 1.8e9, items, [0.5] * n, hashed)
    logging = ListLogging(props[:n], spread[:n], list_p, {"policy": "slot_swap", "share": 0.05})
    line = served_list_line(served, logging)
    assert served_list_rows(json.loads(line)) == impression_rows(served, logging)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"propensities": [0.5]}, "propensities must be 2 numbers"),
        ({"propensities": [0.0, 1.0]}, "in \\(0, 1\\]"),
        ({"spread": [1, 0]}, "spread must be 2 booleans"),
        ({"list_propensity": 2}, "list_propensity"),
        ({"policy": "x"}, "policy must be an object"),
        ({"list_propensity": "x"}, "list_propensity"),
    ],
)
def test_broken_propensities_are_refused_whole(change: dict[str, Any], message: str) -> None:
    logging = ListLogging([0.9, 0.1], [False, True], 0.05, {"policy": "slot_swap"})
    doc = json.loads(
        served_list_line(("r", "champion", "v1", "search", 2, 0.0, ["a", "b"], [0.9, 0.5]), logging)
    )
    doc.update(change)
    with pytest.raises(ServedListError, match=message):
        served_list_rows(doc)


def test_new_items_after_an_explored_list_keep_propensity_one() -> None:
    from shelfwise.serving.exploring import with_new_items

    logging = ListLogging([0.95, 0.002, 0.95], [False, True, False], 0.01, {"policy": "slot_swap"})
    got = with_new_items(logging, 1, 3)  # the last place went to a new item
    assert list(got.propensities) == [0.95, 0.002, 1.0] and list(got.spread) == [False, True, False]
    assert got.list_propensity is None  # written null: the list level is refused for these lists
    line = served_list_line(
        ("r", "champion", "v1", "recommendations", 3, 0.0, ["a", "b", "n"], [0.3] * 3), got
    )
    assert json.loads(line)["list_propensity"] is None
