"""The one boto3 client factory.

Endpoints are never chosen here: boto3 itself honours ``AWS_ENDPOINT_URL`` (and the per-service
``AWS_ENDPOINT_URL_<SERVICE>``), which is how the same code talks to AWS, moto server or LocalStack
with no ``if local:`` anywhere. Retries use botocore's ``standard`` mode (exponential backoff with
jitter, bounded attempts) so a slow or failing dependency ends in a clean error, not a hang.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=3,
    read_timeout=20,
    tcp_keepalive=True,
)


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@functools.cache
def client(service: str) -> Any:
    """A cached boto3 client for ``service``, created once per execution environment."""
    return _session().client(service, config=_CONFIG)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget cached clients (tests switch endpoints and credentials between cases)."""
    client.cache_clear()
    _session.cache_clear()


def endpoint_url() -> str | None:
    """The emulator endpoint in use, if any (for messages and tooling; never for branching)."""
    return os.environ.get("AWS_ENDPOINT_URL")
