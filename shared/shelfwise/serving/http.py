"""The HTTP surface of serving: Pydantic request/response models, routes, problem+json errors.

The two serving functions (``serve_recommendations``, ``collect_events``) each build their
resolver from the routers here, and the committed ``infra/openapi.json`` is generated from the
same routers (:func:`openapi_document`), so code, document and tests cannot drift apart. Routes
only parse, call one service method and shape the answer; behaviour lives in
:mod:`shelfwise.serving.service` and :mod:`shelfwise.serving.collect`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.errors import ConfigurationError, InputError, NotFoundError, ShelfwiseError
from shelfwise.events import MAX_ID_LENGTH, MAX_QUERY_LENGTH, Event, EventType
from shelfwise.observability import logger, metrics
from shelfwise.serving.collect import DeliveryError, EventCollector
from shelfwise.serving.config import MAX_BODY_BYTES, MAX_CANDIDATES, MAX_HISTORY, MAX_K
from shelfwise.serving.service import (
    Filters,
    HistoryEvent,
    ModelUnavailableError,
    Recommendation,
    Recommender,
)

API_TITLE = "Shelfwise serving API"
API_VERSION = "1.0.0"
PROBLEM_JSON = "application/problem+json"
MAX_EVENTS = 500
MAX_FILTER_VALUES = 100
MAX_LIST_PARAM = 16 * 1024

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


# --------------------------------------------------------------------------- models


def _no_bool_numbers(model: type[BaseModel], data: Any) -> Any:
    """Reject what Pydantic's lax mode would coerce: true/false as numbers, numbers as timestamps."""
    if isinstance(data, dict):
        for name, value in data.items():
            field = model.model_fields.get(name)
            if field is None:
                continue
            if isinstance(value, bool) and field.annotation is not bool:
                raise ValueError(f"{name} must be a number, not a boolean")
            if field.annotation is datetime and not isinstance(value, str):
                raise ValueError(f"{name} must be an ISO 8601 string")
    return data


class _Strict(BaseModel):
    # Ids are opaque: no whitespace stripping (the OpenAPI schema could not say so); an id with
    # stray spaces is simply unknown and counted.
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        return _no_bool_numbers(cls, data)


class HistoryItem(_Strict):
    """One item of the session history and what the shopper did with it (weights the fold-in)."""

    item_id: Id
    event_type: EventType = "view"


class FilterSpec(_Strict):
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


class RecommendRequest(_Strict):
    """Recommendations for an anonymous or new shopper from a session history (or a known user id)."""

    user_id: Id | None = None
    session_id: Id | None = None
    history: list[HistoryItem] = Field(default_factory=list, max_length=MAX_HISTORY)
    k: int = Field(default=20, ge=1, le=MAX_K)
    filters: FilterSpec = Field(default_factory=FilterSpec)


class SearchRequest(_Strict):
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
    item_id: str
    score: float
    position: int = Field(ge=0)
    category: str
    title: str
    price: float | None


class RecommendationResponse(BaseModel):
    """A served list. Echo ``recommendation_id`` (and the item's ``position``) in feedback events."""

    recommendation_id: str
    model_version: str
    variant: Literal["champion", "challenger", "fallback"]
    items: list[ItemOut]
    unknown_items: int = Field(ge=0, description="ids in the request not in the catalogue (ignored)")

    @classmethod
    def of(cls, rec: Recommendation) -> RecommendationResponse:
        return cls(
            recommendation_id=rec.recommendation_id,
            model_version=rec.model_version,
            variant=rec.variant,  # type: ignore[arg-type]
            items=[ItemOut(**vars(i)) for i in rec.items],
            unknown_items=rec.unknown_items,
        )


class ModelStatus(BaseModel):
    version: str
    role: str
    kind: str
    items: int
    age_seconds: float
    created_at: str | None = None


class HealthResponse(BaseModel):
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


class EventIn(Event):
    """The event schema as the API accepts it: booleans are not numbers."""

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        return _no_bool_numbers(cls, data)


