"""The HTTP plumbing both serving functions share: problem+json errors, limits, metrics, resolver.

Light on purpose (Powertools and Pydantic only): ``collect_events`` imports it and must not pay
for numpy or onnxruntime.
"""

from __future__ import annotations

import functools
import json
import time
import weakref
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder, Router
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.middlewares import openapi_validation as ov
from aws_lambda_powertools.event_handler.openapi.compat import lenient_issubclass
from aws_lambda_powertools.event_handler.openapi.dependant import is_scalar_field
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.errors import InputError, NotFoundError, ShelfwiseError
from shelfwise.events import MAX_ID_LENGTH
from shelfwise.observability import logger, metrics
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


class RequestValidation(ov.OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, with each route's parameter kinds worked out once.

    Powertools (3.37) decides on every request, for each query parameter, whether it is a scalar
    or a model (``is_scalar_field`` walks its type annotation: about a tenth of a millisecond for
    the user route's six parameters), and builds the header and cookie maps even for routes that
    declare none. This handler is Powertools' ``handler`` with those decisions cached per route
    and the empty steps skipped; the values and errors come from the same Powertools functions,
    so requests are validated and rejected exactly as before (``tests/unit/test_api.py``
    compares the two on valid and invalid requests).
    """

    def __init__(self) -> None:
        super().__init__()
        # route.dependant -> its query parameters with their kind ("scalar", "model" or None); weak,
        # because the resolver makes a new route (and dependant) for every unmatched request
        self._query_kinds: weakref.WeakKeyDictionary[Any, list[tuple[Any, str | None]]] = (
            weakref.WeakKeyDictionary()
        )

    def _kinds(self, dependant: Any) -> list[tuple[Any, str | None]]:
        kinds = self._query_kinds.get(dependant)
        if kinds is None:
            kinds = [
                (
                    param,
                    "scalar"
                    if is_scalar_field(param)
                    else "model"
                    if lenient_issubclass(param.field_info.annotation, BaseModel)
                    else None,
                )
                for param in dependant.query_params
            ]
            self._query_kinds[dependant] = kinds
        return kinds

    def handler(self, app: Any, next_middleware: Any) -> Response:
        dependant = app.context["_route"].dependant
        event = app.current_event
        values, errors = ov._request_params_to_args(dependant.path_params, app.context["_route_args"])
        if dependant.query_params:
            query = event.resolved_query_string_parameters
            multi = ov._get_multi_value_query_params(event)
            for param, kind in self._kinds(dependant):  # = ov._normalize_multi_params
                if kind == "scalar":
                    ov._process_scalar_param(query, param, multi)
                elif kind == "model":
                    ov._process_model_param(query, param, multi)
            query_values, query_errors = ov._request_params_to_args(dependant.query_params, query)
            values.update(query_values)
            errors += query_errors
        if dependant.header_params:
            headers = ov._normalize_multi_params(
                event.resolved_headers_field,
                dependant.header_params,
                multi_value_params=ov.CaseInsensitiveDict(event.get("multiValueHeaders")),
            )
            header_values, header_errors = ov._request_params_to_args(dependant.header_params, headers)
            values.update(header_values)
            errors += header_errors
        if dependant.cookie_params:
            cookie_values, cookie_errors = ov._request_params_to_args(
                dependant.cookie_params, event.resolved_cookies_field
            )
            values.update(cookie_values)
            errors += cookie_errors
        if dependant.body_params:
            body_values, body_errors = ov._request_body_to_args(
                required_params=dependant.body_params, received_body=self._get_body(app)
            )
            values.update(body_values)
            errors += body_errors
        if errors:
            raise RequestValidationError(ov._normalize_errors(errors))
        app.context["_route_args"] = values
        return next_middleware(app)


class LeanResponseBuilder(ResponseBuilder):  # type: ignore[type-arg]
    """Powertools' response builder, reading the request's headers only when compression may apply.

    Powertools looks up ``Accept-Encoding`` (building a case-insensitive copy of all request
    headers) before it checks whether the route or the response enabled compression at all; none
    of these routes does, so the answer is the same without the headers.
    """

    @staticmethod
    def _has_compression_enabled(
        route_compression: bool, response_compression: bool | None, event: Any
    ) -> bool:
        if not route_compression and not response_compression:
            return False
        return ResponseBuilder._has_compression_enabled(route_compression, response_compression, event)


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

    Validation is Powertools' with :class:`RequestValidation` in place of its request step (the
    resolver builds each route's middleware stack on the route's first request, from this slot),
    and responses are built by :class:`LeanResponseBuilder`.
    """
    app = APIGatewayHttpResolver(enable_validation=True)
    app._request_validation_middleware = RequestValidation()
    app._response_builder_class = LeanResponseBuilder
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app
