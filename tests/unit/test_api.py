"""The two serving handlers end to end on moto: routes, problem+json errors, limits, metrics, delivery."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from shelfwise.aws import reset_clients
from shelfwise.bundle import upload_bundle
from shelfwise.serving.http import RecommendationResponse, openapi_document
from shelfwise_local.bench.serve import apigw_event, build_synthetic_bundle

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "infra" / "openapi.json"
EVENTS = ROOT / "tests" / "events"


def load_app(name: str) -> ModuleType:
    """Import functions/<name>/app.py as Lambda would, under a fresh module name (cold start)."""
    module_name = f"{name}_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "v1", n_items=200, dim=8, n_users=30)


ENV = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "MODELS_BUCKET": "models",
    "MODEL_NAME": "recs",
    "SHELFWISE_ENV": "test",
    "EVENTS_STREAM": "events",
    "ALIAS_TTL_SECONDS": "3600",
}


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[dict[str, Any]]:
    """One moto server per module: models and raw buckets, the Firehose stream, v1 as champion.

    A server, not ``mock_aws``: serving reads S3 and SSM with its SDK-free clients
    (shelfwise.aws_lite), which speak HTTP and are not patched by moto's in-process mock.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto's state is per process, not per server: start from an empty account (another module
    # that imports these fixtures gets its own server after this module's one has stopped)
    requests.post(f"http://{host}:{port}/moto-api/reset", timeout=10).raise_for_status()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        reset_clients()
        mp.setenv("MODEL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        s3 = boto3.client("s3", region_name="eu-west-1")
        for bucket in ("models", "raw"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        boto3.client("firehose", region_name="eu-west-1").create_delivery_stream(
            DeliveryStreamName="events",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": "arn:aws:s3:::raw",
                "Prefix": "raw/events/",
            },
        )
        ssm = boto3.client("ssm", region_name="eu-west-1")
        upload_bundle(s3, bundle_dir, "models", "models/recs/v1")
        ssm.put_parameter(Name="/shelfwise/test/models/recs/champion", Value="v1", Type="String")
        try:
            yield {"s3": s3, "ssm": ssm}
        finally:
            reset_clients()
            server.stop()


@pytest.fixture(scope="module")
def serve(aws: dict[str, Any]) -> Iterator[ModuleType]:
    yield load_app("serve_recommendations")


@pytest.fixture(scope="module")
def collect(aws: dict[str, Any]) -> ModuleType:
    return load_app("collect_events")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, aws: dict[str, Any]) -> None:
    """conftest resets credentials per test; keep the module's environment in place."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def call(module: ModuleType, ev: dict[str, Any], lambda_context: Any) -> tuple[int, dict[str, str], Any]:
    resp = module.lambda_handler(ev, lambda_context)
    headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
    body = json.loads(resp["body"]) if resp.get("body") else None
    return resp["statusCode"], headers, body


def assert_problem(
    status: int, headers: dict[str, str], body: Any, expected: int, field: str | None = None
) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == expected and body["title"] and body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body


# --------------------------------------------------------------------------- happy paths


def test_user_recommendations(
    serve: ModuleType, lambda_context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status, headers, body = call(serve, event("apigw_get_user_recommendations"), lambda_context)
    assert status == 200 and headers["content-type"] == "application/json"
    resp = RecommendationResponse.model_validate(body)
    assert resp.variant == "champion" and resp.model_version == "v1" and len(resp.items) <= 5
    # EMF: one blob per request, aggregated (no dimensions, what the alarms read) and per
    # Variant/Endpoint (the contract's dimensions).
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    request = [b for b in blobs if "Requests" in b]
    assert len(request) == 1
    blob = request[0]
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[], ["Variant", "Endpoint"]]
    assert blob["Variant"] == "champion" and blob["Endpoint"] == "user_recommendations"
    names = {m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Requests", "Errors", "LatencyMs", "Fallback", "EmptyResults", "UnknownIds"} <= names
    assert blob["Errors"] == [0.0] and blob["Fallback"] == [0.0]
    assert "user-000001" not in capsys.readouterr().out


def test_session_recommendations_count_unknown_items(serve: ModuleType, lambda_context: Any) -> None:
    status, _, body = call(serve, event("apigw_post_recommendations"), lambda_context)
    assert status == 200
    assert body["unknown_items"] == 1 and body["variant"] == "champion"
    assert all(i["price"] is None or i["price"] <= 200 for i in body["items"])


def test_similar_search_and_health(serve: ModuleType, lambda_context: Any) -> None:
    status, _, body = call(
        serve, apigw_event("GET", "/v1/items/sku-0000004/similar", query={"k": "4"}), lambda_context
    )
    assert status == 200 and len(body["items"]) == 4
    status, _, body = call(
        serve,
        apigw_event("POST", "/v1/search", body={"query": "hat", "user_id": "user-000002", "k": 5}),
        lambda_context,
    )
    assert status == 200 and all("hat" in (i["title"] + i["category"]).lower() for i in body["items"])
    status, _, body = call(
        serve,
        apigw_event(
            "POST", "/v1/search", body={"candidates": ["sku-0000001", "sku-0000002", "ghost"], "k": 5}
        ),
        lambda_context,
    )
    assert status == 200 and body["unknown_items"] == 1
    status, _, body = call(serve, apigw_event("GET", "/v1/health"), lambda_context)
    assert status == 200 and body["status"] == "ok" and body["models"][0]["version"] == "v1"


def test_each_served_list_is_logged_as_one_served_list_line(
    serve: ModuleType, lambda_context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    _, _, body = call(serve, event("apigw_get_user_recommendations"), lambda_context)
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    served = [d for d in docs if d.get("shelfwise") == "served_list"]
    assert len(served) == 1  # the EMF line is the other one
    assert served[0]["recommendation_id"] == body["recommendation_id"]
    assert served[0]["items"] == [i["item_id"] for i in body["items"]]
    assert served[0]["variant"] == body["variant"] and served[0]["model_version"] == body["model_version"]


def test_openapi_is_served_and_committed_copy_is_in_sync(serve: ModuleType, lambda_context: Any) -> None:
    status, _, body = call(serve, apigw_event("GET", "/v1/openapi.json"), lambda_context)
    assert status == 200 and body == openapi_document()
    committed = json.loads(OPENAPI.read_text())
    assert committed == openapi_document(), (
        "regenerate: python -m shelfwise.serving.http > infra/openapi.json"
    )
    assert set(committed["paths"]) == {
        "/v1/users/{user_id}/recommendations",
        "/v1/recommendations",
        "/v1/items/{item_id}/similar",
        "/v1/search",
        "/v1/health",
        "/v1/openapi.json",
        "/v1/events",
    }


# --------------------------------------------------------------------------- bad input: 4xx, never 5xx


@pytest.mark.parametrize("k", ["0", "501", "abc", "-3"])
def test_bad_k_is_422_naming_the_field(serve: ModuleType, lambda_context: Any, k: str) -> None:
    ev = apigw_event("GET", "/v1/users/u1/recommendations", query={"k": k})
    assert_problem(*call(serve, ev, lambda_context), 422, "query.k")


def test_too_long_history_and_unknown_fields(serve: ModuleType, lambda_context: Any) -> None:
    history = [{"item_id": f"sku-{i:07d}", "event_type": "view"} for i in range(501)]
    ev = apigw_event("POST", "/v1/recommendations", body={"history": history})
    assert_problem(*call(serve, ev, lambda_context), 422, "body.history")
    ev = apigw_event("POST", "/v1/recommendations", body={"hisotry": []})
    assert_problem(*call(serve, ev, lambda_context), 422, "body.hisotry")
    ev = apigw_event(
        "POST", "/v1/recommendations", body={"history": [{"item_id": "a", "event_type": "stare"}]}
    )
    assert_problem(*call(serve, ev, lambda_context), 422, "body.history.0.event_type")
    ev = apigw_event("POST", "/v1/search", body={"k": True})
    assert_problem(*call(serve, ev, lambda_context), 422, "body")
    ev = apigw_event("POST", "/v1/search", body={"query": "hat"})
    ev["headers"]["content-type"] = "multipart/form-data"
    assert_problem(*call(serve, ev, lambda_context), 415)
    ev = apigw_event("POST", "/v1/search", body={"k": True})
    assert_problem(*call(serve, ev, lambda_context), 422, "body")


def test_body_limits_and_malformed_json(serve: ModuleType, lambda_context: Any) -> None:
    big = {"history": [], "session_id": "s", "filters": {"exclude_items": ["x" * 250] * 400}, "k": 5}
    body = json.dumps(big)
    ev = apigw_event("POST", "/v1/recommendations")
    ev["body"] = body + " " * (256 * 1024 - len(body) + 1)
    assert_problem(*call(serve, ev, lambda_context), 413)
    ev["body"] = '{"history": [}'
    status, headers, payload = call(serve, ev, lambda_context)
    assert 400 <= status < 500 and headers["content-type"] == "application/problem+json", payload


def test_unknown_route_and_unknown_item_are_404(serve: ModuleType, lambda_context: Any) -> None:
    assert_problem(*call(serve, apigw_event("GET", "/v1/nope"), lambda_context), 404)
    assert_problem(*call(serve, apigw_event("GET", "/v1/items/ghost/similar"), lambda_context), 404)


def test_no_model_is_503_not_a_crash(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    monkeypatch.setenv("MODEL_NAME", "other")
    aws["ssm"].put_parameter(Name="/shelfwise/test/models/other/champion", Value="v404", Type="String")
    module = load_app("serve_recommendations")
    status, headers, body = call(module, event("apigw_get_user_recommendations"), lambda_context)
    assert_problem(status, headers, body, 503)
    status, _, body = call(module, apigw_event("GET", "/v1/health"), lambda_context)
    assert status == 200 and body["status"] == "unavailable" and "v404" in body["refused"]


def test_bad_configuration_fails_at_cold_start(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from shelfwise.errors import ConfigurationError

    monkeypatch.setenv("SERVING_RULES", '{"default_k": 0}')
    with pytest.raises(ConfigurationError, match="SERVING_RULES"):
        load_app("serve_recommendations")


# --------------------------------------------------------------------------- collect_events


def test_events_are_validated_and_delivered(
    aws: dict[str, Any], collect: ModuleType, lambda_context: Any
) -> None:
    status, _, body = call(collect, event("apigw_post_events"), lambda_context)
    assert status == 200 and body["accepted"] == 2 and body["failed"] == []
    objects = aws["s3"].list_objects_v2(Bucket="raw", Prefix="raw/events/")["Contents"]
    rows = [
        json.loads(line)
        for o in objects
        for line in aws["s3"].get_object(Bucket="raw", Key=o["Key"])["Body"].read().decode().splitlines()
    ]
    rows = [r for r in rows if r["event_id"] in body["event_ids"]]
    assert [r["event_id"] for r in rows] == body["event_ids"]
    assert rows[1]["event_type"] == "purchase" and rows[1]["price"] == 19.99 and rows[0]["position"] == 0
    # Resending the same batch gives the same ids (the ingest de-duplicates on them).
    assert call(collect, event("apigw_post_events"), lambda_context)[2]["event_ids"] == body["event_ids"]


def test_bad_events_are_422_naming_the_field(collect: ModuleType, lambda_context: Any) -> None:
    ev = event("apigw_post_events")
    payload = json.loads(ev["body"])
    bad = copy.deepcopy(payload)
    del bad["events"][0]["session_id"]
    ev["body"] = json.dumps(bad)
    assert_problem(*call(collect, ev, lambda_context), 422, "body.events.0")
    bad = copy.deepcopy(payload)
    bad["events"][1]["position"] = -1
    ev["body"] = json.dumps(bad)
    assert_problem(*call(collect, ev, lambda_context), 422, "body.events.1.position")
    ev["body"] = json.dumps({"events": payload["events"] * 251})
    assert_problem(*call(collect, ev, lambda_context), 422, "body.events")
    ev["body"] = json.dumps({"events": []})
    assert_problem(*call(collect, ev, lambda_context), 422, "body.events")


def test_events_before_the_stacks_floor_are_422_as_the_ingest_would_quarantine_them(
    aws: dict[str, Any], collect: ModuleType, monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    ev = {"event_type": "click", "user_id": "u9", "item_id": "i1", "timestamp": "1998-04-03T10:00:00Z"}
    later = {**ev, "timestamp": "2026-12-01T10:00:00Z"}
    body = {"events": [later, ev, ev]}
    assert (
        call(collect, apigw_event("POST", "/v1/events", body=body), lambda_context)[0] == 200
    )  # no floor: 1970
    monkeypatch.setenv("INGEST_MIN_TIME", "2000-01-01")
    floored = load_app("collect_events")
    before = len(aws["s3"].list_objects_v2(Bucket="raw", Prefix="raw/events/").get("Contents", []))
    status, headers, problem = call(floored, apigw_event("POST", "/v1/events", body=body), lambda_context)
    assert_problem(status, headers, problem, 422, "body.events.1.timestamp")
    assert [e["field"] for e in problem["errors"]] == ["body.events.1.timestamp", "body.events.2.timestamp"]
    assert "2000-01-01T00:00:00Z" in problem["detail"]
    assert len(aws["s3"].list_objects_v2(Bucket="raw", Prefix="raw/events/").get("Contents", [])) == before
    assert (
        call(floored, apigw_event("POST", "/v1/events", body={"events": [later]}), lambda_context)[0] == 200
    )


def _emf_sums(out: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for line in out.splitlines():
        if line.startswith('{"_aws"'):
            doc = json.loads(line)
            for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                sums[m["Name"]] = sums.get(m["Name"], 0) + sum(doc[m["Name"]])
    return sums


def test_undeliverable_events_are_503_counted_as_a_dependency_outage_not_an_error(
    aws: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EVENTS_STREAM", "no-such-stream")
    collect = load_app("collect_events")
    capsys.readouterr()
    assert_problem(*call(collect, event("apigw_post_events"), lambda_context), 503)
    sums = _emf_sums(capsys.readouterr().out)
    assert sums["Requests"] == 1 and sums["Errors"] == 0 and sums["DependencyErrors"] == 1, sums


def test_client_errors_never_count_as_errors(
    serve: ModuleType, collect: ModuleType, lambda_context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    bad = [
        (serve, apigw_event("GET", "/v1/users/u1/recommendations", query={"k": "0"})),
        (serve, apigw_event("DELETE", "/v1/health")),
        (serve, apigw_event("GET", "/v1/users/u1/recommendations", caller=None)),
        (collect, apigw_event("POST", "/v1/events", body={"events": [{"event_type": "fly"}]})),
    ]
    for module, ev in bad:
        status = call(module, ev, lambda_context)[0]
        assert 400 <= status < 500, (ev["rawPath"], status)
    sums = _emf_sums(capsys.readouterr().out)
    assert sums["Requests"] == len(bad) and sums["Errors"] == 0 and sums["DependencyErrors"] == 0, sums


def test_collected_user_ids_and_personal_properties_are_pseudonymised_with_a_key(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, lambda_context: Any
) -> None:
    from shelfwise.pseudonym import Pseudonymiser

    aws["ssm"].put_parameter(Name="/shop/key", Value="k3y", Type="SecureString", Overwrite=True)
    monkeypatch.setenv("PSEUDONYMISATION_KEY_PARAMETER", "/shop/key")
    collect = load_app("collect_events")
    ev = {"event_type": "click", "user_id": "alice", "item_id": "i1", "timestamp": "2026-12-01T10:00:00Z"}
    ev["properties"] = {"email": "alice@example.com", "note": "call +33 1 23 45 67 89", "size": "M"}
    status, _, body = call(collect, apigw_event("POST", "/v1/events", body={"events": [ev]}), lambda_context)
    assert status == 200, body
    objects = aws["s3"].list_objects_v2(Bucket="raw", Prefix="raw/events/")["Contents"]
    text = "\n".join(
        aws["s3"].get_object(Bucket="raw", Key=o["Key"])["Body"].read().decode() for o in objects
    )
    row = next(json.loads(line) for line in text.splitlines() if body["event_ids"][0] in line)
    hasher = Pseudonymiser(b"k3y")
    assert row["user_id"] == hasher.one("alice")
    assert row["properties"] == {
        "email": hasher.one("alice@example.com"),
        "note": f"call {hasher.one('+33 1 23 45 67 89')}",
        "size": "M",
    }


def test_collect_events_imports_no_inference_or_data_packages() -> None:
    """collect_events ships without the inference layer: its imports must not need numpy."""
    import subprocess

    code = (
        "import sys, shelfwise.serving.api, shelfwise.serving.collect; "
        "print(','.join(m for m in ('numpy', 'onnxruntime', 'pyarrow', 'pandas', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- validation = Powertools'


def _query_event(path: str, raw_query: str) -> dict[str, Any]:
    """A GET as API Gateway sends it: repeated names joined by commas in queryStringParameters."""
    ev = apigw_event("GET", path)
    ev["rawQueryString"] = raw_query
    params: dict[str, list[str]] = {}
    for part in filter(None, raw_query.split("&")):
        name, _, value = part.partition("=")
        params.setdefault(name, []).append(value)
    if params:
        ev["queryStringParameters"] = {name: ",".join(values) for name, values in params.items()}
    return ev


VALIDATION_CASES = [
    _query_event("/v1/users/user-000001/recommendations", ""),
    _query_event("/v1/users/user-000001/recommendations", "k=7&category=hats-1,shoes-0&price_max=90"),
    _query_event("/v1/users/user-000001/recommendations", "category=hats-1&category=shoes-0&k=3"),
    _query_event("/v1/users/user-000001/recommendations", "k=3&k=4"),
    _query_event("/v1/users/user-000001/recommendations", "k=abc&price_min=-1&price_max=x"),
    _query_event("/v1/users/user-000001/recommendations", "k=501&exclude=sku-0000001,sku-0000002"),
    _query_event("/v1/users/new-shopper/recommendations", "k=4&exclude_category=hats-1&unknown=1"),
    _query_event("/v1/items/sku-0000003/similar", "k=5&category=hats-1,shoes-0"),
    _query_event("/v1/items/sku-0000003/similar", "k=0"),
    _query_event("/v1/items/ghost/similar", ""),
    _query_event("/v1/health", "verbose=1"),
    _query_event("/v1/nope", "k=1"),
    apigw_event(
        "POST", "/v1/recommendations", body={"session_id": "s1", "history": [{"item_id": "sku-0000004"}]}
    ),
    apigw_event("POST", "/v1/recommendations", body={"history": [{"item_id": "a", "event_type": "stare"}]}),
    apigw_event("POST", "/v1/recommendations", body={"k": True, "filters": {"price_max": "cheap"}}),
    apigw_event("POST", "/v1/recommendations", body=[1, 2]),
    apigw_event("POST", "/v1/search", body={"query": "hat", "user_id": "user-000002", "k": 3}),
    apigw_event("POST", "/v1/search", body={"candidates": ["sku-0000001", "ghost"], "session_id": "s2"}),
]


def _comparable(resp: dict[str, Any]) -> tuple[int, Any]:
    body = json.loads(resp["body"]) if resp.get("body") else None
    if isinstance(body, dict):
        body.pop("recommendation_id", None)  # random per request
        # health's ages move with the clock between the two calls (and round to 0.1 s)
        body.pop("aliases_age_seconds", None)
        for model in body.get("models") or []:
            if isinstance(model, dict):
                model.pop("age_seconds", None)
    return resp["statusCode"], body


def test_request_validation_is_powertools_validation(serve: ModuleType, lambda_context: Any) -> None:
    """RequestValidation (cached parameter kinds) answers every request as Powertools' own does."""
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

    from shelfwise.powertools_internals.http import RequestValidation
    from shelfwise.serving.api import Access, build_resolver, install_error_handlers
    from shelfwise.serving.http import recommendations_router

    # resolve() directly, without serve()'s caller: the open API, so the access check lets it in
    ours = build_resolver(recommendations_router(lambda: serve.recommender), access=Access("NONE"))
    stock = APIGatewayHttpResolver(enable_validation=True)
    install_error_handlers(stock)
    stock.include_router(recommendations_router(lambda: serve.recommender))
    assert isinstance(ours._request_validation_middleware, RequestValidation)
    assert not isinstance(stock._request_validation_middleware, RequestValidation)
    statuses = set()
    for case in VALIDATION_CASES * 2:  # the second pass uses the cached kinds
        expected = _comparable(stock.resolve(copy.deepcopy(case), lambda_context))
        assert _comparable(ours.resolve(copy.deepcopy(case), lambda_context)) == expected, case["rawPath"]
        statuses.add(expected[0])
    assert {200, 404, 422} <= statuses
