"""The Powertools trio, created once per execution environment and imported by every handler.

Service name, namespace and log level come from the standard Powertools environment variables
(``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_LOG_LEVEL``), which
``template.yaml`` sets in Globals.

Tracing follows Powertools' own rule (off with ``POWERTOOLS_TRACE_DISABLED``, outside Lambda and
under SAM local). When it is off, the tracer gets a do-nothing provider instead of the X-Ray
recorder, because Powertools imports ``aws_xray_sdk.core`` for its default provider even when
disabled: 0.1-0.3 s of every cold start, and a disabled subsegment per request, for nothing.
When tracing is on (deployed with ``Tracing: Active``), the tracer is the default X-Ray one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pydantic_core
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics.exceptions import MetricValueError
from aws_lambda_powertools.metrics.functions import (
    extract_cloudwatch_metric_resolution_value,
    extract_cloudwatch_metric_unit_value,
    is_metrics_disabled,
)
from aws_lambda_powertools.metrics.provider.cloudwatch_emf import cloudwatch as emf
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import (
    MAX_METRIC_NAME_LENGTH,
    MAX_METRICS,
    MIN_METRIC_NAME_LENGTH,
)
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.exceptions import MetricNameError
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

NAMESPACE = "Shelfwise"


def tracing_enabled() -> bool:
    """Powertools' rule: traced in Lambda unless POWERTOOLS_TRACE_DISABLED, SAM local or Chalice."""
    if resolve_truthy_env_var_choice(env=os.getenv(constants.TRACER_DISABLED_ENV, "false")):
        return False
    in_lambda = bool(os.getenv(constants.LAMBDA_TASK_ROOT_ENV))
    local = bool(os.getenv(constants.SAM_LOCAL_ENV) or os.getenv(constants.CHALICE_LOCAL_ENV))
    return in_lambda and not local


class _NoSegment(BaseSegment):
    """The segment a disabled tracer hands out: accepts everything, records nothing."""

    def close(self, end_time: int | None = None) -> None:
        return None

    def add_subsegment(self, subsegment: Any) -> None:
        return None

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        return None


class NoTracingProvider(BaseProvider):
    """Powertools tracing provider for when tracing is off (no X-Ray SDK import, no per-call work)."""

    _segment = _NoSegment()

    @contextlib.contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield self._segment

    @contextlib.asynccontextmanager
    async def in_subsegment_async(self, name: Any = None, **kwargs: Any) -> AsyncIterator[BaseSegment]:
        yield self._segment

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def patch(self, modules: Sequence[str]) -> None:
        return None

    def patch_all(self) -> None:
        return None


class EMFProvider(emf.AmazonCloudWatchEMFProvider):
    """Powertools' CloudWatch EMF provider, cheaper per request: same checks, same blobs.

    Two per-request costs of Powertools (3.37) go: ``add_metric`` formats a debug message holding
    the metric's repr with an f-string on every call, whether debug logging is on or not (about 6
    of its 14 microseconds; a serving request adds six metrics), and ``flush_metrics`` writes the
    blob with ``json.dumps``, whose float repr is slow on these machines (every metric value is a
    float). Here the message is formatted only when the library's debug logging is on, and the
    blob is written by pydantic-core's serialiser (ASCII-escaped like ``json.dumps``; the same
    JSON, spelled differently only for very small or large numbers: ``0.00001`` for ``1e-05``).
    """

    def add_metric(self, name: str, unit: Any, value: float, resolution: Any = 60) -> None:
        name = name.strip()
        if len(name) < MIN_METRIC_NAME_LENGTH or len(name) > MAX_METRIC_NAME_LENGTH:
            raise MetricNameError(
                f"The metric name should be between {MIN_METRIC_NAME_LENGTH} and {MAX_METRIC_NAME_LENGTH} characters",
            )
        if not isinstance(value, numbers.Number):
            raise MetricValueError(f"{value} is not a valid number")
        unit = extract_cloudwatch_metric_unit_value(
            metric_units=self._metric_units, metric_valid_options=self._metric_unit_valid_options, unit=unit
        )
        resolution = extract_cloudwatch_metric_resolution_value(
            metric_resolutions=self._metric_resolutions, resolution=resolution
        )
        metric: dict[str, Any] = self.metric_set.get(name, defaultdict(list))
        metric["Unit"] = unit
        metric["StorageResolution"] = resolution
        metric["Value"].append(float(value))  # type: ignore[arg-type]
        if emf.logger.isEnabledFor(logging.DEBUG):
            emf.logger.debug("Adding metric: %s with %s", name, metric)
        self.metric_set[name] = metric
        if len(self.metric_set) == MAX_METRICS or len(metric["Value"]) == MAX_METRICS:
            # as Powertools: publish what is there, keep the dimensions
            print(json.dumps(self.serialize_metric_set()))
            self.metric_set.clear()

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if self.metadata_set or (not raise_on_empty_metrics and not self.metric_set):
            # metadata may hold anything json.dumps accepts or refuses; nothing to flush warns
            super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)
        elif not is_metrics_disabled():
            blob = self.serialize_metric_set()
            print(pydantic_core.to_json(blob, ensure_ascii=True, inf_nan_mode="constants").decode())
            self.clear_metrics()


def _metrics() -> Metrics:
    """The Metrics facade over :class:`EMFProvider`, sharing Powertools' class-level metric state."""
    provider = EMFProvider(
        metric_set=Metrics._metrics,
        dimension_set=Metrics._dimensions,
        namespace=NAMESPACE,
        metadata_set=Metrics._metadata,
        default_dimensions=Metrics._default_dimensions,
    )
    return Metrics(namespace=NAMESPACE, provider=provider)


logger = Logger()
tracer = Tracer() if tracing_enabled() else Tracer(disabled=True, provider=NoTracingProvider())
metrics = _metrics()
