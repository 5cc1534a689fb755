"""Per-client quotas over one DynamoDB table (moto): each client its own requests per minute,
shared by every execution environment, leased in blocks."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from shelfwise.serving.quota import ClientQuota


@pytest.fixture
def table() -> Any:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="eu-west-1")
        ddb.create_table(
            TableName="usage",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
        yield ddb


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_each_client_gets_its_limit_across_environments_then_429(table: Any) -> None:
    clock = Clock()
    # three execution environments of the same function, one table
    envs = [ClientQuota(table, "usage", 100, clock, block=7) for _ in range(3)]
    admitted = sum(envs[i % 3].admit("jwt:shop-a") for i in range(200))
    # Blocks leased but unused in other environments are lost for the minute, never added.
    assert 100 - 2 * 7 <= admitted <= 100
    assert all(env.admit("jwt:shop-b") for env in envs)  # another client is unaffected
    clock.t += 60  # the next minute
    assert sum(envs[0].admit("jwt:shop-a") for _ in range(100)) == 100
    assert not envs[0].admit("jwt:shop-a")
    item = table.get_item(TableName="usage", Key={"pk": {"S": f"jwt:shop-a#{int(clock.t // 60)}"}})["Item"]
    assert int(item["used"]["N"]) == 100 and int(item["expires_at"]["N"]) > clock.t


def test_an_unreachable_table_lets_requests_through_and_is_left_alone_a_while(table: Any) -> None:
    calls = []
    real = table.update_item

    def counted(**kwargs: Any) -> Any:
        calls.append(kwargs["TableName"])
        return real(**kwargs)

    table.update_item = counted
    clock = Clock()
    quota = ClientQuota(table, "no-such-table", 1, clock)
    assert all(quota.admit("ip:10.0.0.1") for _ in range(5))
    assert len(calls) == 1  # one failed call, then no more until the retry time
    clock.t += 31
    assert quota.admit("ip:10.0.0.1") and len(calls) == 2


def test_a_quota_needs_a_positive_limit(table: Any) -> None:
    with pytest.raises(ValueError):
        ClientQuota(table, "usage", 0, Clock())
