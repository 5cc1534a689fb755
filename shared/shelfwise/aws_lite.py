"""The two AWS calls serving makes at cold start, without the AWS SDK: S3 GetObject and SSM GetParameters.

Why not boto3 here: importing boto3 and creating its S3 and SSM clients costs about 0.5 s of
CPU in a fresh python3.12 interpreter on these machines (import 0.25 s, S3 client 0.19 s: it
loads and indexes S3's whole service model and endpoint rule set), more than ONNX Runtime and
numpy together, and serving needs two read-only calls of it. Everywhere else (ingest, training,
monitoring, registry writes) boto3 stays the client (:mod:`shelfwise.aws`).

The clients implement exactly the subset of boto3's interface that serving uses, with the same
shapes, so the code calling them (:func:`shelfwise.bundle.download_bundle`,
:meth:`shelfwise.registry.Registry.aliases`) works with either:

* ``LiteS3.get_object(Bucket=, Key=)`` -> ``{"Body": <stream with read(n) and close()>}``
* ``LiteSSM.get_parameters(Names=[...])`` -> ``{"Parameters": [...], "InvalidParameters": [...]}``
* errors raise :class:`ClientError` with botocore's ``response["Error"]["Code"]`` shape, reachable
  as ``client.exceptions.ClientError`` as in boto3.

Requests are signed with Signature Version 4 (tests check the signature against botocore's own
signer, byte for byte). Endpoints follow botocore's environment rules (``AWS_ENDPOINT_URL_<SERVICE>``,
then ``AWS_ENDPOINT_URL``; otherwise the regional AWS endpoint), so the same code reaches AWS, moto
server or LocalStack. Credentials are the access keys Lambda sets in the environment, or the
container credentials endpoint it provides under SnapStart; without either, :func:`available`
is False and callers use boto3 instead. Connection errors, 5xx answers and
throttling are retried with jittered exponential backoff, like botocore's ``standard`` mode.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

MAX_ATTEMPTS = 4
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 20.0
_RETRY_STATUS = {500, 502, 503, 504}
_THROTTLING = {"Throttling", "ThrottlingException", "ThrottledException", "SlowDown", "RequestLimitExceeded"}


class ClientError(Exception):
    """An error answer from the service, shaped like botocore's ``ClientError``."""

    def __init__(self, code: str, message: str, operation: str, status: int) -> None:
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation: {message}")
        self.response: dict[str, Any] = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        self.operation_name = operation


