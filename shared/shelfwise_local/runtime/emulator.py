"""The AWS emulator behind the runtime: an embedded moto server, or any endpoint (LocalStack).

The embedded default needs nothing beyond the project's dependencies: moto's
``ThreadedMotoServer`` on a free loopback port in this process. Any other endpoint (LocalStack
in host mode, a user's LocalStack with its token) is used as it is; it must answer before the
runtime starts, otherwise the runtime fails loudly instead of half-working.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


class EmulatorError(RuntimeError):
    """The emulator could not be started or does not answer."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Emulator:
    """An emulator endpoint; ``kind`` is ``moto`` or ``localstack`` (or ``external``)."""

    endpoint_url: str
    kind: str
    _server: object | None = None
    start_seconds: float = 0.0

    @classmethod
    def start_moto(cls) -> Emulator:
        """Start an embedded moto server on a free loopback port, with fresh state."""
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        t0 = time.perf_counter()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        # moto's backends are process-global: one embedded server at a time sees a clean slate.
        _request(f"{url}/moto-api/reset", method="POST")
        return cls(url, "moto", server, time.perf_counter() - t0)

    @classmethod
    def connect(cls, endpoint_url: str, timeout: float = 10.0) -> Emulator:
        """Use a running emulator; LocalStack is recognised by its health endpoint."""
        url = endpoint_url.rstrip("/")
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                health = json.loads(_request(f"{url}/_localstack/health") or b"{}")
                return cls(url, "localstack" if "services" in health else "external")
            except urllib.error.HTTPError:
                return cls(url, "external")  # answers HTTP, but is not LocalStack
            except (OSError, ValueError) as exc:
                last = exc
                time.sleep(0.2)
        raise EmulatorError(f"no AWS emulator answers at {url} ({last}); start it (make localstack)")

    def metric_names_put_since(
        self, account_id: str, region: str, index: int
    ) -> tuple[int, set[tuple[str, str]]] | None:
        """(new index, the (namespace, metric name) pairs put since ``index``); embedded moto only.

        moto keeps put datapoints in an append-only list in this process, so the alarm evaluator
        can tell which metrics may answer a query differently now; None means "unknown" (another
        emulator, or a moto without this layout): always query.
        """
        if self.kind != "moto" or self._server is None:
            return None
        try:
            from moto.cloudwatch.models import cloudwatch_backends

            data = cloudwatch_backends[account_id][region].metric_data
            end = len(data)
            if index > end:  # the store was reset
                index = 0
            return end, {(d.namespace, d.name) for d in data[index:end]}
        except Exception:
            return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None


def _request(url: str, method: str = "GET") -> bytes:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return bytes(resp.read())
