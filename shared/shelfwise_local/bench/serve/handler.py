"""The serving function's handler in process, with exploration on and off, and behind the local HTTP API."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
import time
from collections.abc import Callable
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


def _alternate(
    app: Any, events: list[dict[str, Any]], ctx: Any, arms: dict[str, Callable[[], None]], block: int
) -> dict[str, dict[str, list[float]]]:
    """Handler wall and CPU ms per arm: ``arms[name]()`` sets the arm up, then a block of the same
    requests runs; the arms take turns block by block (reversed every other block), so all see the
    same machine load."""
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for b, start in enumerate(range(0, len(events), block)):
            for name in names if b % 2 == 0 else names[::-1]:
                arms[name]()
                for ev in events[start : start + block]:
                    t, c = time.perf_counter(), time.thread_time()
                    app.lambda_handler(ev, ctx)
                    wall[name].append((time.perf_counter() - t) * 1000)
                    cpu[name].append((time.thread_time() - c) * 1000)
    return {"wall": wall, "cpu": cpu}


def _arm_figures(times: dict[str, dict[str, list[float]]], name: str) -> dict[str, float]:
    wall, cpu = times["wall"][name], times["cpu"][name]
    return {
        f"{name}_p50_ms": pct(wall, 50),
        f"{name}_p99_ms": pct(wall, 99),
        f"{name}_cpu_p50_ms": pct(cpu, 50),
        f"{name}_cpu_p99_ms": pct(cpu, 99),
    }


def exploration_ab(app: Any, events: list[dict[str, Any]], ctx: Any, block: int = 250) -> dict[str, Any]:
    """Handler wall and CPU time with exploration on and off, in alternating blocks of requests."""
    from shelfwise.exploration import ExplorationPolicy

    rec = app.recommender
    saved = rec.exploration
    policy = ExplorationPolicy(share=1.0, epsilon=0.05, pool=30)

    def arm(on: bool) -> Callable[[], None]:
        def set_up() -> None:
            rec.exploration = policy if on else None

        return set_up

    try:
        times = _alternate(app, events, ctx, {"on": arm(True), "off": arm(False)}, block)
    finally:
        rec.exploration = saved
    out: dict[str, Any] = {"policy": policy.params(), "requests_per_arm": len(times["wall"]["on"])}
    out.update(_arm_figures(times, "on"))
    out.update(_arm_figures(times, "off"))
    out["p99_delta_ms"] = round(out["on_p99_ms"] - out["off_p99_ms"], 3)
    out["cpu_p99_delta_ms"] = round(out["on_cpu_p99_ms"] - out["off_cpu_p99_ms"], 3)
    return out


def graph_ab(
    app: Any, events: list[dict[str, Any]], ctx: Any, other: Path, names: tuple[str, str], block: int = 250
) -> dict[str, Any]:
    """The handler serving its loaded graph against serving ``other`` (a graph of the same contract
    and catalogue, e.g. the retrieval graph a ranker wraps) in its place, alternating blocks of the
    same requests: what the graph costs inside the whole request, caches and all."""
    import onnxruntime as ort

    from shelfwise.serving.model import session_options

    state = app.recommender.state
    model = state.models[state.aliases.champion]
    own = model.session
    sessions = {
        names[0]: own,
        names[1]: ort.InferenceSession(str(other), session_options(1), providers=["CPUExecutionProvider"]),
    }

    def arm(name: str) -> Callable[[], None]:
        def set_up() -> None:
            model.session = sessions[name]

        return set_up

    try:
        times = _alternate(app, events, ctx, {name: arm(name) for name in names}, block)
    finally:
        model.session = own
    out: dict[str, Any] = {"requests_per_arm": len(times["wall"][names[0]])}
    for name in names:
        out.update(_arm_figures(times, name))
    out["p50_delta_ms"] = round(out[f"{names[0]}_p50_ms"] - out[f"{names[1]}_p50_ms"], 3)
    out["p99_delta_ms"] = round(out[f"{names[0]}_p99_ms"] - out[f"{names[1]}_p99_ms"], 3)
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