class EventsRequest(_Strict):
    """A batch of feedback events (clicks, carts, purchases) in the native event schema."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    accepted: int = Field(ge=0)
    event_ids: list[str]
    failed: list[str] = Field(default_factory=list, description="event ids not delivered; safe to resend")


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"model": Problem}}}


ERROR_RESPONSES: dict[int, Any] = {
    400: _problem_response("The request cannot be served as given"),
    404: _problem_response("Unknown route or item"),
    413: _problem_response("Body larger than 256 KB"),
    414: _problem_response("URL too long (answered by the gateway)"),
    415: _problem_response("Body is not application/json"),
    422: _problem_response("A field is invalid; `errors` names it"),
    503: _problem_response("No model loaded yet, or event delivery unavailable; retry"),
}


def responses(model: type[BaseModel], description: str) -> dict[int, Any]:
    """The OpenAPI responses of a route: its 200 model and the problem+json errors."""
    return {
        200: {"description": description, "content": {"application/json": {"model": model}}},
        **ERROR_RESPONSES,
    }


# --------------------------------------------------------------------------- errors


class RequestTooLargeError(InputError):
    """The body exceeds MAX_BODY_BYTES."""


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> Response:
    """A problem+json response (RFC 9457)."""
    body = {
        "type": f"https://shelfwise.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors or [],
    }
    headers = {"Retry-After": "5"} if status == 503 else None
    return Response(status_code=status, content_type=PROBLEM_JSON, body=json.dumps(body), headers=headers)


def _body_size(app: APIGatewayHttpResolver) -> int:
    body = app.current_event.body or ""
    if app.current_event.is_base64_encoded:
        return len(body) * 3 // 4
    return len(body.encode("utf-8", "surrogatepass"))


def _field_name(loc: Any) -> str:
    """``("body", "history", 0, "event_type")`` -> ``body.history.0.event_type``; ``query.k``."""
    return ".".join(str(p) for p in loc) or "body"


def install_error_handlers(app: APIGatewayHttpResolver) -> None:
    """Map validation and domain errors to problem+json 4xx (503 when nothing can be served)."""

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        size = _body_size(app)
        if size > MAX_BODY_BYTES:
            return problem(413, "Body too large", f"body is {size} bytes; the limit is {MAX_BODY_BYTES}")
        errors = [
            {"field": _field_name(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]) or "invalid request"
        return problem(422, "Invalid request", detail, errors)

    @app.exception_handler(RequestTooLargeError)
    def _too_large(exc: RequestTooLargeError) -> Response:
        return problem(413, "Body too large", str(exc))

    @app.exception_handler(NotFoundError)
    def _not_found(exc: NotFoundError) -> Response:
        return problem(404, "Not found", str(exc))

    @app.not_found
    def _no_route(exc: RouteNotFoundError) -> Response:
        ev = app.current_event
        return problem(404, "Not found", f"no route {ev.http_method} {ev.path}")

    @app.exception_handler(InputError)
    def _bad_input(exc: InputError) -> Response:
        return problem(400, "Bad request", str(exc))

    @app.exception_handler(ValueError)
    def _undecodable(exc: ValueError) -> Response:
        # Raised while decoding the body before validation (e.g. a multipart content type).
        ctype = (app.current_event.headers or {}).get("content-type", "")
        if app.current_event.body and "json" not in ctype.lower():
            return problem(415, "Unsupported media type", f"send application/json, not {ctype[:80]!r}")
        logger.exception("unexpected ValueError")
        return problem(500, "Internal error", "ValueError")

    @app.exception_handler(ModelUnavailableError)
    def _unavailable(exc: ModelUnavailableError) -> Response:
        return problem(503, "Model unavailable", str(exc))

    @app.exception_handler(DeliveryError)
    def _undelivered(exc: DeliveryError) -> Response:
        return problem(503, "Delivery unavailable", str(exc))

    @app.exception_handler(ShelfwiseError)
    def _other(exc: ShelfwiseError) -> Response:  # a domain error nobody mapped: still not a crash page
        logger.error("unmapped domain error", extra={"error": type(exc).__name__})
        return problem(500, "Internal error", type(exc).__name__)


def _limit_body(app: APIGatewayHttpResolver, next_middleware: Any) -> Response:
    """Refuse bodies over the limit (the validation handler does the same for invalid ones)."""
    size = _body_size(app)
    if size > MAX_BODY_BYTES:
        raise RequestTooLargeError(f"body is {size} bytes; the limit is {MAX_BODY_BYTES}")
    return next_middleware(app)


# --------------------------------------------------------------------------- metrics


def observe(rec: Recommendation, endpoint: str) -> None:
    """Per-request figures of a served list: fallback use, empty results, unknown ids.

    The request's metrics go out in one EMF blob with two dimension sets, ``[]`` (what the
    error-rate and latency alarms read) and ``[Variant, Endpoint]`` (the contract's dimensions).
    """
    metrics.add_dimensions(Variant=rec.variant, Endpoint=endpoint)
    metrics.add_metric(name="Fallback", unit=MetricUnit.Count, value=int(rec.variant == "fallback"))
    metrics.add_metric(name="EmptyResults", unit=MetricUnit.Count, value=int(not rec.items))
    metrics.add_metric(name="UnknownIds", unit=MetricUnit.Count, value=rec.unknown_items)


def serve(app: APIGatewayHttpResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Resolve one request and record ``Requests``, ``Errors`` (5xx or a crash) and ``LatencyMs``.

    They land in the request's EMF blob without dimensions (the error-rate and p99-latency alarms
    in template.yaml read them so), and per variant/endpoint when :func:`observe` ran.
    """
    started = time.perf_counter()
    status = 500
    try:
        response = app.resolve(event, context)
        status = int(response.get("statusCode", 500))
        return response
    finally:
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=int(status >= 500))
        metrics.add_metric(
            name="LatencyMs",
            unit=MetricUnit.Milliseconds,
            value=round((time.perf_counter() - started) * 1000, 3),
        )


