"""shelfwise.observability's EMF provider behaves exactly as Powertools' own (it only formats less)."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.observability import NAMESPACE, metrics
from shelfwise.powertools_internals.metrics import EMFProvider

names = st.sampled_from(["Requests", "Errors", "LatencyMs", " Padded ", "", "x" * 256])
units = st.sampled_from([MetricUnit.Count, MetricUnit.Milliseconds, "Count", "Seconds", "Bogus"])
values = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), st.just("1"))
calls = st.lists(st.tuples(names, units, values, st.sampled_from([60, 1, 7])), max_size=120)


def run(provider: AmazonCloudWatchEMFProvider, ops: list[tuple[Any, ...]]) -> tuple[list[Any], str, Any]:
    """Outcome of each call (None or the exception type), what was printed, the final blob."""
    outcomes: list[Any] = []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for name, unit, value, resolution in ops:
            try:
                provider.add_metric(name=name, unit=unit, value=value, resolution=resolution)
                outcomes.append(None)
            except Exception as exc:  # the type is part of the contract
                outcomes.append(type(exc))
    blob = provider.serialize_metric_set() if provider.metric_set else None
    if blob:
        blob["_aws"].pop("Timestamp")
    return outcomes, out.getvalue(), blob


@settings(max_examples=200, deadline=None)
@given(calls)
def test_add_metric_is_powertools_add_metric(ops: list[tuple[Any, ...]]) -> None:
    ours = run(EMFProvider(namespace=NAMESPACE), ops)
    theirs = run(AmazonCloudWatchEMFProvider(namespace=NAMESPACE), ops)
    # auto-flushed blobs (100 values of one metric) differ only in their timestamps
    strip = [
        [
            {**json.loads(line), "_aws": {**json.loads(line)["_aws"], "Timestamp": 0}}
            for line in o[1].splitlines()
        ]
        for o in (ours, theirs)
    ]
    assert ours[0] == theirs[0] and ours[2] == theirs[2] and strip[0] == strip[1]


def test_the_shared_metrics_object_uses_it_and_still_flushes_emf(capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(metrics.provider, EMFProvider) and metrics.namespace == NAMESPACE
    metrics.add_dimensions(Variant="champion", Endpoint="similar")
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()
    blob = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert blob["Requests"] == [1.0] and blob["Variant"] == "champion"
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[], ["Variant", "Endpoint"]]


dimension_values = st.text(min_size=1, max_size=12).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["A", "B", "LatencyMs"]), st.floats(allow_nan=False)), min_size=1),
    st.dictionaries(st.sampled_from(["Variant", "Endpoint"]), dimension_values, max_size=2),
)
def test_flushed_blob_is_powertools_blob(values: list[tuple[str, float]], dims: dict[str, str]) -> None:
    printed = []
    for provider in (EMFProvider(namespace=NAMESPACE), AmazonCloudWatchEMFProvider(namespace=NAMESPACE)):
        provider.set_timestamp(1795881600000)
        if dims:
            provider.add_dimensions(**dims)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for name, value in values:
                provider.add_metric(name=name, unit=MetricUnit.Count, value=value)
            provider.flush_metrics()
        assert not provider.metric_set and not provider.dimension_sets  # cleared
        printed.append(out.getvalue().splitlines())
    ours, theirs = printed
    assert [json.loads(line) for line in ours] == [json.loads(line) for line in theirs]
    assert all(line.isascii() for line in ours)  # ASCII-escaped like json.dumps
