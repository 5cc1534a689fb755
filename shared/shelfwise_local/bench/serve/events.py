"""Requests as API Gateway delivers them (payload format 2.0), and the benchmark's request mix."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# The IAM principal API Gateway reports for a SigV4-signed call (the template's default ApiAuth).
SHOP_CLIENT = "arn:aws:iam::123456789012:role/shop-backend"


def iam_authorizer(user_arn: str) -> dict[str, Any]:
    """``requestContext.authorizer`` of a call API Gateway's IAM authorization accepted."""
    return {"iam": {"accountId": "123456789012", "userArn": user_arn, "userId": "AROAEXAMPLE:shop"}}


def apigw_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    caller: str | None = SHOP_CLIENT,
) -> dict[str, Any]:
    """A payload format 2.0 event as API Gateway HTTP APIs send it (``caller``: the IAM principal
    its authorizer accepted; None for an anonymous call)."""
    raw_query = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {"content-type": "application/json", "host": "api.local"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "api.local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "bench",
            "routeKey": "$default",
            "stage": "$default",
            "time": "28/Nov/2026:16:00:00 +0000",
            "timeEpoch": 1795881600000,
        },
        "isBase64Encoded": False,
    }
    if caller is not None:
        event["requestContext"]["authorizer"] = iam_authorizer(caller)
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = json.dumps(body)
    return event


class Context:
    function_name = "serve"
    memory_limit_in_mb = 1769
    aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:serve"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def request_mix(n: int, n_items: int, n_users: int, seed: int = 2, history: int = 5) -> list[dict[str, Any]]:
    """A request mix: known users, session histories of ``history`` events, cold users, similar items."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n):
        kind = r % 10
        if kind < 4:
            u = f"user-{int(rng.integers(0, n_users)):06d}"
            out.append(apigw_event("GET", f"/v1/users/{u}/recommendations", query={"k": "20"}))
        elif kind < 8:
            hist = [
                {"item_id": f"sku-{int(i):07d}", "event_type": t}
                for i, t in zip(
                    rng.integers(0, n_items, history),
                    rng.choice(["view", "click", "add_to_cart"], history),
                    strict=True,
                )
            ]
            out.append(
                apigw_event(
                    "POST", "/v1/recommendations", body={"session_id": f"s-{r}", "history": hist, "k": 20}
                )
            )
        elif kind < 9:
            out.append(
                apigw_event(
                    "GET", f"/v1/items/sku-{int(rng.integers(0, n_items)):07d}/similar", query={"k": "20"}
                )
            )
        else:
            out.append(apigw_event("GET", f"/v1/users/new-{r}/recommendations", query={"k": "20"}))
    return out


def route_of(event: dict[str, Any]) -> str:
    """The kind of request of an :func:`request_mix` event (per-route figures)."""
    path = event["rawPath"]
    if path.endswith("/similar"):
        return "similar_items"
    if path == "/v1/recommendations":
        return "session_fold_in"
    return "cold_user_popularity" if "/users/new-" in path else "known_user"
