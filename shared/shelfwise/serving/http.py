"""The HTTP surface of serve_recommendations: request/response models and routes; the OpenAPI document.

``serve_recommendations`` builds its resolver from :func:`recommendations_router`,
``collect_events`` from :func:`shelfwise.serving.collect.events_router`, and the committed
``infra/openapi.json`` is generated from both (:func:`openapi_document`), so code, document and
tests cannot drift apart. Routes only parse, call one service method and shape the answer;
behaviour lives in :mod:`shelfwise.serving.service`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pydantic_core
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, Field

from shelfwise.errors import ConfigurationError
from shelfwise.events import MAX_ID_LENGTH, MAX_QUERY_LENGTH, EventType
from shelfwise.observability import metrics
from shelfwise.serving.api import CALLER, LAZY, Id, StrictModel, build_resolver, csv_values, ok, responses
from shelfwise.serving.config import MAX_CANDIDATES, MAX_HISTORY, MAX_K
from shelfwise.serving.filters import Filters, HistoryEvent
from shelfwise.serving.lists import Recommendation
from shelfwise.serving.service import Recommender

API_TITLE = "Shelfwise serving API"
API_VERSION = "1.0.0"
MAX_FILTER_VALUES = 100
MAX_LIST_PARAM = 16 * 1024


# --------------------------------------------------------------------------- models


class HistoryItem(StrictModel):
    """One item of the session history and what the shopper did with it (weights the fold-in)."""

    item_id: Id
    event_type: EventType = "view"


class FilterSpec(StrictModel):
    """Per-request filters; the configured rules (stock, blocked categories) always apply too."""

    categories: list[Id] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)
    exclude_categories: list[Id] = Field(default_factory=list, max_length=MAX_FILTER_VALUES)
    exclude_items: list[Id] = Field(default_factory=list, max_length=MAX_CANDIDATES)
    price_min: float | None = Field(default=None, ge=0, le=1e9)
    price_max: float | None = Field(default=None, ge=0, le=1e9)

    def to_filters(self) -> Filters:
        return Filters(
            categories=tuple(self.categories),
            exclude_categories=tuple(self.exclude_categories),
            exclude_items=tuple(self.exclude_items),
            price_min=self.price_min,
            price_max=self.price_max,
        )


class QuietRepr:
    """A short repr without ids: Powertools formats the validated route arguments into a debug
    message on every request (an f-string, built whether debug logging is on or not). Pydantic's
    repr of a body with its history costs about 50 microseconds, and would print user, session
    and item ids if that message were ever logged. (No annotations here: they would become fields.)"""

    def __repr__(self) -> str:
        history = getattr(self, "history", [])
        return f"{type(self).__name__}(k={getattr(self, 'k', None)}, history=<{len(history)} items>)"


class RecommendRequest(QuietRepr, StrictModel):
    """Recommendations for an anonymous or new shopper from a session history (or a known user id)."""

    user_id: Id | None = None
    session_id: Id | None = None
    history: list[HistoryItem] = Field(default_factory=list, max_length=MAX_HISTORY)
    k: int = Field(default=20, ge=1, le=MAX_K)
    filters: FilterSpec = Field(default_factory=FilterSpec)
    explore: bool = Field(default=True, description="false: never an exploratory list for this request")


class SearchRequest(QuietRepr, StrictModel):
    """A text query over titles and categories, personalised; or a candidate list to re-rank.

    With neither (an empty search box), the answer is the shopper's recommendations.
    """

    query: str | None = Field(default=None, max_length=MAX_QUERY_LENGTH)
    candidates: list[Id] = Field(default_factory=list, max_length=MAX_CANDIDATES)
    user_id: Id | None = None
    session_id: Id | None = None
    history: list[HistoryItem] = Field(default_factory=list, max_length=MAX_HISTORY)
    k: int = Field(default=20, ge=1, le=MAX_K)
    filters: FilterSpec = Field(default_factory=FilterSpec)


class ItemOut(BaseModel):
    model_config = LAZY

    item_id: str
    score: float
    position: int = Field(ge=0)
    category: str
    title: str
    price: float | None


# The routes write this document with recommendation_json(); the model documents it (its
# docstring is the OpenAPI description) and the tests check written bodies against it.
class RecommendationResponse(BaseModel):
    """A served list. Echo ``recommendation_id`` (and the item's ``position``) in feedback events."""

    model_config = LAZY

    recommendation_id: str
    model_version: str
    variant: Literal["champion", "challenger", "fallback", "interleaved"]
    items: list[ItemOut]
    unknown_items: int = Field(ge=0, description="ids in the request not in the catalogue (ignored)")
    sources: list[str] | None = Field(
        default=None,
        description="interleaved lists only: the model version that contributed each item (in list order)",
    )

    @classmethod
    def of(cls, rec: Recommendation) -> RecommendationResponse:
        return cls(
            recommendation_id=rec.recommendation_id,
            model_version=rec.model_version,
            variant=rec.variant,  # type: ignore[arg-type]
            items=[ItemOut(**vars(i)) for i in rec.items],
            unknown_items=rec.unknown_items,
            sources=rec.sources,
        )


def recommendation_json(rec: Recommendation) -> str:
    """The RecommendationResponse document of ``rec``, written from its columns in one call.

    Byte for byte what ``RecommendationResponse.of(rec).model_dump_json()`` writes (pydantic-core's
    serialiser, non-finite numbers as null), without a Pydantic model per item: building those
    cost more CPU than the rest of a popularity or similar-items request. The values are already
    typed by the recommender (str, float, int). Not ``json.dumps``: float repr is several times
    slower than pydantic-core's float formatting, and a list has 40 floats.
    """
    columns = zip(rec.item_ids, rec.scores, rec.categories, rec.titles, rec.prices, strict=True)
    doc = {
        "recommendation_id": rec.recommendation_id,
        "model_version": rec.model_version,
        "variant": rec.variant,
        "items": [
            {"item_id": i, "score": s, "position": p, "category": c, "title": t, "price": pr}
            for p, (i, s, c, t, pr) in enumerate(columns)
        ],
        "unknown_items": rec.unknown_items,
        "sources": rec.sources,
    }
    return pydantic_core.to_json(doc, inf_nan_mode="null").decode()


class ModelStatus(BaseModel):
    model_config = LAZY

    version: str
    role: str
    kind: str
    items: int
    age_seconds: float
    created_at: str | None = None


class PublicHealth(BaseModel):
    """What ``/v1/health`` tells a caller the API did not authenticate: whether it can serve."""

    model_config = LAZY

    status: Literal["ok", "degraded", "unavailable"]


class HealthResponse(BaseModel):
    """What ``/v1/health`` tells an authenticated API client: versions, aliases, refusals."""

    model_config = LAZY

    status: Literal["ok", "degraded", "unavailable"]
    model_name: str
    aliases: dict[str, Any]
    models: list[ModelStatus]
    last_good: str | None
    serving_fallback: bool
    refused: dict[str, str]
    alias_error: str | None
    aliases_age_seconds: float | None
    impressions_pending: int
    # the catalogue's live stock snapshot (when the function reads one): id, items, age, last error
    stock: dict[str, Any] | None = None


def observe(rec: Recommendation, endpoint: str) -> None:
    """Per-request figures of a served list: fallback use, empty results, unknown ids.

    The request's metrics go out in one EMF blob with two dimension sets, ``[]`` (what the
    error-rate and latency alarms read) and ``[Variant, Endpoint]`` (the contract's dimensions).
    """
    metrics.add_dimensions(Variant=rec.variant, Endpoint=endpoint)
    metrics.add_metric(name="Fallback", unit=MetricUnit.Count, value=int(rec.variant == "fallback"))
    metrics.add_metric(name="EmptyResults", unit=MetricUnit.Count, value=int(not rec.item_ids))
    metrics.add_metric(name="UnknownIds", unit=MetricUnit.Count, value=rec.unknown_items)


def recommendations_router(service: Callable[[], Recommender]) -> Router:
    """Routes of the serve_recommendations function; ``service`` returns the live Recommender."""
    router = Router()

    @router.get(
        "/v1/users/<user_id>/recommendations",
        summary="Personalised top-K for a user",
        responses=responses(RecommendationResponse, "Ranked items for the user"),
        tags=["recommendations"],
    )
    def user_recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
        category: Annotated[
            str | None, Query(max_length=MAX_LIST_PARAM, description="comma-separated")
        ] = None,
        exclude_category: Annotated[str | None, Query(max_length=MAX_LIST_PARAM)] = None,
        exclude: Annotated[str | None, Query(max_length=MAX_LIST_PARAM, description="item ids")] = None,
        price_min: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        price_max: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        explore: Annotated[bool, Query(description="false: never an exploratory list")] = True,
    ):  # returns Response: no annotation, so Powertools does not re-validate the body
        filters = Filters(
            csv_values(category), csv_values(exclude_category), csv_values(exclude), price_min, price_max
        )
        rec = service().recommend(
            user_id=user_id, k=k, filters=filters, endpoint="user_recommendations", explore=explore
        )
        observe(rec, "user_recommendations")
        return ok(recommendation_json(rec))

    @router.post(
        "/v1/recommendations",
        summary="Top-K from a session history (anonymous or new users)",
        responses=responses(RecommendationResponse, "Ranked items for the session"),
        tags=["recommendations"],
    )
    def session_recommendations(
        body: Annotated[RecommendRequest, Body()],
    ):  # returns Response: no annotation, so Powertools does not re-validate the body
        rec = service().recommend(
            user_id=body.user_id,
            session_id=body.session_id,
            history=[HistoryEvent(h.item_id, h.event_type) for h in body.history],
            k=body.k,
            filters=body.filters.to_filters(),
            endpoint="recommendations",
            explore=body.explore,
        )
        observe(rec, "recommendations")
        return ok(recommendation_json(rec))

    @router.get(
        "/v1/items/<item_id>/similar",
        summary="Items related to an item",
        responses=responses(RecommendationResponse, "Related items"),
        tags=["recommendations"],
    )
    def similar_items(
        item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
        category: Annotated[str | None, Query(max_length=MAX_LIST_PARAM)] = None,
        price_max: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    ):  # returns Response: no annotation, so Powertools does not re-validate the body
        rec = service().similar(
            item_id, k=k, filters=Filters(categories=csv_values(category), price_max=price_max)
        )
        observe(rec, "similar")
        return ok(recommendation_json(rec))

    @router.post(
        "/v1/search",
        summary="Personalised lexical search, or re-ranking of a candidate list",
        responses=responses(RecommendationResponse, "Matching items, best first"),
        tags=["search"],
    )
    def search(
        body: Annotated[SearchRequest, Body()],
    ):  # returns Response: no annotation, so Powertools does not re-validate the body
        rec = service().search(
            query=body.query,
            candidates=body.candidates,
            user_id=body.user_id,
            session_id=body.session_id,
            history=[HistoryEvent(h.item_id, h.event_type) for h in body.history],
            k=body.k,
            filters=body.filters.to_filters(),
        )
        observe(rec, "search")
        return ok(recommendation_json(rec))

    @router.get(
        "/v1/health",
        summary="Serving status; loaded versions, aliases and fallback state for authenticated clients",
        tags=["operations"],
    )
    def health() -> HealthResponse | PublicHealth:
        report = service().health()
        if CALLER.get() is None:  # versions and aliases are for the shop's own clients only
            return PublicHealth(status=report["status"])
        return HealthResponse.model_validate(report)

    @router.get("/v1/openapi.json", summary="This OpenAPI document", tags=["operations"])
    def openapi() -> dict[str, Any]:
        return openapi_document()

    return router


def _unbound() -> Any:
    raise ConfigurationError("documentation-only resolver has no service")


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the whole serving API (both functions), as committed in infra/."""
    from shelfwise.serving.collect import events_router  # the other function's routes: docs only

    app = build_resolver(recommendations_router(_unbound), events_router(_unbound))
    return json.loads(
        app.get_openapi_json_schema(
            title=API_TITLE,
            version=API_VERSION,
            description="Recommendations, similar items, personalised search and feedback events. "
            "Errors are RFC 9457 problem+json.",
        )
    )


if __name__ == "__main__":  # python -m shelfwise.serving.http > infra/openapi.json
    print(json.dumps(openapi_document(), indent=2))
