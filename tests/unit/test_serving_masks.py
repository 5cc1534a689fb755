"""Request masks built item by item on a per-thread working copy equal a mask built afresh."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shelfwise.bundle import text_list
from shelfwise.serving import filters as serving_filters
from shelfwise.serving.catalog import LexicalIndex, tokenize
from shelfwise.serving.filters import Filters
from shelfwise.serving.model import LoadedModel
from tests.unit.test_serving import remote  # noqa: F401  (fixture)
from tests.unit.test_serving_stock import setup, stock_npz  # noqa: F401  (fixture)


@pytest.fixture(params=["item by item", "copied whole"], autouse=True)
def working_copy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways a working mask follows its shared part (the test catalogue is small)."""
    if request.param == "item by item":
        monkeypatch.setattr(serving_filters, "COPY_BELOW_BYTES", 0)


def fresh_mask(rec: Any, model: LoadedModel, filters: Filters, extra: list[int]) -> np.ndarray:
    """The request's mask built from nothing: the rules, the live stock, the filters, the extras."""
    cat = model.catalog
    mask = ~cat.in_stock.astype(bool)
    price = cat.price.astype(np.float32)
    snap = rec.stock.snapshot
    if snap is not None:
        unavailable, live = snap.overlay(cat.item_ids)
        mask |= unavailable
        price = np.where(np.isnan(live), price, live)
    codes = cat.category_codes
    if filters.categories:
        mask |= ~np.isin(codes, [cat.categories[c] for c in filters.categories if c in cat.categories])
    for c in filters.exclude_categories:
        if c in cat.categories:
            mask |= codes == cat.categories[c]
    if filters.price_min is not None:
        mask |= ~(price >= filters.price_min)
    if filters.price_max is not None:
        mask |= ~(price <= filters.price_max)
    known, _ = cat.lookup(filters.exclude_items)
    mask[[*known, *extra]] = True
    return mask


def random_filters(rng: np.random.Generator, model: LoadedModel) -> tuple[Filters, list[int]]:
    cat = model.catalog
    names = sorted(cat.categories)
    ids = text_list(cat.item_ids[rng.integers(0, cat.n_items, 3)])

    def some(options: list[str]) -> tuple[str, ...]:
        return tuple(rng.choice(options, int(rng.integers(1, 3)))) if rng.random() < 0.3 else ()

    filters = Filters(
        categories=some([*names, "no-such-category"]),
        exclude_categories=some(names),
        exclude_items=tuple([*ids, "ghost"][: int(rng.integers(0, 5))]),
        price_min=float(rng.uniform(0, 20)) if rng.random() < 0.2 else None,
        price_max=float(rng.uniform(20, 200)) if rng.random() < 0.2 else None,
    )
    extra = rng.integers(0, cat.n_items, int(rng.integers(0, 6))).tolist()
    return filters, extra


def test_a_sequence_of_requests_gets_the_masks_a_fresh_build_gives(setup: Any) -> None:  # noqa: F811
    rec, feed, clock = setup
    model = rec.state.models["v1"]
    ex, n = rec.exclusions, model.n_items
    rng = np.random.default_rng(5)
    for step in range(120):
        if step == 60:  # a new stock snapshot: the shared part changes under the working copy
            ids = text_list(model.catalog.item_ids[:40])
            feed.put(stock_npz(ids, [i % 3 != 0 for i in range(40)], [float(i) for i in range(40)]))
            clock.now += 31
            rec.refresh()
        filters, extra = random_filters(rng, model)
        mask, unknown = ex.request(model, filters, extra)
        expected = fresh_mask(rec, model, filters, extra)
        assert np.array_equal(mask, expected), step
        assert ex.allowed(model, mask) == n - int(expected.sum())
        assert unknown == ("ghost" in filters.exclude_items)
        pool = rng.integers(0, n, 7)
        only = ex.only(model, pool)
        assert np.array_equal(np.flatnonzero(~only), np.unique(pool))
        assert np.array_equal(mask, expected)  # the pool's mask is another working copy


def test_each_thread_has_its_own_working_mask(setup: Any) -> None:  # noqa: F811
    rec, _, _ = setup
    model = rec.state.models["v1"]
    barrier = threading.Barrier(2)
    results: dict[int, bool] = {}

    def run(seed: int) -> None:
        rng = np.random.default_rng(seed)
        ok = True
        for _ in range(30):
            filters, extra = random_filters(rng, model)
            mask, _ = rec.exclusions.request(model, filters, extra)
            barrier.wait()  # the other thread builds its mask before this one is read
            ok &= bool(np.array_equal(mask, fresh_mask(rec, model, filters, extra)))
            barrier.wait()
        results[seed] = ok

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {1: True, 2: True}


def test_a_request_after_an_excluding_one_gets_those_items_back(setup: Any) -> None:  # noqa: F811
    rec, _, _ = setup
    top = rec.recommend(user_id="user-000007", k=3).item_ids
    assert not set(top) & set(
        rec.recommend(user_id="user-000007", k=3, filters=Filters(exclude_items=tuple(top))).item_ids
    )
    assert rec.recommend(user_id="user-000007", k=3).item_ids == top


def test_lexical_scores_equal_bm25_over_the_whole_catalogue() -> None:
    titles = ["red wool hat", "red hat red", "blue mug", "wool scarf", "hat stand", "red"]
    cats = ["hats", "hats", "mugs", "scarves", "home", "misc"]
    index = LexicalIndex.build(titles, cats)
    docs = [tokenize(f"{t} {c}") for t, c in zip(titles, cats, strict=True)]
    avgdl = sum(map(len, docs)) / len(docs)
    for query in ("red hats", "wool", "blue red scarf hat", "nothing here"):
        expected = np.zeros(len(docs))
        for tok in set(tokenize(query)):
            df = sum(tok in d for d in docs)
            if not df:
                continue
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            for i, d in enumerate(docs):
                tf = d.count(tok)
                expected[i] += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(d) / avgdl)) if tf else 0.0
        hits, scores = index.score(query)
        assert np.array_equal(hits, np.flatnonzero(expected > 0))
        np.testing.assert_allclose(scores, expected[hits], rtol=1e-5)


def test_search_answers_do_not_depend_on_earlier_requests(remote: Path, setup: Any) -> None:  # noqa: F811
    rec, _, _ = setup
    word = text_list(rec.state.models["v1"].catalog.titles[:1])[0].split()[2]
    first = rec.search(query=word, user_id="user-000003", k=10)
    rec.recommend(user_id="user-000003", k=10, filters=Filters(exclude_items=tuple(first.item_ids)))
    rec.search(query="nothing matches this", user_id="user-000003", k=10)
    again = rec.search(query=word, user_id="user-000003", k=10)
    assert again.item_ids == first.item_ids and again.scores == first.scores
