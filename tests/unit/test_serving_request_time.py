"""Impressions carry the time the API received the request, not the time the handler ran."""

import json
import time
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import Router

from shelfwise.serving.api import build_resolver, serve
from shelfwise.serving.config import served_at
from tests.conftest import load_event


def _app() -> Any:
    router = Router()

    @router.get("/v1/users/<user_id>/recommendations")
    def stamp(user_id: str) -> dict[str, float]:
        return {"served_at": served_at()}

    return build_resolver(router)


def test_request_time_comes_from_the_api_gateway_event(lambda_context: Any) -> None:
    event = load_event("apigw_get_user_recommendations")
    event["requestContext"]["timeEpoch"] = 1_767_600_000_123  # 2026-01-05T08:00:00.123Z
    response = serve(_app(), event, lambda_context)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["served_at"] == 1_767_600_000.123
    # outside a request: wall time again
    assert abs(served_at() - time.time()) < 5


def test_without_time_epoch_the_wall_clock_is_used(lambda_context: Any) -> None:
    event = load_event("apigw_get_user_recommendations")
    event["requestContext"].pop("timeEpoch", None)
    before = time.time()
    body = json.loads(serve(_app(), event, lambda_context)["body"])
    assert before - 1 <= body["served_at"] <= time.time() + 1
