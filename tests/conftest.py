"""Fixtures shared by every tier: fake credentials, a Lambda context, real-shaped events."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Shared, noisy 2-core machines: no per-example deadline and no too-slow health check; and in CI
# the examples derive from each test (derandomize), so a red run is reproducible, not luck.
# `HYPOTHESIS_PROFILE=explore make unit` searches with fresh randomness.
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

EVENTS_DIR = Path(__file__).parent / "events"
RETAIL_PARQUET = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "online_retail_ii"
    / "online_retail_ii_2009-2010.parquet"
)


def load_event(name: str) -> dict[str, Any]:
    """A real-shaped Lambda event from tests/events/<name>.json."""
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region before any client exists, so no test can reach real AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Shelfwise")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("SAM_CLI_TELEMETRY", "0")
    from shelfwise.aws import reset_clients

    reset_clients()


@pytest.fixture(autouse=True)
def reset_powertools_metrics() -> Any:
    """Powertools metrics are module-level singletons: clear them between tests."""
    yield
    from shelfwise.observability import metrics

    metrics.clear_metrics()
    metrics.clear_default_dimensions()


@dataclass
class LambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:test-function"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"
    log_group_name: str = "/aws/lambda/test-function"
    log_stream_name: str = "2026/11/28/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def retail_parquet() -> Path:
    """The real UCI Online Retail II log (never copied into the repository)."""
    if not RETAIL_PARQUET.exists():
        pytest.skip(f"real data set not present at {RETAIL_PARQUET}")
    return RETAIL_PARQUET


def _blocked(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("unit tests must not open network connections")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Block outbound sockets (moto mock_aws works without them)."""
    monkeypatch.setattr(socket.socket, "connect", _blocked)
