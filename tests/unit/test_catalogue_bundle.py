"""Bundles take item metadata from the catalogue; "already bought" means purchased, most recent first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from shelfwise.training.data import interactions_from_table
from shelfwise.training.job import item_metadata

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _events(rows: list[tuple[str, str, str, int, str]]) -> pa.Table:
    types, users, items, minutes, titles = zip(*rows, strict=True)
    weights = {"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0}
    return pa.table(
        {
            "event_type": list(types),
            "user_id": list(users),
            "item_id": list(items),
            "timestamp": pa.array([T0 + timedelta(minutes=m) for m in minutes], pa.timestamp("ms", tz="UTC")),
            "weight": pa.array([weights[t] for t in types], pa.float32()),
            "category": ["ev-cat"] * len(rows),
            "properties": [f'{{"title": "{t}"}}' if t else None for t in titles],
        }
    )


def test_purchases_only_most_recent_first_each_item_once() -> None:
    data = interactions_from_table(
        _events(
            [
                ("purchase", "u1", "a", 1, ""),
                ("view", "u1", "b", 2, ""),  # viewed, never bought: not "already bought"
                ("purchase", "u1", "c", 3, ""),
                ("add_to_cart", "u1", "d", 4, ""),
                ("purchase", "u1", "a", 5, ""),  # bought again: now the most recent
                ("purchase", "u2", "b", 1, ""),
            ]
        )
    )
    indptr, items = data.purchases_by_user()
    names = data.item_ids
    u1, u2 = (int(np.searchsorted(data.user_ids, u)) for u in ("u1", "u2"))
    assert names[items[indptr[u1] : indptr[u1 + 1]]].tolist() == ["a", "c"]
    assert names[items[indptr[u2] : indptr[u2 + 1]]].tolist() == ["b"]


def test_catalogue_metadata_wins_and_events_fill_the_gaps() -> None:
    data = interactions_from_table(
        _events(
            [
                ("view", "u1", "a", 1, "old title a"),
                ("view", "u1", "b", 2, "title b"),
                ("view", "u2", "c", 3, ""),
            ]
        )
    )
    catalogue = pa.table(
        {
            "item_id": ["c", "a", "zzz"],
            "title": ["Cat C", "Cat A", "not sold"],
            "category": ["shoes", "hats", "x"],
            "price": [3.0, None, 1.0],
            "in_stock": [False, True, True],
            "active": [True, False, True],
        }
    )
    meta = item_metadata(data.item_ids, data.item_info, catalogue)
    by = dict(zip(data.item_ids.tolist(), range(3), strict=True))
    assert meta["title"][by["a"]] == "Cat A" and meta["category"][by["a"]] == "hats"
    assert meta["title"][by["b"]] == "title b" and meta["category"][by["b"]] == "ev-cat"  # not listed
    assert meta["price"][by["c"]] == 3.0
    assert meta["in_stock"].tolist() == [False, True, False]  # a inactive, b unknown (in stock), c sold out
    assert meta["_source"] == {"items": 3, "from_catalogue": 2, "from_events": 1}
    assert item_metadata(data.item_ids, data.item_info, None)["in_stock"].all()
