"""EMF metrics published in batches: one call per invocation, or deferred until the next pump."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.testing import new_runtime
from tests.integration.conftest import TEST_TEMPLATE


@pytest.fixture
def deferred() -> Iterator[LocalRuntime]:
    runtime = new_runtime(TEST_TEMPLATE, defer_metrics=True)
    try:
        yield runtime
    finally:
        runtime.close()


def _latency_stats(rt: LocalRuntime) -> list[dict[str, Any]]:
    now = rt.clock.now()
    return list(
        rt.client("cloudwatch").get_metric_statistics(
            Namespace=f"RuntimeTest-{rt.stack_name}",
            MetricName="Latency",
            Dimensions=[{"Name": "service", "Value": "api"}],
            StartTime=now - 600,
            EndTime=now + 600,
            Period=60,
            Statistics=["SampleCount", "Maximum", "Sum"],
        )["Datapoints"]
    )


def test_deferred_emf_metrics_arrive_merged_at_the_next_pump(deferred: LocalRuntime) -> None:
    for ms in [10] * 8 + [900, 950]:
        with urllib.request.urlopen(f"{deferred.api_url}/latency?ms={ms}", timeout=30) as resp:
            assert resp.status == 200
    assert _latency_stats(deferred) == []  # buffered: nothing published yet
    deferred.pump()
    stats = _latency_stats(deferred)
    assert sum(d["SampleCount"] for d in stats) == 10  # equal values merged with Counts, none lost
    assert max(d["Maximum"] for d in stats) == 950 and sum(d["Sum"] for d in stats) == 80 + 900 + 950
    deferred.advance(60)
    assert deferred.alarm_state("LatencyAlarm") == "ALARM"  # p90 from the raw values, as before
