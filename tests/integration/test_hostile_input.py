"""Hostile input to the HTTP API of template.yaml, over the local HTTP API on the emulator.

Fuzzed bodies (hypothesis), ids with path traversal and unicode tricks, deeply nested JSON, a
1 MB query string, and the classes that once gave 5xx: numbers far out of range, free-form values
nested hundreds of levels, bodies that are not UTF-8 or declared gzip, wrong content types and
methods. The properties: never a 5xx and never a handler crash for bad input (each class gets its
own 4xx, as problem+json); for ``POST /v1/events`` every event sent is either accepted or
reported failed (none lost). The default template (ApiAuth AWS_IAM) refuses anonymous calls.
Counts of what was tried are in docs/hardening.md (``[hostile]`` lines with ``-s``).
"""

from __future__ import annotations

import gzip
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
from shelfwise_local.runtime.httpapi import LOCAL_API_PARAMETERS
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
    rt = new_runtime(TEMPLATE, parameters=LOCAL_API_PARAMETERS)
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


TRIED = {"requests": 0, "5xx": 0}  # every hostile request of this module (docs/hardening.md)


def _call(
    rt: LocalRuntime,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    return _call_full(rt, method, path, body, headers)[:2]  # type: ignore[return-value]


def _call_full(
    rt: LocalRuntime,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(
        rt.api_url + path,
        data=body,
        method=method,
        headers=headers if headers is not None else {"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw, got = int(resp.status), resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, raw, got = int(exc.code), exc.read(), dict(exc.headers)
    TRIED["requests"] += 1
    TRIED["5xx"] += int(status >= 500)
    got = {k.lower(): v for k, v in got.items()}
    try:
        return status, json.loads(raw or b"null"), got
    except ValueError:
        return status, raw[:200], got


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


# --------------------------------------------------------------------------- the 5xx classes

_NOW = "2026-12-06T10:00:00Z"


def _deep(levels: int, leaf: str = "1") -> str:
    return '{"a":' * levels + leaf + "}" * levels


def _event(**extra: Any) -> dict[str, Any]:
    return {"event_type": "click", "user_id": "u1", "item_id": "i1", "timestamp": _NOW, **extra}


def _events_body(raw_event: str) -> bytes:
    return ('{"events": [' + raw_event + "]}").encode()


JSON = {"content-type": "application/json"}
# (label, method, path, body, headers, expected status)
CLASS_CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int]] = [
    # numbers far outside any sane range, in otherwise valid JSON
    ("k 1e400 (inf)", "POST", "/v1/recommendations", b'{"k": 1e400}', JSON, 400),
    ("k -1e309", "POST", "/v1/search", b'{"query": "x", "k": -1e309}', JSON, 400),
    ("k 5000 digits", "POST", "/v1/recommendations", b'{"k": ' + b"9" * 5000 + b"}", JSON, 400),
    ("k 2**64", "POST", "/v1/recommendations", b'{"k": 18446744073709551616}', JSON, 422),
    ("k NaN", "POST", "/v1/recommendations", b'{"k": NaN}', JSON, 400),
    (
        "price Infinity",
        "POST",
        "/v1/events",
        _events_body(
            '{"event_type": "purchase", "user_id": "u", "item_id": "i", "timestamp": "'
            + _NOW
            + '", "price": Infinity}'
        ),
        JSON,
        400,
    ),
    ("price 1e308", "POST", "/v1/events", json.dumps({"events": [_event(price=1e308)]}).encode(), JSON, 422),
    (
        "quantity 1e7",
        "POST",
        "/v1/events",
        json.dumps({"events": [_event(quantity=1e7)]}).encode(),
        JSON,
        422,
    ),
    (
        "position 10**30",
        "POST",
        "/v1/events",
        json.dumps({"events": [_event(position=10**30)]}).encode(),
        JSON,
        422,
    ),
    ("price_max 1e308", "POST", "/v1/recommendations", b'{"filters": {"price_max": 1e308}}', JSON, 422),
    (
        "property 1e400",
        "POST",
        "/v1/events",
        _events_body(
            '{"event_type": "click", "user_id": "u", "item_id": "i", "timestamp": "'
            + _NOW
            + '", "properties": {"x": 1e400}}'
        ),
        JSON,
        400,
    ),
    # free-form values nested hundreds of levels
    (
        "properties 300 deep",
        "POST",
        "/v1/events",
        _events_body(
            '{"event_type": "click", "user_id": "u", "item_id": "i", "timestamp": "'
            + _NOW
            + '", "properties": '
            + _deep(300)
            + "}"
        ),
        JSON,
        400,
    ),
    (
        "properties 900 deep",
        "POST",
        "/v1/events",
        _events_body(
            '{"event_type": "click", "user_id": "u", "item_id": "i", "timestamp": "'
            + _NOW
            + '", "properties": '
            + _deep(900)
            + "}"
        ),
        JSON,
        400,
    ),
    (
        "filters 200 deep",
        "POST",
        "/v1/recommendations",
        ('{"filters": ' + _deep(200) + "}").encode(),
        JSON,
        400,
    ),
    (
        "history 40 deep lists",
        "POST",
        "/v1/search",
        ('{"query": "x", "history": ' + "[" * 40 + "]" * 40 + "}").encode(),
        JSON,
        400,
    ),
    # bodies that are not UTF-8, or declared gzip
    ("latin-1 byte", "POST", "/v1/recommendations", '{"user_id": "caf\u00e9"}'.encode("latin-1"), JSON, 400),
    ("utf-16 body", "POST", "/v1/recommendations", '{"k": 3}'.encode("utf-16"), JSON, 400),
    ("random bytes", "POST", "/v1/events", bytes(range(256)), JSON, 400),
    (
        "gzip declared",
        "POST",
        "/v1/events",
        gzip.compress(json.dumps({"events": [_event()]}).encode()),
        {**JSON, "content-encoding": "gzip"},
        415,
    ),
    (
        "gzip undeclared",
        "POST",
        "/v1/events",
        gzip.compress(json.dumps({"events": [_event()]}).encode()),
        JSON,
        400,
    ),
    (
        "deflate declared, plain body",
        "POST",
        "/v1/recommendations",
        b'{"k": 3}',
        {**JSON, "content-encoding": "deflate"},
        415,
    ),
    (
        "charset latin-1",
        "POST",
        "/v1/recommendations",
        b'{"k": 3}',
        {"content-type": "application/json; charset=latin-1"},
        415,
    ),
    ("lone surrogate", "POST", "/v1/recommendations", b'{"user_id": "\\ud800x"}', JSON, 400),
    (
        "lone surrogate key",
        "POST",
        "/v1/events",
        _events_body(
            '{"event_type": "click", "user_id": "u", "item_id": "i", "timestamp": "'
            + _NOW
            + '", "properties": {"\\udfff": 1}}'
        ),
        JSON,
        400,
    ),
    ("BOM", "POST", "/v1/recommendations", b'\xef\xbb\xbf{"k": 3}', JSON, 422),
    ("not JSON", "POST", "/v1/events", b"{events: [}", JSON, 422),
    # wrong content types
    ("text/plain", "POST", "/v1/recommendations", b'{"k": 3}', {"content-type": "text/plain"}, 415),
    ("form", "POST", "/v1/events", b"events=1", {"content-type": "application/x-www-form-urlencoded"}, 415),
    (
        "multipart",
        "POST",
        "/v1/search",
        b"--b\r\n\r\nx\r\n--b--",
        {"content-type": "multipart/form-data; boundary=b"},
        415,
    ),
    ("xml", "POST", "/v1/events", b"<events/>", {"content-type": "application/xml"}, 415),
    (
        "octet-stream",
        "POST",
        "/v1/recommendations",
        b'{"k": 3}',
        {"content-type": "application/octet-stream"},
        415,
    ),
    # methods a route does not have
    ("DELETE health", "DELETE", "/v1/health", None, JSON, 405),
    ("PUT recommendations", "PUT", "/v1/recommendations", b"{}", JSON, 405),
    ("GET events", "GET", "/v1/events", None, JSON, 405),
    ("DELETE events", "DELETE", "/v1/events", None, JSON, 405),
    ("PATCH user recs", "PATCH", "/v1/users/u1/recommendations", b"{}", JSON, 405),
    ("POST similar", "POST", "/v1/items/i1/similar", b"{}", JSON, 405),
    ("POST openapi", "POST", "/v1/openapi.json", b"{}", JSON, 405),
    ("GET search", "GET", "/v1/search", None, JSON, 405),
    ("unknown route", "GET", "/v1/nothing/here", None, JSON, 404),
    # the API refuses what the ingest would quarantine
    (
        "timestamp before 1970",
        "POST",
        "/v1/events",
        json.dumps({"events": [_event(timestamp="1969-12-31T00:00:00Z")]}).encode(),
        JSON,
        422,
    ),
    (
        "timestamp next year",
        "POST",
        "/v1/events",
        json.dumps({"events": [_event(timestamp="2027-12-31T00:00:00Z")]}).encode(),
        JSON,
        422,
    ),
    (
        "properties 17 KB",
        "POST",
        "/v1/events",
        json.dumps({"events": [_event(properties={"x": "y" * 17_000})]}).encode(),
        JSON,
        422,
    ),
    (
        "array as item id",
        "POST",
        "/v1/events",
        json.dumps({"events": [_event(item_id=["a", "b"])]}).encode(),
        JSON,
        422,
    ),
]


def test_each_class_that_gave_5xx_is_its_own_4xx_problem(api: LocalRuntime) -> None:
    before = _counts(api)
    seen: dict[int, int] = {}
    for label, method, path, body, headers, expected in CLASS_CASES:
        status, answer, got = _call_full(api, method, path, body, headers)
        seen[status] = seen.get(status, 0) + 1
        assert status == expected, (label, status, answer)
        assert got.get("content-type") == "application/problem+json", (label, got)
        assert answer["status"] == status and answer["detail"], (label, answer)
        if status == 405:
            assert got.get("allow"), label
            assert method not in got["allow"], (label, got["allow"])
    # In range, the same shapes are accepted: the limits are where they say.
    ok = json.dumps({"events": [_event(price=1e9, properties={"deep": json.loads(_deep(20))})]}).encode()
    status, answer = _call(api, "POST", "/v1/events", ok, {"content-type": "application/json; charset=utf-8"})
    assert status == 200 and answer["accepted"] == 1, answer
    status, _ = _call(
        api, "POST", "/v1/recommendations", b'{"k": 3}', {"content-type": "application/vnd.shop+json"}
    )
    assert status == 200
    _no_crash_since(api, before)
    print(
        f"\n[hostile] {len(CLASS_CASES)} requests of the former 5xx classes: status counts {dict(sorted(seen.items()))}"
    )


_HOSTILE_BODIES = st.one_of(
    st.integers(33, 900).map(lambda n: ('{"k": 3, "filters": ' + _deep(n) + "}").encode()),
    st.integers(20, 6000).map(lambda n: b'{"k": ' + b"7" * n + b"}"),
    st.integers(309, 99_999).map(lambda e: f'{{"k": 1e{e}}}'.encode()),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]).map(lambda c: b'{"k": ' + c + b"}"),
    st.binary(min_size=1, max_size=200).filter(lambda b: not _utf8(b)),
    st.text(min_size=1, max_size=30).map(lambda s: json.dumps({"user_id": s}).encode("utf-16")),
    st.integers(1, 200).map(lambda n: gzip.compress(json.dumps({"k": n}).encode())),
)
_HOSTILE_HEADERS = st.sampled_from(
    [
        {"content-type": "application/json"},
        {"content-type": "application/json", "content-encoding": "gzip"},
        {"content-type": "text/plain"},
        {"content-type": "application/json; charset=iso-8859-1"},
        {},
    ]
)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/v1/recommendations", "/v1/search", "/v1/events"]),
    body=_HOSTILE_BODIES,
    headers=_HOSTILE_HEADERS,
)
def test_fuzzed_hostile_bodies_are_4xx(
    api: LocalRuntime, path: str, body: bytes, headers: dict[str, str]
) -> None:
    status, answer = _call(api, "POST", path, body, headers)
    event(f"HTTP {status}")
    assert 400 <= status < 500, (status, answer)


