"""shelfwise.aws_lite: SigV4 identical to botocore's, the boto3-shaped calls against moto server, retries."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import boto3
import numpy as np
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from moto.server import ThreadedMotoServer

from shelfwise import aws_lite
from shelfwise.aws import client, light_client, reset_clients
from shelfwise.bundle import download_bundle, upload_bundle
from shelfwise.registry import Registry

NOW = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)


def _botocore_headers(
    auth_cls: type,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    service: str,
    token: str | None,
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    auth = auth_cls(BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token), service, "eu-west-1")
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        auth.add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//session+token="])
def test_s3_get_signature_matches_botocore(token: str | None) -> None:
    s3 = aws_lite.LiteS3.__new__(aws_lite.LiteS3)
    s3.base, s3.custom_endpoint = "http://127.0.0.1:5000", True
    url = s3._url("models", "models/recs/v 1/ümlaut+plus=eq~tilde.npz")
    headers = {"X-Amz-Content-SHA256": hashlib.sha256(b"").hexdigest()}
    ours = aws_lite.sign(
        "GET",
        url,
        headers,
        b"",
        service="s3",
        region="eu-west-1",
        credentials=aws_lite.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token),
        now=NOW,
    )
    theirs = _botocore_headers(S3SigV4Auth, "GET", url, headers, b"", "s3", token)
    assert ours["Authorization"] == theirs["Authorization"]
    assert "%20" in url and "%C3%BC" in url


def test_ssm_post_signature_matches_botocore() -> None:
    body = json.dumps({"Names": ["/shelfwise/dev/models/recs/champion"], "WithDecryption": False}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.GetParameters"}
    url = "https://ssm.eu-west-1.amazonaws.com/"
    ours = aws_lite.sign(
        "POST",
        url,
        headers,
        body,
        service="ssm",
        region="eu-west-1",
        credentials=aws_lite.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", "tok"),
        now=NOW,
    )
    theirs = _botocore_headers(SigV4Auth, "POST", url, headers, body, "ssm", "tok")
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Security-Token"] == "tok"


def test_endpoints_follow_botocore_environment_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert aws_lite.endpoint("s3", "eu-west-1") == ("https://s3.eu-west-1.amazonaws.com", False)
    assert aws_lite.endpoint("ssm", "cn-north-1") == ("https://ssm.cn-north-1.amazonaws.com.cn", False)
    s3 = aws_lite.LiteS3()
    assert s3._url("my-models", "a/b") == "https://my-models.s3.eu-west-1.amazonaws.com/a/b"
    assert s3._url("my.models", "a") == "https://s3.eu-west-1.amazonaws.com/my.models/a"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:4566/")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", "http://localhost:9999")
    assert aws_lite.endpoint("s3", "eu-west-1") == ("http://localhost:4566", True)
    assert aws_lite.endpoint("ssm", "eu-west-1") == ("http://localhost:9999", True)


def test_without_environment_credentials_boto3_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert aws_lite.available()
    assert isinstance(light_client("ssm"), aws_lite.LiteSSM)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    reset_clients()
    assert not aws_lite.available()
    assert light_client("ssm") is client("ssm")  # a profile, SSO or container credentials: the SDK
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eusc-de-east-1")  # a partition it does not know
    reset_clients()
    assert not aws_lite.available()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def emulated(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    reset_clients()
    s3 = boto3.client("s3")
    bucket = f"lite-{len(s3.list_buckets()['Buckets'])}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return {"s3": s3, "ssm": boto3.client("ssm"), "bucket": bucket}


def test_get_object_streams_and_maps_errors(emulated: dict[str, Any]) -> None:
    data = np.random.default_rng(0).bytes(3 << 20)
    emulated["s3"].put_object(Bucket=emulated["bucket"], Key="dir/a file ü.bin", Body=data)
    lite = aws_lite.LiteS3()
    resp = lite.get_object(Bucket=emulated["bucket"], Key="dir/a file ü.bin")
    assert resp["ContentLength"] == len(data)
    got = b"".join(iter(lambda: resp["Body"].read(1 << 16), b""))
    assert got == data
    # readinto, as download_bundle reads: into one buffer, 0 at the end
    body, buffer, parts = (
        lite.get_object(Bucket=emulated["bucket"], Key="dir/a file ü.bin")["Body"],
        bytearray(100_003),
        [],
    )
    while n := body.readinto(memoryview(buffer)):
        parts.append(bytes(buffer[:n]))
    assert b"".join(parts) == data and body.readinto(memoryview(buffer)) == 0
    with pytest.raises(lite.exceptions.ClientError) as err:
        lite.get_object(Bucket=emulated["bucket"], Key="missing")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"


def test_bundle_download_and_aliases_through_lite_clients(emulated: dict[str, Any], tmp_path: Path) -> None:
    """The two serving calls, end to end: the registry's alias read and the verified bundle download."""
    from shelfwise_local.bench.serve import build_synthetic_bundle

    bundle = build_synthetic_bundle(tmp_path / "v1", n_items=50, dim=4, n_users=5)
    upload_bundle(emulated["s3"], bundle, emulated["bucket"], "models/recs/v1")
    emulated["ssm"].put_parameter(Name="/shelfwise/lite/models/recs/champion", Value="v1", Type="String")
    registry = Registry(aws_lite.LiteS3(), aws_lite.LiteSSM(), None, emulated["bucket"], "lite", "recs")
    assert registry.aliases().champion == "v1"
    assert registry.aliases().challenger is None
    out = download_bundle(aws_lite.LiteS3(), emulated["bucket"], "models/recs/v1", tmp_path / "copy")
    assert (out / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()
    emulated["s3"].put_object(Bucket=emulated["bucket"], Key="models/recs/v1/model.onnx", Body=b"tampered")
    from shelfwise.bundle import BundleError

    with pytest.raises(BundleError):
        download_bundle(aws_lite.LiteS3(), emulated["bucket"], "models/recs/v1", tmp_path / "copy2")
    assert not (tmp_path / "copy2").exists()


def test_bundle_bytes_s3_vouches_for_are_not_hashed_again(
    emulated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """upload_bundle stores each file's SHA-256 as S3's checksum; a download over a protected
    transport that gets the manifest's checksum back skips hashing; any other answer is hashed."""
    import base64
    import hashlib

    from shelfwise import bundle_files
    from shelfwise.bundle import BundleError
    from shelfwise_local.bench.serve import build_synthetic_bundle

    bundle = build_synthetic_bundle(tmp_path / "v1", n_items=50, dim=4, n_users=5)
    upload_bundle(emulated["s3"], bundle, emulated["bucket"], "models/recs/v1")
    manifest = json.loads((bundle / "manifest.json").read_text())
    head = emulated["s3"].head_object(
        Bucket=emulated["bucket"], Key="models/recs/v1/model.onnx", ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"] == bundle_files.sha256_base64(manifest["files"]["model.onnx"])
    hashed: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.h = hashlib.sha256()
            hashed.append(1)

        def update(self, data: Any) -> None:
            self.h.update(data)

        def hexdigest(self) -> str:
            return self.h.hexdigest()

    monkeypatch.setattr(bundle_files, "hashlib", types.SimpleNamespace(sha256=Counting))
    out = download_bundle(aws_lite.LiteS3(), emulated["bucket"], "models/recs/v1", tmp_path / "copy")
    assert hashed == [] and (out / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()
    # S3's checksum of other bytes than the manifest's: hashed, and refused
    tampered = b"tampered"
    emulated["s3"].put_object(
        Bucket=emulated["bucket"],
        Key="models/recs/v1/model.onnx",
        Body=tampered,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(hashlib.sha256(tampered).digest()).decode(),
    )
    with pytest.raises(BundleError, match="sha256"):
        download_bundle(aws_lite.LiteS3(), emulated["bucket"], "models/recs/v1", tmp_path / "copy2")
    assert hashed and not (tmp_path / "copy2").exists()


def test_integrity_protected_transports() -> None:
    assert aws_lite.integrity_protected("https://s3.eu-west-1.amazonaws.com/b/k")
    assert aws_lite.integrity_protected("http://127.0.0.1:4566/b/k")
    assert aws_lite.integrity_protected("http://localhost:5000/b/k")
    assert aws_lite.integrity_protected("http://[::1]:5000/b/k")
    assert not aws_lite.integrity_protected("http://10.0.0.7:4566/b/k")
    assert not aws_lite.integrity_protected("http://127.0.0.1.evil.example/b/k")
    assert not aws_lite.integrity_protected("http://s3.example.com/b/k")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers with the statuses in ``plan`` in turn (then 200), counting requests."""

    plan: ClassVar[list[int]] = []
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        status = type(self).plan.pop(0) if type(self).plan else 200
        body = (
            b"ok"
            if status == 200
            else b"<Error><Code>%s</Code><Message>m</Message></Error>"
            % (b"SlowDown" if status == 503 else b"AccessDenied")
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Flaky]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    _Flaky.plan, _Flaky.seen = [], []
    yield _Flaky
    server.shutdown()


def test_throttling_and_5xx_are_retried_then_succeed(flaky: type[_Flaky]) -> None:
    flaky.plan = [503, 500]
    body = aws_lite.LiteS3().get_object(Bucket="b-b-b", Key="k")["Body"].read()
    assert body == b"ok" and len(flaky.seen) == 3
    assert all(a.startswith("AWS4-HMAC-SHA256 Credential=testing/") for a in flaky.seen)


def test_access_denied_is_not_retried_and_persistent_5xx_ends(flaky: type[_Flaky]) -> None:
    flaky.plan = [403]
    with pytest.raises(aws_lite.ClientError) as err:
        aws_lite.LiteS3().get_object(Bucket="b-b-b", Key="k")
    assert err.value.response["Error"]["Code"] == "AccessDenied" and len(flaky.seen) == 1
    flaky.plan, flaky.seen[:] = [503] * aws_lite.MAX_ATTEMPTS, []
    with pytest.raises(aws_lite.ClientError) as err:
        aws_lite.LiteS3().get_object(Bucket="b-b-b", Key="k")
    assert err.value.response["Error"]["Code"] == "SlowDown" and len(flaky.seen) == aws_lite.MAX_ATTEMPTS


def test_connection_refused_is_a_client_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(aws_lite, "MAX_ATTEMPTS", 2)
    with pytest.raises(aws_lite.ClientError, match="ConnectionError"):
        aws_lite.LiteSSM().get_parameters(Names=["/x"])


def test_serving_cold_path_imports_no_aws_sdk() -> None:
    """What the serving function imports to read aliases and fetch a bundle pulls no AWS SDK.

    (Powertools imports the bare ``botocore`` package for its user agent: 1 ms, no clients.)
    """
    code = (
        "import sys\n"
        "import shelfwise.aws, shelfwise.aws_lite, shelfwise.registry, shelfwise.bundle\n"
        "from shelfwise.serving import model, service\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'boto3', 's3transfer'}\n"
        "             or m.startswith('botocore.'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _CredentialsEndpoint(http.server.BaseHTTPRequestHandler):
    """The container credentials endpoint (what Lambda provides under SnapStart, and ECS)."""

    served: ClassVar[list[str]] = []
    expiration = "2099-01-01T00:00:00Z"

    def do_GET(self) -> None:
        type(self).served.append(self.headers.get("Authorization", ""))
        body = json.dumps(
            {
                "AccessKeyId": f"ASIA{len(type(self).served)}",
                "SecretAccessKey": "secret",
                "Token": "session",
                "Expiration": type(self).expiration,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_container_credentials_are_fetched_cached_and_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CredentialsEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        assert not aws_lite.available()
        uri = f"http://127.0.0.1:{server.server_address[1]}/creds"
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "auth-token")
        monkeypatch.setattr(aws_lite, "_container_cache", {})
        _CredentialsEndpoint.served = []
        assert aws_lite.available()
        first = aws_lite.Credentials.from_environment()
        assert first is not None and (first.access_key, first.token) == ("ASIA1", "session")
        assert aws_lite.Credentials.from_environment() == first  # cached while far from expiry
        assert _CredentialsEndpoint.served == ["auth-token"]
        _CredentialsEndpoint.expiration = datetime.now(UTC).isoformat()  # about to expire: fetched again
        monkeypatch.setattr(aws_lite, "_container_cache", {})
        aws_lite.Credentials.from_environment()
        renewed = aws_lite.Credentials.from_environment()
        assert renewed is not None and renewed.access_key == "ASIA3" and len(_CredentialsEndpoint.served) == 3
    finally:
        _CredentialsEndpoint.expiration = "2099-01-01T00:00:00Z"
        server.shutdown()
