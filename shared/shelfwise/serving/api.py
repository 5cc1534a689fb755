"""The HTTP plumbing both serving functions share: problem+json errors, limits, metrics, resolver.

Light on purpose (Powertools and Pydantic only): ``collect_events`` imports it and must not pay
for numpy or onnxruntime.
"""

from __future__ import annotations

import functools
import json
import time
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.errors import InputError, NotFoundError, ShelfwiseError
from shelfwise.events import MAX_ID_LENGTH
from shelfwise.observability import logger, metrics
from shelfwise.powertools_internals.http import use_lean_validation_and_responses
from shelfwise.serving.config import MAX_BODY_BYTES, REQUEST_TIME
from shelfwise.serving.errors import DeliveryError, ModelUnavailableError

PROBLEM_JSON = "application/problem+json"

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


@functools.cache
def _strict_fields(model: type[BaseModel]) -> tuple[frozenset[str], frozenset[str]]:
    """(fields that are not booleans, fields that are timestamps) of a model, looked up once."""
    fields = model.model_fields
    return (
        frozenset(name for name, f in fields.items() if f.annotation is not bool),
        frozenset(name for name, f in fields.items() if f.annotation is datetime),
    )


def no_bool_numbers(model: type[BaseModel], data: Any) -> Any:
    """Reject what Pydantic's lax mode would coerce: true/false as numbers, numbers as timestamps."""
    if isinstance(data, dict):
        not_bool, timestamps = _strict_fields(model)
        for name, value in data.items():
            if isinstance(value, bool) and name in not_bool:
                raise ValueError(f"{name} must be a number, not a boolean")
            if name in timestamps and not isinstance(value, str):
                raise ValueError(f"{name} must be an ISO 8601 string")
    return data


# Models are built on first use, not at import: a cold start builds those of the route it
# answers, not all of them (each costs 1-5 ms); the OpenAPI document builds every one.
LAZY = ConfigDict(defer_build=True)


class StrictModel(BaseModel):
    # Ids are opaque: no whitespace stripping (the OpenAPI schema could not say so); an id with
    # stray spaces is simply unknown and counted.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        return no_bool_numbers(cls, data)


class FieldProblem(BaseModel):
    model_config = LAZY

    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = LAZY

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

    @app.exception_handler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # json.loads gives up on JSON nested ~1000 levels deep: the client's input, not our crash.
        if "decoding a JSON" in str(exc):
            return problem(400, "Bad request", "the JSON body is nested too deeply")
        logger.exception("unexpected RecursionError")
        return problem(500, "Internal error", "RecursionError")

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


def limit_body(app: APIGatewayHttpResolver, next_middleware: Any) -> Response:
    """Refuse bodies over the limit (the validation handler does the same for invalid ones)."""
    size = _body_size(app)
    if size > MAX_BODY_BYTES:
        raise RequestTooLargeError(f"body is {size} bytes; the limit is {MAX_BODY_BYTES}")
    return next_middleware(app)


def serve(app: APIGatewayHttpResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Resolve one request and record ``Requests``, ``Errors`` (5xx or a crash) and ``LatencyMs``.

    They land in the request's EMF blob without dimensions (the error-rate and p99-latency alarms
    in template.yaml read them so), and per variant/endpoint when :func:`observe` ran.
    """
    started = time.perf_counter()
    status = 500
    epoch_ms = (event.get("requestContext") or {}).get("timeEpoch")
    token = REQUEST_TIME.set(epoch_ms / 1000 if isinstance(epoch_ms, int | float) else None)
    try:
        response = app.resolve(event, context)
        status = int(response.get("statusCode", 500))
        return response
    finally:
        REQUEST_TIME.reset(token)
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=int(status >= 500))
        metrics.add_metric(
            name="LatencyMs",
            unit=MetricUnit.Milliseconds,
            value=round((time.perf_counter() - started) * 1000, 3),
        )


def ok(body: str) -> Response:
    """A 200 response with an already written JSON document.

    The route's model is in its ``responses`` (OpenAPI); the route has no return annotation, so
    Powertools does not validate or encode the body a second time.
    """
    return Response(status_code=200, content_type="application/json", body=body)


def csv_values(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def build_resolver(*routers: Router) -> APIGatewayHttpResolver:
    """A validating HTTP API resolver with the error mapping and the given routers.

    Validation is Powertools' with its per-route work cached, and responses are built without
    reading headers no route needs (:mod:`shelfwise.powertools_internals`).
    """
    app = APIGatewayHttpResolver(enable_validation=True)
    use_lean_validation_and_responses(app)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app
