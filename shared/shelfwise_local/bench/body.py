"""What parsing request bodies at the boundary costs: ``read_json_body`` against bare ``json.loads``.

``python -m shelfwise_local.bench.body``: a recommendation body with a 20-item history and a
500-event batch, each parsed both ways in alternating blocks; medians of 7 blocks, in microseconds,
then one JSON line.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from shelfwise.serving.api import read_json_body
from shelfwise_local.bench.serve import apigw_event


def _bodies() -> dict[str, Any]:
    history = [{"item_id": f"item-{i:06d}", "event_type": "view"} for i in range(20)]
    events = [
        {
            "event_type": "click",
            "user_id": f"u{i}",
            "item_id": f"item-{i:06d}",
            "timestamp": "2026-12-06T10:00:00Z",
            "recommendation_id": "0" * 32,
            "position": i % 20,
            "price": 12.5,
            "properties": {"page": "home", "slot": i},
        }
        for i in range(500)
    ]
    return {
        "recommend_20_history": {"user_id": "user-000001", "history": history, "k": 20},
        "events_500": {"events": events},
    }


def _median_us(fn: Callable[[], Any], n: int, blocks: int = 7) -> float:
    runs = []
    for _ in range(blocks):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def main() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, body in _bodies().items():
        event = APIGatewayProxyEventV2(apigw_event("POST", "/v1/events", body=body))
        raw = event.body or ""
        n = 2000 if len(raw) < 5000 else 50
        bare = _median_us(lambda raw=raw: json.loads(raw), n)
        ours = _median_us(lambda event=event: read_json_body(event), n)
        out[name] = {"bytes": len(raw), "json_loads_us": round(bare, 1), "read_json_body_us": round(ours, 1)}
        print(f"{name} ({len(raw)} bytes): json.loads {bare:.1f} us, read_json_body {ours:.1f} us")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
