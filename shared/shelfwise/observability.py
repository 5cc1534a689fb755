"""The Powertools trio, created once per execution environment and imported by every handler.

Service name, namespace and log level come from the standard Powertools environment variables
(``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_LOG_LEVEL``), which
``template.yaml`` sets in Globals.

Tracing follows Powertools' own rule (off with ``POWERTOOLS_TRACE_DISABLED``, outside Lambda and
under SAM local). When it is off, the tracer gets a do-nothing provider instead of the X-Ray
recorder, because Powertools imports ``aws_xray_sdk.core`` for its default provider even when
disabled: 0.1-0.3 s of every cold start, and a disabled subsegment per request, for nothing.
When tracing is on (deployed with ``Tracing: Active``), the tracer is the default X-Ray one.
Metrics go through a leaner EMF provider (:mod:`shelfwise.powertools_internals.metrics`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from shelfwise.powertools_internals.metrics import lean_metrics

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


logger = Logger()
tracer = Tracer() if tracing_enabled() else Tracer(disabled=True, provider=NoTracingProvider())
metrics = lean_metrics(NAMESPACE)