def test_the_default_template_refuses_anonymous_callers() -> None:
    """ApiAuth defaults to AWS_IAM: without API Gateway's authorizer context every /v1 route but
    the OpenAPI document answers 401, POST /v1/events included, and health shows nothing."""
    rt = new_runtime(TEMPLATE)  # no parameters: the template's defaults, as `sam deploy` takes them
    try:
        body = json.dumps({"events": [_event()]}).encode()
        for method, path, data, expected in (
            ("POST", "/v1/events", body, 401),
            ("GET", "/v1/health", None, 401),
            ("GET", "/v1/users/u1/recommendations", None, 401),
            ("POST", "/v1/recommendations", b"{}", 401),
            ("GET", "/v1/openapi.json", None, 200),
        ):
            status, answer = _call(rt, method, path, data)
            assert status == expected, (path, status, answer)
        assert not rt.invocations_of(COLLECT) or all(i.ok for i in rt.invocations_of(COLLECT))
    finally:
        rt.close()


def test_open_health_shows_status_only(api: LocalRuntime) -> None:
    status, answer = _call(api, "GET", "/v1/health")
    assert status == 200 and set(answer) == {"status"}, answer


def test_zz_counts() -> None:
    print(f"\n[hostile] this module: {TRIED['requests']} requests over HTTP, {TRIED['5xx']} answered 5xx")
    assert TRIED["5xx"] == 0


