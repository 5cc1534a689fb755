"""What every part of ``LocalRuntime`` shares: its state, the emulator clients, the resource table.

``LocalRuntime`` is composed of parts named by what they do: ``provisioning`` (resources from the
template), ``delivery`` (S3, SQS, SNS, EventBridge, schedules, HTTP), ``metrics`` (EMF metrics and
alarms) and ``logs`` (log subscription filters to Firehose). Each part is a mixin over
``RuntimeBase``; the state they share is declared here and created in ``LocalRuntime.__init__``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from shelfwise_local.runtime import logfilters
from shelfwise_local.runtime.alarms import AlarmEvaluator, RawStore, StateChange
from shelfwise_local.runtime.clock import Clock, Schedule
from shelfwise_local.runtime.emulator import Emulator
from shelfwise_local.runtime.functions import FunctionHost, Invocation
from shelfwise_local.runtime.httpapi import LocalHttpApi
from shelfwise_local.runtime.template import Resolver

log = logging.getLogger("shelfwise_local.runtime")

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class Resource:
    """A created resource: its Ref value and its GetAtt attributes."""

    logical_id: str
    type: str
    ref: Any
    attrs: dict[str, Any] = field(default_factory=dict)
    props: dict[str, Any] = field(default_factory=dict)
    emulated: bool = True


@dataclass
class RuleSchedule:
    name: str
    schedule: Schedule
    targets: list[dict[str, Any]]  # {"Arn":..., "Input":...}
    created: float
    next_fire: float | None
    kind: str = "events"  # "events" (EventBridge rule) or "scheduler" (EventBridge Scheduler)
    rule_arn: str = ""


@dataclass
class Poller:
    """An SQS queue the runtime reads: a function's event source, or an internal delivery queue."""

    kind: str  # "sqs" | "s3" | "sns" | "events"
    queue_url: str
    queue_arn: str
    function: str
    batch_size: int = 10
    report_failures: bool = False
    visibility_timeout: float = 30.0
    enabled: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PatternRule:
    name: str
    arn: str
    bus: str
    pattern: dict[str, Any]
    targets: list[dict[str, Any]]


@dataclass
class LogSubscription:
    """An ``AWS::Logs::SubscriptionFilter`` to a Firehose stream: which lines go where."""

    name: str
    log_group: str
    matches: logfilters.Matcher
    stream: str
    processors: list[str]  # the stream's processor types, in order
    extract_messages: bool  # CloudWatchLogProcessing with DataMessageExtraction=true


class RuntimeBase:
    """Shared state and the emulator clients of the runtime's parts."""

    # Declared here, created by LocalRuntime.__init__.
    template_path: Path
    backend: str
    clock: Clock
    parameters_in: dict[str, Any]
    stack_name: str
    region: str
    quiet: bool
    account_id: str
    emulator: Emulator | None
    template: dict[str, Any]
    resolver: Resolver
    resources: dict[str, Resource]
    warnings: list[str]
    apis: dict[str, LocalHttpApi]
    async_failures: list[Invocation]
    host: FunctionHost
    evaluator: AlarmEvaluator
    raw_metrics: RawStore
    _settle: float | None
    _api_port: int
    _clients: dict[str, Any]
    _lock: threading.RLock
    _started_at: float
    _next_alarm_eval: float | None
    _saved_env: dict[str, str | None]
    _schedules: list[RuleSchedule]
    _pollers: list[Poller]
    _pattern_rules: list[PatternRule]
    _redeliver: list[tuple[float, str, str]]
    _queues_by_arn: dict[str, tuple[str, float]]
    defer_metrics: bool
    _pending_metrics: list[tuple[str, dict[str, Any]]]
    _metrics_lock: threading.Lock
    _datapoint_cache: dict[tuple[Any, ...], tuple[float, float, int, list[float | None]]]
    _metric_index: int
    _metric_versions: dict[tuple[str, str], int]
    _subscriptions: list[LogSubscription]
    _log_batches: list[tuple[LogSubscription, list[dict[str, Any]]]]
    _log_lock: threading.Lock

    if TYPE_CHECKING:
        # What the parts call on each other (defined in provisioning, delivery, metrics, logs).
        def _queue_for_arn(self, arn: str) -> tuple[str, float]: ...
        def _invoke_async(self, function: str, event: Any, retries: int = 2) -> Invocation: ...
        def put_event(
            self, source: str, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None
        ) -> int: ...
        def flush_metrics(self) -> int: ...
        def flush_subscriptions(self) -> int: ...
        def _invoke_for_api(self, function: str, event: dict[str, Any]) -> Invocation: ...
        def _on_alarm_change(self, change: StateChange) -> None: ...
        def pump(self, max_rounds: int = 1000, *, settle: bool | float = True) -> int: ...

    @property
    def endpoint_url(self) -> str:
        assert self.emulator is not None, "runtime not started"
        return self.emulator.endpoint_url

    @property
    def settle(self) -> float:
        """Seconds to wait for asynchronous emulator deliveries (LocalStack's S3 -> SQS)."""
        if self._settle is not None:
            return self._settle
        return 0.0 if self.emulator is not None and self.emulator.kind == "moto" else 1.0

    def client(self, service: str) -> Any:
        """A boto3 client for the emulator (the runtime's own, independent of handler clients)."""
        if service not in self._clients:
            if "_session" not in self._clients:
                self._clients["_session"] = boto3.session.Session()
            self._clients[service] = self._clients["_session"].client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                config=Config(
                    retries={"mode": "standard", "max_attempts": 3}, s3={"addressing_style": "path"}
                ),
            )
        return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    def resource(self, logical_id: str) -> Resource:
        if logical_id not in self.resources:
            raise KeyError(f"no resource {logical_id!r} in {self.template_path.name}")
        return self.resources[logical_id]

    def physical_name(self, logical_id: str) -> str:
        """What ``!Ref <logical_id>`` gives (bucket name, queue URL, topic ARN, function name ...)."""
        return str(self.resource(logical_id).ref)

    def _bucket_name(self, bucket: str) -> str:
        res = self.resources.get(bucket)
        return str(res.ref) if res is not None else bucket

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)
