"""A local HTTP API (API Gateway v2, payload format 2.0) on a real loopback port.

LocalStack's community edition has no API Gateway v2 and moto only stores its configuration, so
the runtime serves the template's ``HttpApi`` routes itself: same route keys (``GET /items/{id}``,
greedy ``{proxy+}``, ``ANY``, ``$default``), same event shape, same response mapping (a dict
with ``statusCode`` is used as is; anything else becomes a 200 JSON body).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from shelfwise_local.runtime.functions import Invocation

# The local runtime serves the API on loopback without API Gateway's IAM and JWT authorizers, so
# it runs the template with its API explicitly open: the functions then let anonymous calls in
# (Access("NONE")) and /v1/health shows its status only. Pass ApiAuth=AWS_IAM to see the deployed
# default instead: every /v1 route but openapi.json answers 401 to the unsigned local calls.
LOCAL_API_PARAMETERS = {"ApiAuth": "NONE"}


def with_local_api_parameters(template_path: Any, given: dict[str, Any] | None) -> dict[str, Any]:
    """``given`` plus LOCAL_API_PARAMETERS for a template that declares them and ``given`` does not set."""
    from shelfwise_local.runtime.template import load_template

    declared = load_template(template_path).get("Parameters") or {}
    out = dict(given or {})
    for key, value in LOCAL_API_PARAMETERS.items():
        if key in declared:
            out.setdefault(key, value)
    return out


_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded", "+json")


@dataclass
class Route:
    """One route: method (``ANY`` allowed), path template and the function behind it."""

    method: str
    path: str
    function: str
    payload_version: str = "2.0"

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in {"ANY", method}:
            return None
        if self.path == "$default":
            return {}
        regex, names = "", []
        for part in re.split(r"(\{[^}]+\})", self.path):
            if part.startswith("{"):
                name = part[1:-1]
                greedy = name.endswith("+")
                name = name.rstrip("+")
                names.append(name)
                regex += f"(?P<{name}>.+)" if greedy else f"(?P<{name}>[^/]+)"
            else:
                regex += re.escape(part)
        m = re.fullmatch(regex, path)
        return None if m is None else {k: v for k, v in m.groupdict().items()}

    def specificity(self) -> tuple[int, int, int]:
        """AWS prefers exact paths, then fewer/ non-greedy variables, then a named method."""
        if self.path == "$default":
            return (-1, 0, 0)
        return (self.path.count("/") - self.path.count("{"), -self.path.count("+}"), self.method != "ANY")


class LocalHttpApi:
    """Serves one HTTP API's routes with a ThreadingHTTPServer on 127.0.0.1."""

    def __init__(
        self,
        api_id: str,
        routes: list[Route],
        invoke: Callable[[str, dict[str, Any]], Invocation],
        account_id: str,
        now: Callable[[], float],
        port: int = 0,
    ) -> None:
        self.api_id = api_id
        self.routes = sorted(routes, key=lambda r: r.specificity(), reverse=True)
        self.invoke = invoke
        self.account_id = account_id
        self.now = now
        handler = self._handler_class()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"httpapi-{api_id}", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHttpApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def build_event(
        self,
        route: Route,
        params: dict[str, str],
        method: str,
        raw: str,
        headers: dict[str, str],
        body: bytes,
        peer: str,
    ) -> dict[str, Any]:
        """The payload format 2.0 event API Gateway sends for this request."""
        split = urlsplit(raw)
        query: dict[str, list[str]] = {}
        for k, v in parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(k, []).append(v)
        ctype = headers.get("content-type", "")
        is_text = not body or any(t in ctype for t in _TEXT_TYPES)
        if is_text and body and headers.get("content-encoding"):
            is_text = False  # a compressed body is bytes, whatever its content type says
        if is_text and body:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                is_text = False  # API Gateway passes bytes it cannot read as text base64-encoded
        now = self.now()
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": split.path,
            "rawQueryString": split.query,
            "headers": headers,
            "requestContext": {
                "accountId": self.account_id,
                "apiId": self.api_id,
                "domainName": headers.get("host", "localhost"),
                "domainPrefix": headers.get("host", "localhost").split(".")[0],
                "http": {
                    "method": method,
                    "path": split.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": peer,
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": route.route_key,
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": not is_text,
        }
        cookies = [c.strip() for c in headers.get("cookie", "").split(";") if c.strip()]
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
        if params:
            event["pathParameters"] = params
        if body:
            event["body"] = body.decode("utf-8") if is_text else base64.b64encode(body).decode()
        return event

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One segment per response: with keep-alive, Nagle + delayed ACK would add ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet, like API Gateway
                pass

            def _serve(self) -> None:
                method = self.command.upper()
                path = urlsplit(self.path).path
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, str] = {}
                for k, v in self.headers.items():
                    key = k.lower()
                    headers[key] = f"{headers[key]},{v}" if key in headers else v
                for route in api.routes:
                    params = route.match(method, path)
                    if params is not None:
                        break
                else:
                    return self._send(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
                event = api.build_event(
                    route, params, method, self.path, headers, body, self.client_address[0]
                )
                inv = api.invoke(route.function, event)
                if inv.error is not None:
                    timed_out = inv.error.get("errorType") == "Sandbox.Timedout"
                    status, msg = (
                        (503, "Service Unavailable") if timed_out else (500, "Internal Server Error")
                    )
                    return self._send(
                        status, {"content-type": "application/json"}, json.dumps({"message": msg}).encode()
                    )
                self._respond(inv.payload)

            def _respond(self, payload: Any) -> None:
                if isinstance(payload, dict) and "statusCode" in payload:
                    headers = {str(k).lower(): str(v) for k, v in (payload.get("headers") or {}).items()}
                    for k, vs in (payload.get("multiValueHeaders") or {}).items():
                        headers[str(k).lower()] = ",".join(str(v) for v in vs)
                    body = payload.get("body") or ""
                    raw = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
                    headers.setdefault("content-type", "application/json")
                    self._send(int(payload["statusCode"]), headers, raw, payload.get("cookies") or [])
                else:
                    raw = json.dumps(payload).encode() if not isinstance(payload, str) else payload.encode()
                    self._send(200, {"content-type": "application/json"}, raw)

            def _send(
                self, status: int, headers: dict[str, str], body: bytes, cookies: list[str] | None = None
            ) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k not in {"content-length", "connection"}:
                        self.send_header(k, v)
                for c in cookies or []:
                    self.send_header("set-cookie", c)
                self.send_header("content-length", str(len(body)))
                self.send_header("apigw-requestid", str(uuid.uuid4()))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = _serve

            def __getattr__(self, name: str) -> Any:
                # Any other method token (QUERY, PROPFIND...) reaches an ANY route like the rest,
                # instead of http.server's 501 page.
                if name.startswith("do_") and name[3:].isalpha():
                    return self._serve
                raise AttributeError(name)

        return Handler
