"""The serving function's handler in process, with exploration on and off, and behind the local HTTP API."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from shelfwise_local.bench._common import pct
from shelfwise_local.bench.serve.events import SHOP_CLIENT, Context, iam_authorizer, route_of

REPO = Path(__file__).resolve().parents[4]
SERVE_APP = REPO / "functions" / "serve_recommendations" / "app.py"


def load_app(cache_dir: Path) -> Any:
    """The serving function's module, imported as Lambda would (init: aliases, download, load)."""
    os.environ["MODEL_CACHE_DIR"] = str(cache_dir)
    spec = importlib.util.spec_from_file_location("serve_app_bench", SERVE_APP)
    assert spec and spec.loader
    app = importlib.util.module_from_spec(spec)
    sys.modules["serve_app_bench"] = app
    spec.loader.exec_module(app)
    return app


@dataclasses.dataclass
class HandlerTimes:
    """Per request wall and CPU ms of the handler, CPU ms by route, status counts, throughput."""

    wall_ms: list[float]
    cpu_ms: list[float]
    cpu_by_route: dict[str, list[float]]
    statuses: dict[int, int]
    rps: float
    recorded: int  # served-list lines written


def handler_times(app: Any, events: list[dict[str, Any]], ctx: Any) -> HandlerTimes:
    """The handler in process on ``events``, after 200 warm-up requests (EMF lines go to
    /dev/null as Lambda's stdout would take them)."""
    handler_ms: list[float] = []
    handler_cpu: list[float] = []
    route_cpu: dict[str, list[float]] = {}
    statuses: dict[int, int] = {}
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for ev in events[:200]:
            app.lambda_handler(ev, ctx)
        t_all = time.perf_counter()
        for ev in events:
            t, c = time.perf_counter(), time.thread_time()
            resp = app.lambda_handler(ev, ctx)
            handler_ms.append((time.perf_counter() - t) * 1000)
            handler_cpu.append((time.thread_time() - c) * 1000)
            route_cpu.setdefault(route_of(ev), []).append(handler_cpu[-1])
            statuses[resp["statusCode"]] = statuses.get(resp["statusCode"], 0) + 1
        handler_rps = len(events) / (time.perf_counter() - t_all)
        recorded = app.recommender.impressions.recorded  # served-list lines written to stdout
    return HandlerTimes(handler_ms, handler_cpu, route_cpu, statuses, handler_rps, recorded)


def exploration_ab(app: Any, events: list[dict[str, Any]], ctx: Any, block: int = 250) -> dict[str, Any]:
    """Handler wall and CPU time with exploration on and off, in alternating blocks of requests."""
    from shelfwise.exploration import ExplorationPolicy

    rec = app.recommender
    saved = rec.exploration
    policy = ExplorationPolicy(share=1.0, epsilon=0.05, pool=30)
    wall: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            for b, start in enumerate(range(0, len(events), block)):
                for arm in ("on", "off") if b % 2 == 0 else ("off", "on"):
                    rec.exploration = policy if arm == "on" else None
                    for ev in events[start : start + block]:
                        t, c = time.perf_counter(), time.thread_time()
                        app.lambda_handler(ev, ctx)
                        wall[arm].append((time.perf_counter() - t) * 1000)
                        cpu[arm].append((time.thread_time() - c) * 1000)
    finally:
        rec.exploration = saved
    out: dict[str, Any] = {"policy": policy.params(), "requests_per_arm": len(wall["on"])}
    for arm in ("on", "off"):
        out[f"{arm}_p50_ms"] = pct(wall[arm], 50)
        out[f"{arm}_p99_ms"] = pct(wall[arm], 99)
        out[f"{arm}_cpu_p50_ms"] = pct(cpu[arm], 50)
        out[f"{arm}_cpu_p99_ms"] = pct(cpu[arm], 99)
    out["p99_delta_ms"] = round(out["on_p99_ms"] - out["off_p99_ms"], 3)
    out["cpu_p99_delta_ms"] = round(out["on_cpu_p99_ms"] - out["off_cpu_p99_ms"], 3)
    return out


def http_api(app: Any, events: list[dict[str, Any]]) -> list[float]:
    """Requests through the local runtime's HTTP API (shelfwise_local.runtime.httpapi), one client."""
    import http.client
    import uuid

    from shelfwise_local.runtime.functions import Invocation
    from shelfwise_local.runtime.httpapi import LocalHttpApi, Route

    def invoke(function: str, event: dict[str, Any]) -> Invocation:
        # What API Gateway delivers once its IAM authorizer accepted the call (the local HTTP API
        # has no authorizer of its own).
        event["requestContext"]["authorizer"] = iam_authorizer(SHOP_CLIENT)
        started = time.monotonic()
        payload = app.lambda_handler(event, Context())
        return Invocation(
            function, uuid.uuid4().hex, started, (time.monotonic() - started) * 1000, event, payload
        )

    routes = [
        Route("GET", "/v1/users/{user_id}/recommendations", "serve"),
        Route("POST", "/v1/recommendations", "serve"),
        Route("GET", "/v1/items/{item_id}/similar", "serve"),
    ]
    api = LocalHttpApi("bench", routes, invoke, "123456789012", time.time).start()
    # One TCP segment per response: without it Nagle + delayed ACK add ~40 ms per keep-alive request.
    api.server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    host, port = api.server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port))
    times = []
    try:
        for ev in events:
            path = ev["rawPath"] + (f"?{ev['rawQueryString']}" if ev["rawQueryString"] else "")
            t = time.perf_counter()
            conn.request(
                ev["requestContext"]["http"]["method"],
                path,
                body=ev.get("body"),
                headers={"content-type": "application/json"},
            )
            conn.getresponse().read()
            times.append((time.perf_counter() - t) * 1000)
    finally:
        conn.close()
        api.stop()
    return times