class _Exceptions:
    ClientError = ClientError


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None

    expires_at: float = float("inf")  # epoch seconds (container credentials expire)

    @classmethod
    def from_environment(cls) -> Credentials | None:
        """Access keys in the environment (Lambda), else the container credentials endpoint.

        The endpoint (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` with its authorization token, or
        ECS's ``..._RELATIVE_URI``) is what Lambda provides instead of keys under SnapStart, so
        a restored snapshot signs with fresh credentials; they are cached until 5 minutes before
        they expire.
        """
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            return cls(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
        uri = _container_uri()
        if uri is None:
            return None
        cached = _container_cache.get(uri)
        if cached is None or cached.expires_at - time.time() < 300:
            cached = _container_cache[uri] = _fetch_container_credentials(uri)
        return cached


_container_cache: dict[str, Credentials] = {}


def forget_credentials() -> None:
    """Drop cached container credentials (after a SnapStart restore they belong to the snapshot)."""
    _container_cache.clear()


def _container_uri() -> str | None:
    full = os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    relative = os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    return full or (f"http://169.254.170.2{relative}" if relative else None)


def _fetch_container_credentials(uri: str) -> Credentials:
    """GET the container credentials endpoint (with its authorization token when one is set)."""
    headers = {"Accept": "application/json"}
    token = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    token_file = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    if token_file:
        with open(token_file) as f:
            token = f.read().strip()
    if token:
        headers["Authorization"] = token
    conn, target = _connection(uri)
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ClientError(
            "CredentialsUnavailable", f"container credentials: {exc}", "GetCredentials", 0
        ) from exc
    finally:
        conn.close()
    if response.status != 200:
        raise ClientError(
            "CredentialsUnavailable", data[:200].decode("utf-8", "replace"), "GetCredentials", response.status
        )
    doc = json.loads(data)
    expiry = doc.get("Expiration")
    return Credentials(
        doc["AccessKeyId"],
        doc["SecretAccessKey"],
        doc.get("Token"),
        datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp() if expiry else float("inf"),
    )


def region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def available() -> bool:
    """Whether the lite clients can work here: credentials and region in the environment, and a
    partition whose endpoints they know (commercial, GovCloud, China) or an explicit endpoint."""
    reg = region()
    has_keys = bool(os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
    if not (has_keys or _container_uri()) or not reg:
        return False
    return bool(os.environ.get("AWS_ENDPOINT_URL")) or reg.split("-")[0] in {
        "af",
        "ap",
        "ca",
        "cn",
        "eu",
        "il",
        "me",
        "mx",
        "sa",
        "us",
    }


def endpoint(service: str, reg: str) -> tuple[str, bool]:
    """(base URL, custom) for ``service``: botocore's environment variables first, else AWS's."""
    custom = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    if custom:
        return custom.rstrip("/"), True
    suffix = "amazonaws.com.cn" if reg.startswith("cn-") else "amazonaws.com"
    return f"https://{service}.{reg}.{suffix}", False


# --------------------------------------------------------------------------- Signature Version 4


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    credentials: Credentials,
    now: datetime | None = None,
) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date``, the session token and ``Authorization`` (SigV4, header auth).

    Every given header is signed. The path is used as given (already URI-encoded once, as S3
    wants); the query string is canonicalised (sorted, each part encoded).
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    parts = urlsplit(url)
    out = dict(headers)
    out["X-Amz-Date"] = stamp
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    out.setdefault("Host", parts.netloc)
    payload = out.get("X-Amz-Content-SHA256") or hashlib.sha256(body).hexdigest()
    canonical = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
    names = sorted(canonical)
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
        )
    )
    request = "\n".join(
        [
            method,
            parts.path or "/",
            query,
            "".join(f"{n}:{canonical[n]}\n" for n in names),
            ";".join(names),
            payload,
        ]
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode("utf-8")).hexdigest()]
    )
    key = _hmac(("AWS4" + credentials.secret_key).encode("utf-8"), stamp[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


# --------------------------------------------------------------------------- transport


class _Body:
    """A streaming response body: ``read(n)``; closes its connection at the end or on ``close()``."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn, self._response = conn, response

    def read(self, amt: int | None = None) -> bytes:
        data = self._response.read(amt)
        if not data or amt is None:
            self.close()
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Read into ``buffer``; the bytes read, 0 at the end (botocore's StreamingBody has it too)."""
        n = self._response.readinto(buffer)
        if not n:
            self.close()
        return n

    def close(self) -> None:
        self._response.close()
        self._conn.close()


def integrity_protected(url: str) -> bool:
    """Whether bytes fetched from ``url`` cannot be altered unnoticed on the way: over TLS (every
    record is authenticated), or from this machine (a local emulator on a loopback address)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").lower()
    return host in ("localhost", "::1") or (host.startswith("127.") and host.replace(".", "").isdigit())


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.netloc, timeout=CONNECT_TIMEOUT)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return conn, target


def _error(status: int, data: bytes, operation: str) -> ClientError:
    """Parse an S3 XML or a JSON-protocol error body (code, message); fall back to the status."""
    text = data.decode("utf-8", "replace")
    code = message = None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
            code = str(doc.get("__type", "")).rsplit("#", 1)[-1] or None
            message = doc.get("message") or doc.get("Message")
        except ValueError:
            pass
    else:
        found = re.search(r"<Code>([^<]*)</Code>", text)
        code = found.group(1) if found else None
        found = re.search(r"<Message>([^<]*)</Message>", text)
        message = found.group(1) if found else None
    if code is None:
        code = {403: "AccessDenied", 404: "NoSuchKey" if operation == "GetObject" else "NotFound"}.get(
            status, str(status)
        )
    return ClientError(code, message or http.client.responses.get(status, ""), operation, status)


class _Client:
    service = ""
    exceptions = _Exceptions
    attempts = MAX_ATTEMPTS

    def __init__(self) -> None:
        reg = region()
        if not reg:
            raise ValueError("AWS_REGION or AWS_DEFAULT_REGION must be set")
        self.region = reg
        self.base, self.custom_endpoint = endpoint(self.service, reg)

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes, operation: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a signed request; return the open connection and response of a 2xx answer.

        Retries connection errors, 5xx and throttling answers (up to MAX_ATTEMPTS, jittered
        exponential backoff from 50 ms); other errors raise :class:`ClientError` at once.
        """
        last: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
            credentials = Credentials.from_environment()  # read each time: they can be rotated
            if credentials is None:
                raise ClientError("NoCredentials", "no AWS credentials in the environment", operation, 0)
            signed = sign(
                method, url, headers, body, service=self.service, region=self.region, credentials=credentials
            )
            conn, target = _connection(url)
            try:
                conn.request(method, target, body=body or None, headers=signed)
                if conn.sock is not None:
                    conn.sock.settimeout(READ_TIMEOUT)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last = exc
                continue
            if 200 <= response.status < 300:
                return conn, response
            data = response.read()
            conn.close()
            error = _error(response.status, data, operation)
            if response.status in _RETRY_STATUS or error.response["Error"]["Code"] in _THROTTLING:
                last = error
                continue
            raise error
        if isinstance(last, ClientError):
            raise last
        raise ClientError("ConnectionError", f"{self.base}: {last}", operation, 0)

    def _json_call(
        self, version: str, prefix: str, operation: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """One call of the AWS JSON protocol (``version`` 1.0 or 1.1): POST /, the operation named
        in ``X-Amz-Target`` (``<prefix>.<operation>``), JSON in and out."""
        headers = {
            "Content-Type": f"application/x-amz-json-{version}",
            "X-Amz-Target": f"{prefix}.{operation}",
        }
        conn, response = self._send(
            "POST", self.base + "/", headers, json.dumps(payload).encode("utf-8"), operation
        )
        try:
            return json.loads(response.read() or b"{}")
        finally:
            conn.close()


class LiteS3(_Client):
    """S3 GetObject, streaming."""

    service = "s3"
    # GetObject with ChecksumMode returns the stored checksums without hashing the body itself
    # (botocore would); callers that compare checksums themselves ask for them (bundle_files).
    passes_checksums_through = True

    def _url(self, bucket: str, key: str) -> str:
        path = quote(key, safe="/-_.~")
        if self.custom_endpoint or "." in bucket:
            return f"{self.base}/{bucket}/{path}"  # path style: emulators, and dotted names under TLS
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{bucket}.{parts.netloc}/{path}"

    def get_object(self, *, Bucket: str, Key: str, ChecksumMode: str | None = None) -> dict[str, Any]:
        """boto3's ``get_object`` (Body, ContentLength, ETag; ChecksumSHA256 with ``ChecksumMode``).

        Unlike botocore, it does not hash the body to check ``ChecksumSHA256``: it says instead
        whether the transport protects the bytes (``IntegrityProtected``: TLS, whose records are
        authenticated, or a loopback emulator), and leaves the comparison to the caller
        (:func:`shelfwise.bundle_files.download_bundle` compares it with the manifest).
        """
        url = self._url(Bucket, Key)
        headers = {"X-Amz-Content-SHA256": hashlib.sha256(b"").hexdigest()}
        if ChecksumMode == "ENABLED":
            headers["x-amz-checksum-mode"] = "ENABLED"
        conn, response = self._send("GET", url, headers, b"", "GetObject")
        out: dict[str, Any] = {
            "Body": _Body(conn, response),
            "ContentLength": int(response.getheader("Content-Length") or -1),
            "ETag": response.getheader("ETag"),
            "IntegrityProtected": integrity_protected(url),
        }
        if ChecksumMode == "ENABLED" and (checksum := response.getheader("x-amz-checksum-sha256")):
            out["ChecksumSHA256"] = checksum
        return out


class LiteSSM(_Client):
    """SSM GetParameters (JSON 1.1 protocol)."""

    service = "ssm"

    def get_parameters(self, *, Names: list[str], WithDecryption: bool = False) -> dict[str, Any]:
        payload = {"Names": list(Names), "WithDecryption": WithDecryption}
        return self._json_call("1.1", "AmazonSSM", "GetParameters", payload)


class LiteDynamoDB(_Client):
    """DynamoDB UpdateItem (JSON 1.0 protocol): the per-client quota's one call.

    One attempt: the call sits on the request path, and the quota lets a request through when
    the table does not answer, so retrying would only make the request wait.
    """

    service = "dynamodb"
    attempts = 1

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._json_call("1.0", "DynamoDB_20120810", "UpdateItem", kwargs)


CLIENTS: dict[str, type[_Client]] = {"s3": LiteS3, "ssm": LiteSSM, "dynamodb": LiteDynamoDB}
