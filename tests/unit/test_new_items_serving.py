"""New items in served lists: a bundle trained with a catalogue scores them by content at serve time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from shelfwise.serving.config import ServingConfig, ServingRules
from shelfwise.serving.filters import Filters
from shelfwise.serving.loader import ModelLoader
from shelfwise.serving.service import Recommender
from shelfwise.training.job import Progress, TrainConfig, run_training
from tests.unit.test_serving import Aliased, _copy_fetch

T0 = datetime(2026, 10, 1, tzinfo=UTC)
KINDS = {"mug": ("kitchen/mugs", ["Red mug", "Tea mug", "Big mug", "Small mug"]),
         "hose": ("garden/hoses", ["Long hose", "Garden hose", "Hose reel", "Soaker hose"])}  # fmt: skip


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for u in range(120):
        kind = "mug" if u % 2 == 0 else "hose"
        for j in rng.choice(4, size=3, replace=False).tolist():
            rows.append((f"u{u}", f"{kind}{j}", T0 + timedelta(hours=int(rng.integers(0, 600)))))
    users, items, ts = zip(*rows, strict=True)
    table = pa.table(
        {
            "event_type": ["purchase"] * len(rows),
            "user_id": list(users),
            "item_id": list(items),
            "timestamp": pa.array(list(ts), pa.timestamp("ms", tz="UTC")),
            "weight": pa.array([8.0] * len(rows), pa.float32()),
        }
    )
    cat_rows = [
        {"item_id": f"{kind}{j}", "title": title, "category": cat, "price": 5.0, "in_stock": True, "active": True,
         "brand": "acme", "updated_at": T0}
        for kind, (cat, titles) in KINDS.items()
        for j, title in enumerate(titles)
    ]  # fmt: skip
    cat_rows += [
        {"item_id": "mug-new", "title": "Espresso mug", "category": "kitchen/mugs", "price": 7.0, "in_stock": True,
         "active": True, "brand": "acme", "updated_at": T0 + timedelta(days=30)},
        {"item_id": "hose-new", "title": "Hose nozzle", "category": "garden/hoses", "price": 3.0, "in_stock": True,
         "active": True, "brand": "acme", "updated_at": T0 + timedelta(days=30)},
        {"item_id": "gone-new", "title": "Mug tree", "category": "kitchen/mugs", "price": 3.0, "in_stock": True,
         "active": False, "brand": "acme", "updated_at": T0 + timedelta(days=30)},
    ]  # fmt: skip
    root = tmp_path_factory.mktemp("remote")
    result = run_training(
        table,
        root / "v1",
        TrainConfig(search="none", threads=1, parity_users=8),
        version="v1",
        progress=Progress(stream=None),
        catalogue=pa.Table.from_pylist(cat_rows),
    )
    assert result.manifest["catalogue"] == {"items": 8, "from_catalogue": 8, "from_events": 0, "new_items": 2}
    return root


def _rec(root: Path, tmp_path: Path, **rules: Any) -> Recommender:
    config = ServingConfig(model_name="recs", cache_dir=str(tmp_path / "c"), rules=ServingRules(**rules))
    loader = ModelLoader(None, "bucket", "recs", config.cache_dir, fetch=_copy_fetch(root, None))
    rec = Recommender(config, loader, Aliased(champion="v1"), background=False)
    rec.start()
    return rec


def test_new_items_take_their_slots_for_users_whose_history_matches(
    bundle_root: Path, tmp_path: Path
) -> None:
    rec = _rec(bundle_root, tmp_path, new_item_slots=1)
    mug_user = rec.recommend(user_id="u0", k=4)
    hose_user = rec.recommend(user_id="u1", k=4)
    assert mug_user.item_ids[-1] == "mug-new" and hose_user.item_ids[-1] == "hose-new"
    assert (
        len(mug_user.item_ids) == 4 and mug_user.titles[-1] == "Espresso mug" and mug_user.prices[-1] == 7.0
    )
    assert "gone-new" not in mug_user.item_ids  # inactive in the catalogue: never offered
    # filters apply to new items too, and a session history works like a known user's
    from shelfwise.serving.filters import HistoryEvent

    session = rec.recommend(session_id="s1", history=[HistoryEvent("hose0", "view")], k=3,
                            filters=Filters(price_max=2.0))  # fmt: skip
    assert "hose-new" not in session.item_ids
    for filters, kept in (
        (Filters(exclude_categories=("kitchen/mugs",)), False),
        (Filters(categories=("garden/hoses",)), False),
        (Filters(categories=("kitchen/mugs", "garden/hoses")), True),
    ):
        assert ("mug-new" in rec.recommend(user_id="u0", k=4, filters=filters).item_ids) is kept
    blocked = _rec(bundle_root, tmp_path / "b", new_item_slots=1, blocked_categories=["kitchen/mugs"])
    assert "mug-new" not in blocked.recommend(user_id="u0", k=4).item_ids
    # off by default
    assert "mug-new" not in _rec(bundle_root, tmp_path / "off").recommend(user_id="u0", k=4).item_ids


def test_similar_items_of_a_new_item_come_from_content(bundle_root: Path, tmp_path: Path) -> None:
    rec = _rec(bundle_root, tmp_path)
    similar = rec.similar("mug-new", k=3)
    assert similar.item_ids and all(i.startswith("mug") for i in similar.item_ids)


def test_similar_items_of_a_rarely_bought_item_are_filled_up_by_content(
    bundle_root: Path, tmp_path: Path
) -> None:
    rec = _rec(bundle_root, tmp_path)
    similar = rec.similar("mug0", k=7)
    assert len(similar.item_ids) == 7 and "mug0" not in similar.item_ids
    mugs = [i for i in similar.item_ids if i.startswith("mug")]
    assert similar.item_ids[: len(mugs)] == mugs  # co-bought mugs first, content-filled hoses after
    assert similar.scores == sorted(similar.scores, reverse=True)
