"""The recommendation response, written without Pydantic per item, is the document the model defines."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.serving.http import RecommendationResponse, recommendation_json
from shelfwise.serving.lists import RankedItem, Recommendation

texts = st.text(min_size=1, max_size=20)  # any Unicode, quotes, backslashes, control characters


@st.composite
def recommendations(draw: st.DrawFn, finite: bool = True) -> Recommendation:
    n = draw(st.integers(0, 8))
    floats = st.floats(allow_nan=not finite, allow_infinity=not finite, width=32)
    return Recommendation(
        recommendation_id=draw(texts),
        model_version=draw(texts),
        variant=draw(st.sampled_from(["champion", "challenger", "fallback"])),
        item_ids=draw(st.lists(texts, min_size=n, max_size=n)),
        scores=draw(st.lists(floats, min_size=n, max_size=n)),
        categories=draw(st.lists(texts, min_size=n, max_size=n)),
        titles=draw(st.lists(texts, min_size=n, max_size=n)),
        prices=draw(st.lists(st.none() | st.floats(0, 1e9), min_size=n, max_size=n)),
        unknown_items=draw(st.integers(0, 500)),
    )


@settings(max_examples=300)
@given(recommendations())
def test_written_json_is_the_pydantic_document(rec: Recommendation) -> None:
    written = recommendation_json(rec)
    assert written == RecommendationResponse.of(rec).model_dump_json()  # byte for byte
    assert RecommendationResponse.model_validate_json(written) == RecommendationResponse.of(rec)


@settings(max_examples=100)
@given(recommendations(finite=False))
def test_non_finite_scores_are_written_as_null_and_stay_valid_json(rec: Recommendation) -> None:
    written = recommendation_json(rec)
    assert written == RecommendationResponse.of(rec).model_dump_json()
    doc = json.loads(written, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    for item, score in zip(doc["items"], rec.scores, strict=True):
        assert item["score"] == (score if math.isfinite(score) else None)


def test_items_are_the_columns_as_rows() -> None:
    rec = Recommendation("r", "v1", "champion", ["a", "b"], [2.0, 1.5], ["x", "y"], ["A", "B"], [9.99, None])
    assert rec.items == [RankedItem("a", 2.0, 0, "x", "A", 9.99), RankedItem("b", 1.5, 1, "y", "B", None)]
    assert json.loads(recommendation_json(rec))["items"][1] == {
        "item_id": "b",
        "score": 1.5,
        "position": 1,
        "category": "y",
        "title": "B",
        "price": None,
    }


def test_request_bodies_repr_without_ids() -> None:
    from shelfwise.serving.http import RecommendRequest, SearchRequest

    body = RecommendRequest.model_validate(
        {"user_id": "user-42", "session_id": "sess-7", "history": [{"item_id": "sku-1"}], "k": 3}
    )
    text = f"{ {'body': body} }"  # what Powertools' debug message formats
    assert "RecommendRequest(k=3, history=<1 items>)" in text
    assert not any(secret in text for secret in ("user-42", "sess-7", "sku-1"))
    assert repr(SearchRequest(query="hat")) == "SearchRequest(k=20, history=<0 items>)"


def test_responses_are_compressed_only_when_a_route_asks() -> None:
    import base64
    import gzip

    from aws_lambda_powertools.event_handler.api_gateway import Router

    from shelfwise.serving.api import Access, build_resolver
    from shelfwise_local.bench.serve import apigw_event

    router = Router()

    @router.get("/plain")
    def plain() -> dict[str, str]:
        return {"hello": "world"}

    @router.get("/zipped", compress=True)
    def zipped() -> dict[str, str]:
        return {"hello": "world"}

    app = build_resolver(router, access=Access("NONE"))  # resolve() without serve()'s caller
    for path, compressed in (("/plain", False), ("/zipped", True)):
        ev = apigw_event("GET", path)
        ev["headers"]["accept-encoding"] = "gzip, deflate"
        resp = app.resolve(ev, None)
        assert resp["statusCode"] == 200 and resp["isBase64Encoded"] is compressed
        body = gzip.decompress(base64.b64decode(resp["body"])).decode() if compressed else resp["body"]
        assert json.loads(body) == {"hello": "world"}
    ev = apigw_event("GET", "/zipped")  # no Accept-Encoding: plain
    assert app.resolve(ev, None)["isBase64Encoded"] is False
