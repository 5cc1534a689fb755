"""The one AWS client factory.

Endpoints are never chosen here: boto3 itself honours ``AWS_ENDPOINT_URL`` (and the per-service
``AWS_ENDPOINT_URL_<SERVICE>``), which is how the same code talks to AWS, moto server or LocalStack
with no ``if local:`` anywhere. Retries use botocore's ``standard`` mode (exponential backoff with
jitter, bounded attempts) so a slow or failing dependency ends in a clean error, not a hang.

boto3 is imported on first use, not with this module: serving's cold start reads S3 and SSM
through :mod:`shelfwise.aws_lite` (:func:`light_client`) and never pays for the SDK.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from shelfwise.errors import ConfigurationError


@functools.cache
def _session() -> Any:
    import boto3

    return boto3.session.Session()


# What the platform needs of the SDK beyond the basics: S3 conditional writes (the registry and the
# rollout commit with PutObject IfNoneMatch/IfMatch). In Lambda the SDK is the runtime's own copy,
# whose version AWS chooses; a copy too old for these is refused at cold start, naming what to do.
REQUIRED_MEMBERS = {"s3": {"PutObject": ("IfNoneMatch", "IfMatch"), "GetObject": ("IfMatch",)}}


def check_sdk(service: str, boto_client: Any) -> None:
    """ConfigurationError if ``boto_client``'s service model lacks a parameter the platform uses."""
    model = boto_client.meta.service_model
    for operation, members in REQUIRED_MEMBERS.get(service, {}).items():
        have = model.operation_model(operation).input_shape.members
        missing = [m for m in members if m not in have]
        if missing:
            import botocore

            raise ConfigurationError(
                f"botocore {botocore.__version__} has no {service} {operation} {', '.join(missing)}: "
                "the platform needs S3 conditional writes; use a newer AWS SDK (bundle boto3 and "
                "botocore in the base layer, see docs/dependencies.md)"
            )


@functools.cache
def client(service: str) -> Any:
    """A cached boto3 client for ``service``, created once per execution environment."""
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=3,
        read_timeout=20,
        tcp_keepalive=True,
    )
    made = _session().client(service, config=config)
    check_sdk(service, made)
    return made


@functools.cache
def light_client(service: str) -> Any:
    """A client for the calls serving makes (``s3`` GetObject, ``ssm`` GetParameters, ``dynamodb``
    UpdateItem of the client quota).

    :mod:`shelfwise.aws_lite`'s SDK-free client when the environment has credentials and a region
    (always so in Lambda), else the boto3 client (profiles, SSO, container credentials).
    """
    from shelfwise import aws_lite

    if service in aws_lite.CLIENTS and aws_lite.available():
        return aws_lite.CLIENTS[service]()
    return client(service)


def reset_clients() -> None:
    """Forget cached clients (tests switch endpoints and credentials between cases)."""
    client.cache_clear()
    light_client.cache_clear()
    _session.cache_clear()


def endpoint_url() -> str | None:
    """The emulator endpoint in use, if any (for messages and tooling; never for branching)."""
    return os.environ.get("AWS_ENDPOINT_URL")