def test_a_client_over_its_quota_gets_429_and_others_do_not() -> None:
    """Per-client throttling through the template: ClientRequestsPerMinute per client (here the
    source IP, the API being open), over the usage table, whatever the stage's limits."""
    rt = new_runtime(TEMPLATE, parameters={**LOCAL_API_PARAMETERS, "ClientRequestsPerMinute": "12"})
    try:
        if not rt.resource("ClientUsageTable").emulated:
            # LocalStack in host mode has no DynamoDB: no table, no quota, nothing is refused.
            codes = [_call(rt, "GET", "/v1/health")[0] for _ in range(16)]
            assert codes == [200] * 16, codes
            print("\n[hostile] no DynamoDB on this emulator: no client quota (16 x 200)")
            return
        statuses = [_call_full(rt, "GET", "/v1/health") for _ in range(16)]
        codes = [s for s, _, _ in statuses]
        assert codes[:12] == [200] * 12 and set(codes[12:]) == {429}, codes
        status, answer, headers = statuses[-1]
        assert answer["status"] == 429 and headers["content-type"] == "application/problem+json"
        assert 1 <= int(headers["retry-after"]) <= 60
        # POST /v1/events has its own quota: this client still sends events.
        status, ack = _call(rt, "POST", "/v1/events", json.dumps({"events": [_event()]}).encode())
        assert status == 200 and ack["accepted"] == 1
        rt.advance(60)  # the next minute (the runtime's clock is the requests' clock)
        assert _call(rt, "GET", "/v1/health")[0] == 200
    finally:
        rt.close()
