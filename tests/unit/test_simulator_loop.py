"""The closed loop: users react to served lists so that better rankings measurably win."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

from shelfwise.events import Event
from shelfwise.simulator import (
    HttpRecommender,
    Incident,
    RequestContext,
    Shop,
    ShopParams,
    factor_recommender,
    oracle_factors,
    popularity_recommender,
    random_recommender,
)

PARAMS = ShopParams(n_users=3000, n_items=800, n_days=3)


@pytest.fixture(scope="module")
def shop() -> Shop:
    return Shop(PARAMS, seed=21)


def test_good_beats_popularity_beats_random_beats_broken(shop: Shop) -> None:
    u, v, b = oracle_factors(shop, noise=0.3, seed=1)
    perm = np.random.default_rng(2).permutation(len(v))
    recs = {
        "good": factor_recommender(shop, u, v, b),
        "popularity": popularity_recommender(shop),
        "random": random_recommender(shop),
        "broken": factor_recommender(shop, -u, v, -b),  # a sign bug: the least liked first
        "shuffled": factor_recommender(shop, u, v[perm], b[perm]),  # shuffled item embeddings
    }
    ctr = {name: shop.replay(1, rec, k=10).ctr for name, rec in recs.items()}
    assert ctr["good"] > 1.3 * ctr["popularity"]
    assert ctr["popularity"] > 1.3 * ctr["random"]
    assert ctr["random"] > 1.3 * ctr["broken"]
    assert ctr["shuffled"] < 0.6 * ctr["good"] and ctr["shuffled"] < ctr["popularity"]


def test_a_model_learned_from_the_logs_beats_popularity() -> None:
    """Not only the oracle: matrix factorisation of a week of simulated logs recovers real taste."""
    import implicit
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    shop = Shop(ShopParams(n_users=3000, n_items=800, n_days=9, sessions_per_user_day=0.5), seed=21)
    rows, cols, vals = [], [], []
    for d in range(8):
        b = shop.day_events(d)
        keep = (b.user >= 0) & (b.item >= 0) & (b.user < len(shop.users))
        rows.append(b.user[keep])
        cols.append(b.item[keep])
        vals.append(np.array([1.0, 4.0, 0.0, 3.0, 8.0, 0.0])[b.code[keep]])
    m = csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(shop.users), len(shop.catalogue)),
    )
    m.sum_duplicates()
    m.data = 5 * np.log1p(m.data)
    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(
            factors=16, regularization=1.0, iterations=15, random_state=0
        )
        model.fit(m, show_progress=False)
    popularity = 0.1 * np.log1p(np.asarray(m.sum(axis=0)).ravel())
    learned = factor_recommender(
        shop, np.asarray(model.user_factors), np.asarray(model.item_factors), popularity
    )
    assert shop.replay(8, learned).ctr > 1.1 * shop.replay(8, popularity_recommender(shop)).ctr


def test_traffic_contexts_are_ordered_and_honest(shop: Shop) -> None:
    ctxs = list(shop.traffic(1, n=300))
    assert len(ctxs) == 300
    assert [c.ts_ms for c in ctxs] == sorted(c.ts_ms for c in ctxs)
    day0 = shop.day_ms(1)
    assert all(day0 <= c.ts_ms < day0 + 86_400_000 for c in ctxs)
    assert any(c.user_id is None for c in ctxs) and any(c.user_id for c in ctxs)
    for c in ctxs:
        assert len(c.history) <= 20
        if c.user_id is not None:
            assert int(c.user_id) - 1 == c.true_user
        assert all(
            t in {"view", "add_to_cart", "add_to_wishlist", "remove_from_cart", "purchase"}
            for _, t in c.history
        )
    assert [c.request_id for c in shop.traffic(1, n=300)] == [c.request_id for c in ctxs]


def test_respond_events_are_api_events_and_deterministic(shop: Shop) -> None:
    ctx = next(iter(shop.traffic(1, n=50)))
    u, v, b = oracle_factors(shop, noise=0.0)
    top = factor_recommender(shop, u, v, b)(ctx, 30)
    served = {
        "recommendation_id": "rec-1",
        "model_version": "v7",
        "variant": "challenger",
        "items": [{"item_id": i, "score": 1.0 - p / 100} for p, i in enumerate(top)],
    }
    first = shop.respond(served, ctx, impressions=True)
    assert first == shop.respond(served, ctx, impressions=True)
    imps = [e for e in first if e["event_type"] == "impression"]
    assert [e["position"] for e in imps] == list(range(30))
    assert imps[0]["variant"] == "challenger" and imps[0]["model_version"] == "v7"
    feedback = [e for e in first if e["event_type"] != "impression"]
    assert feedback, "the oracle's top 30 should earn at least one click"
    for e in feedback:
        Event.model_validate(e)
        assert e["recommendation_id"] == "rec-1" and e["item_id"] == top[e["position"]]
    # Unknown items are never clicked; a plain list of ids works too.
    assert shop.respond(["no-such-item", "0", "999999"], ctx) == []


def test_position_bias(shop: Shop) -> None:
    """The same item earns more clicks on top than at the bottom of the list."""
    u, v, b = oracle_factors(shop, noise=0.0)
    good = factor_recommender(shop, u, v, b)
    top_clicks = bottom_clicks = 0
    for ctx in shop.traffic(2, n=1500):
        items = good(ctx, 10)
        ev = shop.respond(items, ctx)
        top_clicks += sum(1 for e in ev if e["event_type"] == "click" and e["position"] == 0)
        rev = shop.respond([*items[1:], items[0]], ctx)  # the top item moved to the bottom
        bottom_clicks += sum(1 for e in rev if e["event_type"] == "click" and e["position"] == 9)
    assert top_clicks > 1.5 * bottom_clicks > 0


def test_taste_drift_hurts_a_model_of_the_old_tastes() -> None:
    params = PARAMS.with_incidents(Incident("taste_drift", 1.0, {"share": 1.0}))
    shop = Shop(params, seed=21)
    u, v, b = oracle_factors(shop, noise=0.0)  # the tastes before the drift
    before = shop.replay(0, factor_recommender(shop, u, v, b)).ctr
    after = shop.replay(2, factor_recommender(shop, u, v, b)).ctr
    fresh = factor_recommender(shop, shop.user_factors_at(shop.day_ms(2)), v, b)
    assert after < 0.75 * before
    assert shop.replay(2, fresh).ctr > 1.3 * after
    assert shop.incidents_log[0]["incident"] == "taste_drift"


class _FakeResponse:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self._body = body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise OSError(f"HTTP {self.status_code}")

    def json(self) -> dict[str, Any]:
        return self._body


class _FakeApi:
    """Stands in for requests.Session in front of a Shelfwise API serving popularity (no sockets)."""

    def __init__(self, shop: Shop) -> None:
        self.top = [str(i + 1) for i in shop.popularity_ranking()[:50]]
        self.calls: list[tuple[str, str]] = []

    def _answer(self, ctx: RequestContext, k: int) -> _FakeResponse:
        items = [{"item_id": i, "score": 1.0} for i in self.top[:k]]
        return _FakeResponse(200, {"recommendation_id": "r", "variant": "champion", "items": items})

    def get(self, url: str, params: dict[str, Any], timeout: float) -> _FakeResponse:
        self.calls.append(("GET", urlparse(url).path))
        user = urlparse(url).path.split("/")[3]
        return self._answer(RequestContext("0" * 16, user, "s", (), 0, 0, 0), int(params["k"]))

    def post(self, url: str, json: dict[str, Any], timeout: float) -> _FakeResponse:
        self.calls.append(("POST", urlparse(url).path))
        hist = tuple((h["item_id"], h["event_type"]) for h in json["history"])
        return self._answer(RequestContext("0" * 16, None, json["session_id"], hist, 0, 0, 0), json["k"])


def test_replay_through_the_http_client(shop: Shop) -> None:
    """GET /v1/users/{id}/recommendations for known users, POST /v1/recommendations with the history
    for anonymous ones; the outcome equals calling the same ranking directly."""
    api = _FakeApi(shop)
    via_http = shop.replay(1, HttpRecommender("http://shelfwise.test/", session=api), n=150)
    direct = shop.replay(1, lambda ctx, k: api.top[:k], n=150)
    assert via_http.requests == 150 and via_http.errors == 0
    paths = {c for c in api.calls}
    assert ("POST", "/v1/recommendations") in paths
    assert any(m == "GET" and p.startswith("/v1/users/") and p.endswith("/recommendations") for m, p in paths)
    assert via_http.impressions == direct.impressions
    assert via_http.clicks == direct.clicks > 0
