"""``LocalRuntime``: template.yaml, run in this process against an AWS emulator.

Start-up reads the template, creates its resources on the emulator in dependency order, loads
nothing yet (handlers load on first invocation, a cold start), and wires every event source to
an in-process delivery path. Delivery paths reuse the emulator wherever it behaves like AWS
(S3 -> SQS notifications, SNS -> SQS, EventBridge pattern routing to SQS) and add what it lacks:
Lambda invocation, schedules on the runtime's clock, alarm evaluation, EMF metrics, HTTP API,
CloudWatch Logs subscription filters to Firehose (a function's output lines, delivered at each pump).

    with LocalRuntime("template.yaml") as rt:            # embedded moto
        rt.put_object("RawBucket", "raw/x.csv", data)     # S3 -> SQS -> IngestEventsFunction
        rt.pump()                                          # deliver everything pending
        rt.advance(3600)                                   # an hour: schedules, alarms
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shelfwise_local.runtime.alarms import AlarmEvaluator, RawStore
from shelfwise_local.runtime.base import (
    FAKE_CREDENTIALS,
    LogSubscription,
    PatternRule,
    Poller,
    Resource,
    RuleSchedule,
    RuntimeBase,
)
from shelfwise_local.runtime.batch import BatchJobs, LocalBatch
from shelfwise_local.runtime.clock import Clock
from shelfwise_local.runtime.delivery import Delivery
from shelfwise_local.runtime.emulator import Emulator
from shelfwise_local.runtime.functions import FunctionError, FunctionHost, Invocation
from shelfwise_local.runtime.httpapi import LocalHttpApi
from shelfwise_local.runtime.logs import LogSubscriptions
from shelfwise_local.runtime.metrics import MetricsAndAlarms
from shelfwise_local.runtime.provisioning import Provisioning
from shelfwise_local.runtime.template import TemplateError

__all__ = ["LocalRuntime", "Resource", "running", "unquote_key"]


class LocalRuntime(Provisioning, Delivery, MetricsAndAlarms, LogSubscriptions, BatchJobs, RuntimeBase):
    """The template's stack, running locally. Use as a context manager (``start``/``close``).

    Composed of parts named by what they do (see ``base``): ``Provisioning`` creates the template's
    resources, ``Delivery`` moves events to functions, ``MetricsAndAlarms`` publishes EMF metrics and
    evaluates alarms, ``LogSubscriptions`` sends log lines to Firehose, ``BatchJobs`` runs Batch jobs
    as local processes.
    """

    def __init__(
        self,
        template_path: str | Path = "template.yaml",
        backend: str = "moto",
        *,
        clock: Clock | None = None,
        parameters: dict[str, Any] | None = None,
        stack_name: str = "shelfwise-local",
        region: str | None = None,
        quiet: bool = False,
        settle: float | None = None,
        api_port: int = 0,
        defer_metrics: bool = False,
        batch_bin_dirs: list[str] | None = None,
    ) -> None:
        self.template_path = Path(template_path).resolve()
        self.backend = backend
        self.clock = clock or Clock()
        self.parameters_in = parameters or {}
        self.stack_name = stack_name
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-1"
        self.quiet = quiet
        self._settle = settle
        self._api_port = api_port
        # EMF metrics: published per invocation in one PutMetricData call, or (``defer_metrics``)
        # buffered until the next pump, alarm evaluation or ``flush_metrics()`` - many requests in
        # one frozen instant then cost a few calls instead of one per request.
        self.defer_metrics = defer_metrics
        self._pending_metrics: list[tuple[str, dict[str, Any]]] = []
        self._metrics_lock = threading.Lock()
        self.emulator: Emulator | None = None
        self.resources: dict[str, Resource] = {}
        self.warnings: list[str] = []
        self.apis: dict[str, LocalHttpApi] = {}
        self.async_failures: list[Invocation] = []
        self.raw_metrics = RawStore()
        self._schedules: list[RuleSchedule] = []
        self._pollers: list[Poller] = []
        self._pattern_rules: list[PatternRule] = []
        self._subscriptions: list[LogSubscription] = []
        # (subscription, log events) matched since the last delivery; delivered at the next pump
        self._log_batches: list[tuple[LogSubscription, list[dict[str, Any]]]] = []
        self._log_lock = threading.Lock()
        self._redeliver: list[tuple[float, str, str]] = []  # (clock time, queue url, receipt handle)
        self._queues_by_arn: dict[str, tuple[str, float]] = {}  # arn -> (url, visibility timeout)
        self._clients: dict[str, Any] = {}
        self._saved_env: dict[str, str | None] = {}
        self._lock = threading.RLock()
        self._next_alarm_eval: float | None = None
        self._started_at = 0.0
        self.account_id = ""
        self.host = FunctionHost(
            namespace=uuid.uuid4().hex[:8],
            base_env=self._function_base_env,
            now=self.clock.now,
            on_emf=self._on_emf,
            quiet=quiet,
            on_output=self._on_output,
        )
        self.evaluator = AlarmEvaluator(self._datapoints)
        # (metric, stat, period) -> (start, end, metric-store version, datapoints): see _datapoints
        self._datapoint_cache: dict[tuple[Any, ...], tuple[float, float, int, list[float | None]]] = {}
        self._metric_index = 0  # how far the emulator's metric store has been scanned
        self._metric_versions: dict[tuple[str, str], int] = {}  # (namespace, name) -> puts seen
        # Batch jobs run with executables from these directories first (default: this Python's).
        self.batch_bin_dirs = batch_bin_dirs
        self.batch: LocalBatch | None = None

    # --- lifecycle
    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> LocalRuntime:
        """Start (or connect to) the emulator, create the stack, start the HTTP APIs."""
        try:
            self._start_emulator()
            self._set_process_env()
            self.account_id = self.client("sts").get_caller_identity()["Account"]
            self._start_batch()
            self._create_stack()
            for api in self.apis.values():
                api.start()
            self._started_at = self.clock.now()
            self._next_alarm_eval = (int(self._started_at // 60) + 1) * 60.0
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the HTTP APIs and the embedded emulator; restore the environment."""
        for api in self.apis.values():
            with contextlib.suppress(Exception):
                api.stop()
        self.apis.clear()
        with contextlib.suppress(Exception):
            self.flush_metrics()
        with contextlib.suppress(Exception):
            self.flush_subscriptions()
        self.host.unload()
        with contextlib.suppress(Exception):
            self._stop_batch()
        if self.emulator is not None:
            self.emulator.stop()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env.clear()
        self._reset_shelfwise_clients()

    def _start_emulator(self) -> None:
        if self.backend == "moto":
            self.emulator = Emulator.start_moto()
        elif self.backend == "localstack":
            url = os.environ.get("SHELFWISE_LOCALSTACK_ENDPOINT") or "http://127.0.0.1:4566"
            self.emulator = Emulator.connect(url)
        else:
            self.emulator = Emulator.connect(self.backend)

    def _set_process_env(self) -> None:
        env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }
        for k, v in FAKE_CREDENTIALS.items():
            if not os.environ.get(k):
                env[k] = v
        for k, v in env.items():
            self._saved_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v
        self._reset_shelfwise_clients()

    @staticmethod
    def _reset_shelfwise_clients() -> None:
        with contextlib.suppress(ImportError):
            from shelfwise.aws import reset_clients

            reset_clients()

    def _function_base_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "false",
            "POWERTOOLS_DEV": "false",
            # batch:* calls go to the runtime's own Batch (boto3 honours the per-service endpoint)
            **({"AWS_ENDPOINT_URL_BATCH": self.batch.url} if self.batch is not None else {}),
        }

    # --- convenience API
    def put_object(
        self, bucket: str, key: str, body: bytes | str, *, pump: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        """Put an object (bucket by logical id or name); by default deliver what it triggers."""
        data = body.encode() if isinstance(body, str) else body
        resp: dict[str, Any] = self.s3.put_object(
            Bucket=self._bucket_name(bucket), Key=key, Body=data, **kwargs
        )
        if pump:
            self.pump()
        return resp

    @property
    def api_url(self) -> str:
        """The URL of the (first) HTTP API."""
        if not self.apis:
            raise KeyError("the template declares no HttpApi routes")
        return next(iter(self.apis.values())).url

    def function_names(self) -> dict[str, str]:
        return {lid: spec.name for lid, spec in self.host.functions.items()}

    @property
    def invocations(self) -> list[Invocation]:
        return self.host.invocations

    def invocations_of(self, function: str) -> list[Invocation]:
        lid = self.host.find(function).logical_id
        return [i for i in self.host.invocations if i.function == lid]

    def invoke(self, function: str, event: Any) -> Any:
        """Invoke synchronously (RequestResponse); returns the payload, raises FunctionError."""
        inv = self.host.invoke(function, event)
        if inv.error is not None:
            raise FunctionError(inv.function, inv.error)
        return inv.payload

    def invoke_raw(self, function: str, event: Any) -> Invocation:
        return self.host.invoke(function, event)

    # --- outputs, description
    def outputs(self) -> dict[str, Any]:
        """The template's Outputs, resolved (those the runtime can resolve)."""
        out = {}
        for name, spec in (self.template.get("Outputs") or {}).items():
            cond = spec.get("Condition")
            if cond and not self.resolver.condition(cond):
                continue
            try:
                out[name] = self.resolver.resolve(spec["Value"])
            except (TemplateError, KeyError) as exc:
                out[name] = f"<unresolved: {exc}>"
        return out

    def describe(self) -> dict[str, Any]:
        """What is running: endpoint, API URLs, functions, schedules, alarms, warnings."""
        return {
            "emulator": self.emulator.kind if self.emulator else None,
            "endpoint_url": self.endpoint_url,
            "api_urls": {k: a.url for k, a in self.apis.items()},
            "functions": self.function_names(),
            "schedules": {s.name: s.schedule.expression for s in self._schedules},
            "alarms": sorted([*self.evaluator.alarms, *self.evaluator.composites]),
            "queues_polled": {
                p.queue_url.rsplit("/", 1)[-1]: p.function for p in self._pollers if p.kind == "sqs"
            },
            "warnings": self.warnings,
        }


@contextlib.contextmanager
def running(template_path: str | Path = "template.yaml", **kwargs: Any) -> Iterator[LocalRuntime]:
    """``with running("template.yaml") as rt:`` - the same as ``with LocalRuntime(...)``."""
    rt = LocalRuntime(template_path, **kwargs)
    with rt:
        yield rt


def unquote_key(key: str) -> str:
    """S3 notification keys are URL-encoded (spaces as '+'); decode as AWS documents."""
    from urllib.parse import unquote_plus

    return unquote_plus(key)
