"""Content-based scores for new items: tokens, cosine, and the offline protocol on a tiny log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from shelfwise.errors import InputError
from shelfwise.training.content import ContentModel, evaluate_new_items, item_tokens
from shelfwise.training.data import interactions_from_table

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def test_tokens_cover_title_category_path_and_brand() -> None:
    assert item_tokens("Red Mugs", "Kitchen/Cups", "Acme") == [
        "red",
        "mug",
        "c:kitchen",
        "c:kitchen/cups",
        "b:acme",
    ]


def test_a_profile_prefers_items_that_share_its_words() -> None:
    model = ContentModel(
        ["red mug", "blue mug", "garden hose", "red hose"], ["kitchen", "kitchen", "garden", "garden"]
    )
    history = sp.csr_matrix(np.array([[1.0, 0, 0, 0]], np.float32))  # bought the red mug
    scores = model.scores(history, np.array([1, 2, 3]))[0]
    assert scores[0] > scores[2] > scores[1] >= 0  # blue mug (kitchen, mug) > red hose (red) > garden hose


def _log() -> pa.Table:
    """Mug lovers and hose lovers; after the cut a new mug and a new hose appear."""
    rows = []
    for u in range(40):
        mug = u % 2 == 0
        rows.append(
            (f"u{u}", "m1" if mug else "h1", "Ceramic mug" if mug else "Garden hose", T0 + timedelta(hours=u))
        )
        rows.append(
            (f"u{u}", "m2" if mug else "h2", "Tea mug" if mug else "Long hose", T0 + timedelta(hours=50 + u))
        )
    for u in range(40):
        mug = u % 2 == 0
        rows.append(
            (
                f"u{u}",
                "m9" if mug else "h9",
                "Coffee mug" if mug else "Hose reel",
                T0 + timedelta(days=10, hours=u),
            )
        )
    users, items, titles, ts = zip(*rows, strict=True)
    return pa.table(
        {
            "event_type": ["purchase"] * len(rows),
            "user_id": list(users),
            "item_id": list(items),
            "timestamp": pa.array(list(ts), pa.timestamp("ms", tz="UTC")),
            "weight": pa.array([8.0] * len(rows), pa.float32()),
            "category": ["home"] * len(rows),
            "properties": [f'{{"title": "{t}"}}' for t in titles],
        }
    )


def test_new_items_ranked_with_content_beat_random_order() -> None:
    got = evaluate_new_items(interactions_from_table(_log()), fraction=0.6, k=1, random_orders=20)
    assert got["protocol"]["new_items"] == 2 and got["protocol"]["users"] == 40
    assert got["with_content"]["ndcg"] == 1.0  # each user's own kind of item first
    assert got["without_content"]["ndcg"] == pytest.approx(0.5, abs=0.1)


def test_no_new_items_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="first seen after the cut"):
        evaluate_new_items(interactions_from_table(_log()), fraction=0.99)
