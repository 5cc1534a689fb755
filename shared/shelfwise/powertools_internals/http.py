"""Powertools' request validation and response building with per-route work cached (see the package)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder
from aws_lambda_powertools.event_handler.middlewares import openapi_validation as ov
from aws_lambda_powertools.event_handler.openapi.compat import lenient_issubclass  # type: ignore[attr-defined]
from aws_lambda_powertools.event_handler.openapi.dependant import is_scalar_field  # type: ignore[attr-defined]
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from pydantic import BaseModel


class RequestValidation(ov.OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, with each route's parameter kinds worked out once.

    Powertools (3.37) decides on every request, for each query parameter, whether it is a scalar
    or a model (``is_scalar_field`` walks its type annotation: about a tenth of a millisecond for
    the user route's six parameters), and builds the header and cookie maps even for routes that
    declare none. This handler is Powertools' ``handler`` with those decisions cached per route
    and the empty steps skipped; the values and errors come from the same Powertools functions,
    so requests are validated and rejected exactly as before (``tests/unit/test_api.py``
    compares the two on valid and invalid requests).

    Two hooks: ``before(event)`` runs first on every matched route (an access check that must
    come before any validation error), and ``read_body(event)`` replaces Powertools' body
    decoding for routes with a body.
    """

    def __init__(
        self,
        before: Callable[[Any], None] | None = None,
        read_body: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__()
        self._before, self._read_body = before, read_body
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

    def _get_body(self, app: Any) -> Any:
        if self._read_body is not None:
            return self._read_body(app.current_event)
        return super()._get_body(app)

    def handler(self, app: Any, next_middleware: Any) -> Response:
        if self._before is not None:
            self._before(app.current_event)
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
                multi_value_params=ov.CaseInsensitiveDict(  # type: ignore[attr-defined]
                    event.get("multiValueHeaders")
                ),
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
            raise RequestValidationError(ov._normalize_errors(errors))  # type: ignore[attr-defined]
        app.context["_route_args"] = values
        return next_middleware(app)


class LeanResponseBuilder(ResponseBuilder):
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


def use_lean_validation_and_responses(
    app: APIGatewayHttpResolver,
    *,
    before: Callable[[Any], None] | None = None,
    read_body: Callable[[Any], Any] | None = None,
) -> None:
    """Put :class:`RequestValidation` (with its hooks) in the resolver's request-validation slot
    (the resolver builds each route's middleware stack from it on the route's first request) and
    build responses with :class:`LeanResponseBuilder`."""
    app._request_validation_middleware = RequestValidation(before, read_body)
    app._response_builder_class = LeanResponseBuilder
