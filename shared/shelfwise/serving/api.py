"""The HTTP plumbing both serving functions share: problem+json errors, limits, metrics, resolver.

Light on purpose (Powertools and Pydantic only): ``collect_events`` imports it and must not pay
for numpy or onnxruntime.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import time
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, Literal

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
from shelfwise.serving.config import MAX_BODY_BYTES, REQUEST_TIME, served_at
from shelfwise.serving.errors import DeliveryError, ModelUnavailableError

PROBLEM_JSON = "application/problem+json"
# JSON bodies nested deeper than this are refused (400) before any model sees them: no request
# of this API needs more than a handful of levels, and deep free-form values cost every reader
# downstream (validation, serialisation, the ingest) stack and time.
MAX_JSON_DEPTH = 32
# A lone surrogate can only arrive as a \uD800-\uDFFF escape.
_SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F]")
# Routes every caller may read, whatever the API's authorization.
PUBLIC_PATHS = frozenset({"/v1/openapi.json"})

ApiAuth = Literal["NONE", "AWS_IAM", "JWT"]

# The authenticated API client of the current request (None: anonymous), and whether a 5xx of it
# was a dependency outage (not counted as a model/platform error).
CALLER: ContextVar[str | None] = ContextVar("shelfwise_caller", default=None)
DEPENDENCY_FAILURE: ContextVar[bool] = ContextVar("shelfwise_dependency_failure", default=False)

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
    400: _problem_response(
        "The request cannot be served as given (not UTF-8, not finite, nested too deeply)"
    ),
    401: _problem_response("No authenticated API client (the API requires IAM or JWT authorization)"),
    404: _problem_response("Unknown route or item"),
    413: _problem_response("Body larger than 256 KB"),
    429: _problem_response("This API client used its requests of this minute; retry after Retry-After"),
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


class UnsupportedMediaTypeError(InputError):
    """The body is not plain JSON (another content type, or a content encoding such as gzip)."""


class UnauthenticatedError(ShelfwiseError):
    """The API requires an authenticated client and the request carries none (401)."""


class QuotaExceededError(InputError):
    """The client used its requests of this minute (429)."""


def caller_identity(event: dict[str, Any]) -> str | None:
    """The API client API Gateway authenticated for this request, or None.

    JWT: the token's ``client_id`` (OAuth client credentials), else ``azp``, else ``sub``; IAM:
    the signing principal's ARN. Set by API Gateway only after its authorizer accepted the call.
    """
    auth = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = (auth.get("jwt") or {}).get("claims") or {}
    for key in ("client_id", "azp", "sub"):
        if claims.get(key):
            return f"jwt:{claims[key]}"
    iam = auth.get("iam") or {}
    for key in ("userArn", "userId", "accessKey"):
        if iam.get(key):
            return f"iam:{iam[key]}"
    lam = auth.get("lambda") or {}
    if lam.get("principalId"):
        return f"lambda:{lam['principalId']}"
    return None


class Access:
    """Who may call, and how often: ``NONE`` (the explicitly open API) lets anyone in; otherwise
    every route but the public ones needs the client API Gateway authenticated. The gateway
    already refuses such calls; this check keeps a route that lost its authorizer (a template
    edit, a direct invoke) closed, and decides what ``/v1/health`` shows. With a ``quota``
    (:class:`shelfwise.serving.quota.ClientQuota`), each client (the authenticated principal, or
    the source IP on the open API) gets its own requests per minute; over it, 429."""

    def __init__(self, mode: ApiAuth = "AWS_IAM", quota: Any = None) -> None:
        self.mode = mode
        self.quota = quota

    def check(self, event: Any) -> None:
        caller = CALLER.get()
        if self.mode != "NONE" and caller is None and event.path not in PUBLIC_PATHS:
            raise UnauthenticatedError(f"this API requires {self.mode} authorization")
        if self.quota is not None:
            http = (event.raw_event.get("requestContext") or {}).get("http") or {}
            client = caller or f"ip:{http.get('sourceIp') or 'unknown'}"
            if not self.quota.admit(client):
                raise QuotaExceededError(f"this client used its {self.quota.limit} requests of this minute")


def _refuse_constant(name: str) -> Any:
    raise InputError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"number {text[:40]} is out of range")
    return value


def _check_depth(value: Any) -> None:
    """No container deeper than MAX_JSON_DEPTH (iterative; only containers are visited)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InputError(f"the JSON body is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
        for child in node.values() if node.__class__ is dict else node:
            if child.__class__ is dict or child.__class__ is list:
                stack.append((child, depth + 1))


def _check_strings(value: Any) -> None:
    """Every string (keys too) valid Unicode: no lone surrogate."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(
                    "a string holds a lone surrogate (\\ud800-\\udfff), which is not Unicode"
                ) from exc


def read_json_body(event: Any) -> Any:
    """The request's JSON body, parsed at the boundary, or the 4xx that says why not.

    Every way a body can be unusable is an :class:`InputError` here (413 size, 415 content type
    or encoding, 400 bytes that are not UTF-8, non-finite or overlong numbers, nesting, lone
    surrogates) or Powertools' own 422 ``json_invalid``; nothing a client sends reaches the
    models as anything but parsed, bounded JSON.
    """
    headers = {str(k).lower(): str(v) for k, v in (event.headers or {}).items()}
    raw = event.body
    if not raw:
        return None
    size = len(raw) * 3 // 4 if event.is_base64_encoded else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise RequestTooLargeError(f"body is {size} bytes; the limit is {MAX_BODY_BYTES}")
    media, _, params = headers.get("content-type", "").partition(";")
    media = media.strip().lower()
    if (
        media
        and media != "application/json"
        and not (media.startswith("application/") and media.endswith("+json"))
    ):
        raise UnsupportedMediaTypeError(f"send application/json, not {media[:80]!r}")
    charset = (
        params.strip().lower().removeprefix("charset=").strip('"') if "charset=" in params.lower() else ""
    )
    if charset and charset not in {"utf-8", "utf8"}:
        raise UnsupportedMediaTypeError(f"send UTF-8 JSON, not charset {charset[:40]!r}")
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding and encoding != "identity":
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding[:40]!r} is not accepted; send plain JSON"
        )
    if event.is_base64_encoded:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("the body is not valid base64") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"the body is not UTF-8 (byte {exc.start})") from exc
    else:
        text = raw
    try:
        # Floats through a hook that refuses infinities (1e999); integers past 4,300 digits are
        # refused by int() itself (ValueError below).
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as exc:  # json gives up near 1,000 levels: still the client's input
        raise InputError(f"the JSON body is nested too deeply (limit {MAX_JSON_DEPTH} levels)") from exc
    except json.JSONDecodeError as e:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", e.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": e.msg},
                }
            ],
            body=e.doc,
        ) from e
    except ValueError as exc:  # int() past 4,300 digits and the like
        raise InputError(f"the JSON body cannot be read: {str(exc)[:80]}") from exc
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and isinstance(value, dict | list):
        _check_depth(value)
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


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

    @app.exception_handler(UnsupportedMediaTypeError)
    def _media(exc: UnsupportedMediaTypeError) -> Response:
        return problem(415, "Unsupported media type", str(exc))

    @app.exception_handler(UnauthenticatedError)
    def _unauthenticated(exc: UnauthenticatedError) -> Response:
        return problem(401, "Unauthorized", str(exc))

    @app.exception_handler(QuotaExceededError)
    def _quota(exc: QuotaExceededError) -> Response:
        response = problem(429, "Too many requests", str(exc))
        response.headers["Retry-After"] = str(60 - int(served_at()) % 60)
        return response

    @app.exception_handler(NotFoundError)
    def _not_found(exc: NotFoundError) -> Response:
        return problem(404, "Not found", str(exc))

    @app.not_found
    def _no_route(exc: RouteNotFoundError) -> Response:
        ev = app.current_event
        allowed = allowed_methods(app, ev.path)
        if allowed:
            response = problem(405, "Method not allowed", f"{ev.path} answers {', '.join(allowed)}")
            response.headers["Allow"] = ", ".join(allowed)
            return response
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
        # A dependency outage (the delivery stream), counted on its own metric, not as our error.
        DEPENDENCY_FAILURE.set(True)
        return problem(503, "Delivery unavailable", str(exc))

    @app.exception_handler(ShelfwiseError)
    def _other(exc: ShelfwiseError) -> Response:  # a domain error nobody mapped: still not a crash page
        logger.error("unmapped domain error", extra={"error": type(exc).__name__})
        return problem(500, "Internal error", type(exc).__name__)


def allowed_methods(app: APIGatewayHttpResolver, path: str) -> list[str]:
    """Methods the resolver's routes answer at ``path`` (empty: no such route)."""
    routes = app._static_routes + app._dynamic_routes
    return sorted({r.method for r in routes if r.rule.match(path)})


def serve(app: APIGatewayHttpResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Resolve one request and record ``Requests``, ``Errors``, ``DependencyErrors``, ``LatencyMs``.

    ``Errors`` counts what the model and the platform cause (a 5xx or a crash); a client's 4xx
    never, and a dependency outage (the delivery stream down) goes to ``DependencyErrors``
    instead, so neither can drive the error-rate alarm that rolls models back. They land in the
    request's EMF blob without dimensions (the alarms in template.yaml read them so), and per
    variant/endpoint when :func:`observe` ran.
    """
    started = time.perf_counter()
    status = 500
    epoch_ms = (event.get("requestContext") or {}).get("timeEpoch")
    token = REQUEST_TIME.set(epoch_ms / 1000 if isinstance(epoch_ms, int | float) else None)
    caller = CALLER.set(caller_identity(event))
    dependency = DEPENDENCY_FAILURE.set(False)
    try:
        response = app.resolve(event, context)
        status = int(response.get("statusCode", 500))
        return response
    finally:
        outage = DEPENDENCY_FAILURE.get()
        REQUEST_TIME.reset(token)
        CALLER.reset(caller)
        DEPENDENCY_FAILURE.reset(dependency)
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=int(status >= 500 and not outage))
        metrics.add_metric(
            name="DependencyErrors", unit=MetricUnit.Count, value=int(status >= 500 and outage)
        )
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


def build_resolver(*routers: Router, access: Access | None = None) -> APIGatewayHttpResolver:
    """A validating HTTP API resolver with the error mapping and the given routers.

    Validation is Powertools' with its per-route work cached, and responses are built without
    reading headers no route needs (:mod:`shelfwise.powertools_internals`). Its request step
    checks ``access`` first (who may call, how often) and parses bodies with
    :func:`read_json_body`.
    """
    app = APIGatewayHttpResolver(enable_validation=True)
    use_lean_validation_and_responses(app, before=(access or Access()).check, read_body=read_json_body)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    return app