def _ok(model: BaseModel) -> Response:
    """A 200 JSON response serialised by Pydantic in one call (the route's model is in `responses`)."""
    return Response(status_code=200, content_type="application/json", body=model.model_dump_json())


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


# --------------------------------------------------------------------------- routers


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
    ):  # returns Response: no annotation, so Powertools does not re-validate the body
        filters = Filters(_csv(category), _csv(exclude_category), _csv(exclude), price_min, price_max)
        rec = service().recommend(user_id=user_id, k=k, filters=filters, endpoint="user_recommendations")
        observe(rec, "user_recommendations")
        return _ok(RecommendationResponse.of(rec))

    @router.post(
        "/v1/recommendations",
        summary="Top-K from a session history (anonymous or new users)",
        responses=responses(RecommendationResponse, "Ranked items for the session"),
        tags=["recommendations"],
        middlewares=[_limit_body],
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
        )
        observe(rec, "recommendations")
        return _ok(RecommendationResponse.of(rec))

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
        rec = service().similar(item_id, k=k, filters=Filters(categories=_csv(category), price_max=price_max))
        observe(rec, "similar")
        return _ok(RecommendationResponse.of(rec))

    @router.post(
        "/v1/search",
        summary="Personalised lexical search, or re-ranking of a candidate list",
        responses=responses(RecommendationResponse, "Matching items, best first"),
        tags=["search"],
        middlewares=[_limit_body],
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
        return _ok(RecommendationResponse.of(rec))

    @router.get("/v1/health", summary="Loaded versions, aliases, fallback state", tags=["operations"])
    def health() -> HealthResponse:
        return HealthResponse.model_validate(service().health())

    @router.get("/v1/openapi.json", summary="This OpenAPI document", tags=["operations"])
    def openapi() -> dict[str, Any]:
        return openapi_document()

    return router


def events_router(collector: Callable[[], EventCollector]) -> Router:
    """Routes of the collect_events function."""
    router = Router()

    @router.post(
        "/v1/events",
        summary="Feedback events (clicks, carts, purchases) echoing recommendation_id",
        responses=responses(EventsResponse, "Events accepted for delivery"),
        tags=["events"],
        middlewares=[_limit_body],
    )
    def collect(body: Annotated[EventsRequest, Body()]) -> EventsResponse:
        result = collector().collect(body.events)
        metrics.add_dimensions(Endpoint="events")
        metrics.add_metric(name="EventsAccepted", unit="Count", value=result.accepted)
        metrics.add_metric(name="EventsFailed", unit="Count", value=len(result.failed))
        return EventsResponse(accepted=result.accepted, event_ids=result.event_ids, failed=result.failed)

    return router


def build_resolver(*routers: Router) -> APIGatewayHttpResolver:
    """A validating HTTP API resolver with the error mapping and the given routers."""
    app = APIGatewayHttpResolver(enable_validation=True)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app


def _unbound() -> Any:
    raise ConfigurationError("documentation-only resolver has no service")


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the whole serving API (both functions), as committed in infra/."""
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
