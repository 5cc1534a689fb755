"""Hostile input to the HTTP API of template.yaml, over the local HTTP API on the emulator (docs/hardening.md).

Fuzzed bodies (hypothesis), ids with path traversal and unicode tricks, deeply nested JSON and a
1 MB query string. The properties: never a 5xx and never a handler crash for bad input; for
``POST /v1/events`` every event sent is either accepted or reported failed (none lost).
Counts of what was tried are in docs/hardening.md.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shelfwise.registry import Registry
from shelfwise_local.bench.serve import build_synthetic_bundle
from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.testing import new_runtime

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
SERVING = "ServeRecommendationsFunction"
COLLECT = "CollectEventsFunction"

TRICKY_IDS = [
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2fetc",
    "/absolute",
    "user-000001/../user-000002",
    "\x00",
    "nul\x00byte",
    "\u202eevil",  # right-to-left override
    "user\u200b-000001",  # zero-width space inside a real id
    "\uff55ser-000001",  # fullwidth u: NFKC-equal to a real id
    "user-000001\u0301",  # combining accent
    "\U0001f600" * 20,
    "\ud7ff\ue000",
    "a" * 10_000,
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "=cmd|' /C calc'!A0",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    rt = new_runtime(TEMPLATE)
    try:
        env = rt.host.env_for(rt.host.find(SERVING))
        registry = Registry(
            rt.s3,
            rt.client("ssm"),
            rt.client("events"),
            env["MODELS_BUCKET"],
            env["SHELFWISE_ENV"],
            env["MODEL_NAME"],
        )
        bundle = build_synthetic_bundle(
            tmp_path_factory.mktemp("b") / "v1", n_items=120, dim=8, n_users=30, seed=1, version="v1"
        )
        registry.register(bundle, "v1")
        registry.promote("v1", force=True)
        yield rt
    finally:
        rt.close()


def _call(rt: LocalRuntime, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        rt.api_url + path, data=body, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = int(exc.code), exc.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw[:200]


def _no_crash_since(rt: LocalRuntime, n_before: dict[str, int]) -> None:
    for fn, n in n_before.items():
        crashed = [i.error for i in rt.invocations_of(fn)[n:] if not i.ok]
        assert not crashed, crashed[:2]


def _counts(rt: LocalRuntime) -> dict[str, int]:
    return {fn: len(rt.invocations_of(fn)) for fn in (SERVING, COLLECT)}


def test_ids_with_path_traversal_and_unicode_tricks(api: LocalRuntime) -> None:
    before = _counts(api)
    seen: dict[int, int] = {}
    for raw in TRICKY_IDS:
        q = urllib.parse.quote(raw, safe="")
        for method, path, body in (
            ("GET", f"/v1/users/{q}/recommendations?k=3", None),
            ("GET", f"/v1/items/{q}/similar?k=3", None),
            ("POST", "/v1/recommendations", {"user_id": raw, "history": [{"item_id": raw}], "k": 3}),
            ("POST", "/v1/search", {"query": raw, "k": 3}),
            (
                "POST",
                "/v1/events",
                {
                    "events": [
                        {
                            "event_type": "click",
                            "user_id": raw,
                            "item_id": raw,
                            "timestamp": "2026-11-20T10:00:00Z",
                        }
                    ]
                },
            ),
        ):
            data = None if body is None else json.dumps(body).encode()
            status, answer = _call(api, method, path, data)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, (method, path[:80], status, answer)
            if status == 200 and method == "GET" and "recommendations" in path:
                assert answer["items"], answer  # unknown users get the popularity fallback
    _no_crash_since(api, before)
    print(
        f"\n[hostile] {len(TRICKY_IDS)} tricky ids x 5 endpoints: status counts {dict(sorted(seen.items()))}"
    )


def test_a_1_mb_query_string_and_deeply_nested_bodies(api: LocalRuntime) -> None:
    before = _counts(api)
    huge = "x" * (1 << 20)
    # Through the local HTTP server (its own request-line limit may answer first, like API Gateway's).
    status, _ = _call(api, "GET", f"/v1/users/user-000001/recommendations?category={huge}")
    assert status < 500 and status != 200
    # Straight to the function with API Gateway's payload-format-2.0 event: the product's own answer.
    _call(api, "GET", "/v1/users/user-000001/recommendations?k=2")
    template = api.invocations_of(SERVING)[-1].event
    answers = {}
    for name, query in (("category", huge), ("k", "9" * (1 << 20)), ("unknown", huge)):
        event = json.loads(json.dumps(template))
        event["rawQueryString"] = f"{name}={query}"
        event["queryStringParameters"] = {name: query}
        out = api.invoke(SERVING, event)
        answers[name] = out["statusCode"]
        assert out["statusCode"] < 500, (name, out.get("body", "")[:300])
    assert answers["category"] == 422 and answers["k"] == 422
    nested = {
        "/v1/events": '{"events": [' + "[" * 50_000 + "]" * 50_000 + "]}",
        "/v1/recommendations": '{"history": ' + '{"a":' * 40_000 + "1" + "}" * 40_000 + "}",
        "/v1/search": '{"query": "x", "filters": ' + "[" * 60_000 + "]" * 60_000 + "}",
    }
    codes = {}
    for path, body in nested.items():
        status, answer = _call(api, "POST", path, body.encode())
        codes[path] = status
        assert 400 <= status < 500, (path, status, answer)
    _no_crash_since(api, before)
    print(f"\n[hostile] 1 MB query string (direct invoke) -> {answers}; nested JSON -> {codes}")


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(TRICKY_IDS[:12]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda k: st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=6), k, max_size=3),
    max_leaves=8,
)
_EVENT = st.one_of(
    st.fixed_dictionaries(
        {
            "event_type": st.sampled_from(["click", "view", "purchase", "add_to_cart", "fly", ""]),
            "user_id": st.one_of(st.text(max_size=10), st.sampled_from(TRICKY_IDS)),
            "item_id": st.one_of(st.none(), st.text(max_size=10)),
            "timestamp": st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20", "soon", "", "9" * 30]),
        },
        optional={
            "price": _SCALARS,
            "quantity": _SCALARS,
            "position": _SCALARS,
            "recommendation_id": _SCALARS,
            "properties": _VALUES,
        },
    ),
    st.dictionaries(st.text(max_size=8), _VALUES, max_size=5),
)
# Valid in shape, hostile in content: exercises the accepted path and the count invariant.
_VALID_EVENT = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["click", "view", "purchase", "add_to_cart"]),
        "user_id": st.one_of(st.sampled_from(TRICKY_IDS[:-1]), st.text(min_size=1, max_size=20)),
        "item_id": st.one_of(st.sampled_from(TRICKY_IDS[:-1]), st.text(min_size=1, max_size=20)),
        "timestamp": st.just("2026-11-20T10:00:00Z"),
    },
    optional={"properties": st.dictionaries(st.text(max_size=6), _SCALARS, max_size=3)},
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.fixed_dictionaries({"events": st.lists(_VALID_EVENT, min_size=1, max_size=6)}),
        st.fixed_dictionaries({"events": st.lists(_EVENT, max_size=6)}),
        _VALUES,
    )
)
def test_fuzzed_event_batches_are_accepted_or_refused_never_lost(api: LocalRuntime, body: Any) -> None:
    status, answer = _call(api, "POST", "/v1/events", json.dumps(body).encode())
    event(f"HTTP {status}")
    assert status < 500, (status, answer)
    if status == 200:
        sent = len(body["events"])
        assert answer["accepted"] + len(answer["failed"]) == sent  # the row-count invariant
        assert len(answer["event_ids"]) == sent


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "user_id": _SCALARS,
                "session_id": _SCALARS,
                "history": st.lists(st.fixed_dictionaries({"item_id": _SCALARS}), max_size=4) | _VALUES,
                "k": _SCALARS,
                "filters": _VALUES,
            },
        ),
        _VALUES,
    )
)
def test_fuzzed_recommendation_requests_never_5xx(api: LocalRuntime, body: Any) -> None:
    status, answer = _call(api, "POST", "/v1/recommendations", json.dumps(body).encode())
    event(f"HTTP {status}")
    assert status < 500, (status, answer)
    if status == 200:
        assert answer["variant"] in {"champion", "challenger", "fallback"}
