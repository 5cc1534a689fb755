"""Schemathesis against the serving API over a real loopback HTTP port (payload format 2.0).

The local runtime's ``LocalHttpApi`` turns HTTP requests into API Gateway v2 events and calls the
two handlers in this process, with moto behind them. Expectation: no 5xx and every response
conforms to the committed OpenAPI document (status codes, content types, bodies).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method

# Reuse the moto account and handlers of the handler tests (module-scoped fixtures).
from test_api import aws, bundle_dir, collect, serve  # noqa: F401

from shelfwise.serving.http import openapi_document
from shelfwise_local.runtime.functions import Invocation
from shelfwise_local.runtime.httpapi import LocalHttpApi, Route

schema = schemathesis.openapi.from_dict(openapi_document())
MAX_URL = 8192

ROUTES = [
    ("GET", "/v1/users/{user_id}/recommendations", "serve"),
    ("POST", "/v1/recommendations", "serve"),
    ("GET", "/v1/items/{item_id}/similar", "serve"),
    ("POST", "/v1/search", "serve"),
    ("GET", "/v1/health", "serve"),
    ("GET", "/v1/openapi.json", "serve"),
    ("POST", "/v1/events", "collect"),
]


class _Context:
    function_name = "serving"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:serving"
    aws_request_id = "schemathesis"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@pytest.fixture(scope="module")
def base_url(serve: Any, collect: Any) -> Iterator[str]:  # noqa: F811
    modules = {"serve": serve, "collect": collect}

    def invoke(function: str, event: dict[str, Any]) -> Invocation:
        started = time.monotonic()
        inv = Invocation(
            function=function, request_id=uuid.uuid4().hex, started=started, duration_ms=0.0, event=event
        )
        try:
            inv.payload = modules[function].lambda_handler(event, _Context())
        except Exception as exc:  # what Lambda reports for a crash (API Gateway then answers 500)
            inv.error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
        inv.duration_ms = (time.monotonic() - started) * 1000
        return inv

    api = LocalHttpApi(
        "serving", [Route(m, p, f) for m, p, f in ROUTES], invoke, "123456789012", time.time
    ).start()
    # Headers and body in one segment: without it a keep-alive client waits on delayed ACKs.
    api.server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    try:
        yield api.url
    finally:
        api.stop()


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_openapi_document(case: Any, base_url: str) -> None:
    if case.method.upper() != case.operation.method.upper():
        # Undeclared methods never reach a function: API Gateway answers them itself (404), so
        # the 405 + Allow expectation does not apply, and the local server's own reply is not ours.
        return
    kwargs = case.as_transport_kwargs(base_url=base_url)
    url = requests.Request(kwargs["method"], kwargs["url"], params=kwargs.get("params")).prepare().url or ""
    if len(url) > MAX_URL:
        return  # the gateway refuses such URLs itself (414); the local server's reply is not ours
    data = kwargs.get("data")
    if isinstance(data, bytes):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return  # not UTF-8 under a JSON content type: the local HTTP API cannot build that event
    excluded = [unsupported_method]
    if case.operation.path == "/v1/events":
        # The event schema has cross-field rules (user_id or session_id; item_id unless the type
        # is search) that the generated document does not express, so "valid" data can be invalid.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=base_url, excluded_checks=excluded)
