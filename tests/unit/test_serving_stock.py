"""Live stock: a sold-out item leaves the served lists within the stock cache time, no retraining."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfwise.bundle import encode_text, savez_aligned
from shelfwise.serving.config import ServingConfig, ServingRules
from shelfwise.serving.filters import Filters
from shelfwise.serving.loader import ModelLoader
from shelfwise.serving.service import Recommender
from shelfwise.serving.stock import LiveStock, StockSnapshot
from tests.unit.test_serving import Aliased, _copy_fetch, remote  # noqa: F401  (fixture)


def stock_npz(
    ids: list[str], in_stock: list[bool], price: list[float], active: list[bool] | None = None
) -> bytes:
    order = np.argsort(np.asarray(ids))
    buf = io.BytesIO()
    savez_aligned(
        buf,
        {
            "item_id": encode_text(np.asarray(ids)[order]),
            "in_stock": np.asarray(in_stock, bool)[order],
            "active": np.asarray(active or [True] * len(ids), bool)[order],
            "price": np.asarray(price, np.float32)[order],
            "snapshot_id": np.asarray([f"s{len(ids)}-{sum(in_stock)}"]).astype("S"),
        },
    )
    return buf.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Feed:
    """The S3 object stands in: the current bytes and an ETag; counts reads."""

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.reads = 0

    def put(self, body: bytes) -> None:
        self.body = body

    def __call__(self) -> tuple[bytes, str] | None:
        self.reads += 1
        return None if self.body is None else (self.body, str(hash(self.body)))


@pytest.fixture
def setup(remote: Path, tmp_path: Path) -> Any:  # noqa: F811
    clock, feed = Clock(), Feed()
    stock = LiveStock(feed, ttl_seconds=30, background=False, clock=clock)
    config = ServingConfig(model_name="recs", cache_dir=str(tmp_path / "c"), alias_ttl_seconds=3600)
    loader = ModelLoader(None, "bucket", "recs", config.cache_dir, fetch=_copy_fetch(remote, None))
    rec = Recommender(config, loader, Aliased(champion="v1"), background=False, clock=clock, stock=stock)
    rec.start()
    return rec, feed, clock


def test_a_sold_out_item_leaves_the_lists_within_the_cache_time(setup: Any) -> None:
    rec, feed, clock = setup
    first = rec.recommend(user_id="user-000007", k=5)
    top = first.item_ids[0]
    feed.put(stock_npz([top, "not-in-bundle"], [False, True], [1.0, 2.0]))  # the catalogue ingest ran
    clock.now += 10  # within the cache: still the old snapshot (none)
    assert rec.recommend(user_id="user-000007", k=5).item_ids[0] == top
    clock.now += 25  # past 30 s: the next request refreshes it
    rec.recommend(user_id="user-000007", k=5)
    after = rec.recommend(user_id="user-000007", k=5)
    assert top not in after.item_ids and len(after.item_ids) == 5
    # the fallback and similar-items answers obey it too
    assert top not in rec.recommend(k=50).item_ids
    assert rec.health()["stock"]["items"] == 2
    # back in stock: back in the lists
    feed.put(stock_npz([top], [True], [1.0]))
    clock.now += 31
    rec.recommend(user_id="user-000007", k=5)
    assert rec.recommend(user_id="user-000007", k=5).item_ids[0] == top


def test_live_prices_drive_filters_and_answers_and_inactive_items_go(setup: Any) -> None:
    rec, feed, clock = setup
    items = rec.recommend(user_id="user-000003", k=3).item_ids
    feed.put(stock_npz(items, [True, True, True], [999.0, 1.0, 1.0], active=[True, False, True]))
    clock.now += 31
    rec.recommend(user_id="user-000003", k=3)
    out = rec.recommend(user_id="user-000003", k=20, filters=Filters(price_max=500.0))
    assert items[0] not in out.item_ids and items[1] not in out.item_ids and items[2] in out.item_ids
    assert out.prices[out.item_ids.index(items[2])] == 1.0


def test_a_broken_or_missing_snapshot_keeps_serving(setup: Any) -> None:
    rec, feed, clock = setup
    assert rec.recommend(user_id="user-000001", k=3).item_ids  # no snapshot yet: bundle stock only
    feed.put(b"not a zip")
    clock.now += 31
    assert rec.recommend(user_id="user-000001", k=3).item_ids
    assert "error" in rec.health()["stock"] and rec.health()["stock"]["error"]
    with pytest.raises(ValueError, match="sorted"):
        _unsorted()


def _unsorted() -> None:
    buf = io.BytesIO()
    savez_aligned(
        buf,
        {
            "item_id": np.asarray([b"b", b"a"]),
            "in_stock": np.ones(2, bool),
            "active": np.ones(2, bool),
            "price": np.ones(2, np.float32),
        },
    )
    StockSnapshot.parse(buf.getvalue(), "e")


def test_rules_off_means_the_live_stock_is_not_applied(remote: Path, tmp_path: Path) -> None:  # noqa: F811
    clock, feed = Clock(), Feed()
    stock = LiveStock(feed, ttl_seconds=0, background=False, clock=clock)
    config = ServingConfig(
        model_name="recs", cache_dir=str(tmp_path / "c"), rules=ServingRules(exclude_out_of_stock=False)
    )
    loader = ModelLoader(None, "bucket", "recs", config.cache_dir, fetch=_copy_fetch(remote, None))
    rec = Recommender(config, loader, Aliased(champion="v1"), background=False, clock=clock, stock=stock)
    rec.start()
    top = rec.recommend(user_id="user-000007", k=1).item_ids[0]
    feed.put(stock_npz([top], [False], [1.0]))
    rec.recommend(user_id="user-000007", k=1)
    assert rec.recommend(user_id="user-000007", k=1).item_ids == [top]
