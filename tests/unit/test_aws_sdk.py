"""The SDK check: the pinned botocore has what the platform uses; an older model is refused clearly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from shelfwise.aws import REQUIRED_MEMBERS, check_sdk
from shelfwise.errors import ConfigurationError

pytestmark = pytest.mark.unit


def test_the_pinned_sdk_has_s3_conditional_writes() -> None:
    check_sdk("s3", boto3.client("s3", region_name="eu-west-1"))


def _client_without(operation: str, member: str) -> Any:
    real = boto3.client("s3", region_name="eu-west-1").meta.service_model

    def operation_model(name: str) -> Any:
        members = dict(real.operation_model(name).input_shape.members)
        if name == operation:
            members.pop(member)
        return SimpleNamespace(input_shape=SimpleNamespace(members=members))

    return SimpleNamespace(
        meta=SimpleNamespace(service_model=SimpleNamespace(operation_model=operation_model))
    )


@pytest.mark.parametrize(
    ("operation", "member"), [(op, m) for op, ms in REQUIRED_MEMBERS["s3"].items() for m in ms]
)
def test_an_sdk_without_conditional_writes_is_refused(operation: str, member: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{operation} {member}"):
        check_sdk("s3", _client_without(operation, member))
