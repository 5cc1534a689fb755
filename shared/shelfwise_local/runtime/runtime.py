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

import base64
import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from shelfwise_local.runtime import logfilters, patterns
from shelfwise_local.runtime.alarms import (
    Alarm,
    AlarmConfigError,
    AlarmEvaluator,
    CompositeAlarm,
    MetricKey,
    RawStore,
    StateChange,
    metric_key,
    standard_or_percentile,
    statistic,
)
from shelfwise_local.runtime.clock import Clock, Schedule, iso
from shelfwise_local.runtime.emulator import Emulator
from shelfwise_local.runtime.functions import (
    FunctionError,
    FunctionHost,
    FunctionSpec,
    Invocation,
    emf_metrics,
)
from shelfwise_local.runtime.httpapi import LocalHttpApi, Route
from shelfwise_local.runtime.template import (
    Context,
    Resolver,
    TemplateError,
    apply_globals,
    creation_order,
    iter_function_events,
    load_template,
    parameter_values,
    physical_id,
)

log = logging.getLogger("shelfwise_local.runtime")

_FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_NO_OP_TYPES = {
    "AWS::Serverless::LayerVersion",
    "AWS::Lambda::LayerVersion",
    "AWS::Lambda::Permission",
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::CloudWatch::Dashboard",
    "AWS::Events::Archive",
    "AWS::Lambda::Version",
    "AWS::Lambda::Alias",
    "AWS::CodeDeploy::Application",
    "AWS::CodeDeploy::DeploymentGroup",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::Scheduler::ScheduleGroup",
    "AWS::Logs::MetricFilter",
    "AWS::ApiGatewayV2::Stage",
}

# Infrastructure with no local meaning (networking, log plumbing): known by name only, no warning.
_QUIET_PREFIXES = ("AWS::EC2::", "AWS::Logs::")


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
class _Schedule:
    name: str
    schedule: Schedule
    targets: list[dict[str, Any]]  # {"Arn":..., "Input":...}
    created: float
    next_fire: float | None
    kind: str = "events"  # "events" (EventBridge rule) or "scheduler" (EventBridge Scheduler)
    rule_arn: str = ""


@dataclass
class _Poller:
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
class _Subscription:
    """An ``AWS::Logs::SubscriptionFilter`` to a Firehose stream: which lines go where."""

    name: str
    log_group: str
    matches: logfilters.Matcher
    stream: str
    processors: list[str]  # the stream's processor types, in order
    extract_messages: bool  # CloudWatchLogProcessing with DataMessageExtraction=true


@dataclass
class _PatternRule:
    name: str
    arn: str
    bus: str
    pattern: dict[str, Any]
    targets: list[dict[str, Any]]


class LocalRuntime:
    """The template's stack, running locally. Use as a context manager (``start``/``close``)."""

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
        self._schedules: list[_Schedule] = []
        self._pollers: list[_Poller] = []
        self._pattern_rules: list[_PatternRule] = []
        self._subscriptions: list[_Subscription] = []
        # (subscription, log events) matched since the last delivery; delivered at the next pump
        self._log_batches: list[tuple[_Subscription, list[dict[str, Any]]]] = []
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

    # ------------------------------------------------------------------ lifecycle
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

    def _set_process_env(self) -> None:
        env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }
        for k, v in _FAKE_CREDENTIALS.items():
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
        }

    # ------------------------------------------------------------------ clients and helpers
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

    # ------------------------------------------------------------------ stack creation
    def _create_stack(self) -> None:
        template = apply_globals(load_template(self.template_path))
        self.template = template
        ctx = Context(
            self.stack_name,
            self.region,
            self.account_id,
            parameters=parameter_values(template, self.parameters_in),
        )
        self.resolver = Resolver(template, ctx, self._ref, self._get_att)
        resources: dict[str, Any] = template["Resources"]
        implicit = self._implicit_names(resources)
        if any(
            t == "HttpApi" and not p.get("ApiId")
            for spec in resources.values()
            if spec.get("Type") == "AWS::Serverless::Function"
            for _, t, p in iter_function_events(spec)
        ):
            self._create_http_api("ServerlessHttpApi", {})
        for lid in creation_order(resources, implicit):
            spec = resources[lid]
            cond = spec.get("Condition")
            if cond and not self.resolver.condition(cond):
                continue
            self._create(lid, spec)
        for lid, spec in resources.items():
            if lid in self.resources and spec.get("Type") == "AWS::Serverless::Function":
                self._wire_function_events(lid, spec)
        for api in self.apis.values():
            api.routes.sort(key=lambda r: r.specificity(), reverse=True)

    def _implicit_names(self, resources: dict[str, Any]) -> dict[str, str]:
        names: dict[str, str] = {}
        for lid, spec in resources.items():
            if spec.get("Type") == "AWS::Serverless::Function":
                alias = (spec.get("Properties") or {}).get("AutoPublishAlias")
                names[f"{lid}Role"] = lid
                if isinstance(alias, str):
                    names[f"{lid}Alias{alias}"] = lid
        names["ServerlessHttpApi"] = "ServerlessHttpApi"
        return names

    def _ref(self, name: str) -> Any:
        base, _, suffix = name.partition(".")
        if base in self.resources:
            res = self.resources[base]
            if suffix == "Alias":
                return f"{res.attrs['Arn']}:{res.attrs.get('Alias', 'live')}"
            if suffix == "Version":
                return f"{res.attrs['Arn']}:1"
            return res.ref
        for lid, res in self.resources.items():
            if res.type == "AWS::Serverless::Function" and name == f"{lid}Alias{res.attrs.get('Alias')}":
                return f"{res.attrs['Arn']}:{res.attrs['Alias']}"
            if res.type == "AWS::Serverless::Function" and name == f"{lid}Role":
                return f"{lid}-role"
        raise TemplateError(f"!Ref {name}: unknown resource, or referenced before it exists")

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        res = self.resources.get(logical_id)
        if res is None:
            if logical_id.endswith("Role"):
                return f"arn:aws:iam::{self.account_id}:role/{logical_id}"
            raise TemplateError(f"!GetAtt {logical_id}.{attribute}: unknown resource")
        if attribute not in res.attrs:
            raise TemplateError(
                f"!GetAtt {logical_id}.{attribute}: not available locally ({sorted(res.attrs)})"
            )
        return res.attrs[attribute]

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    def _create(self, lid: str, spec: dict[str, Any]) -> None:
        type_ = spec.get("Type", "")
        props = self.resolver.resolve(spec.get("Properties") or {})
        creator = getattr(self, "_create_" + type_.replace("::", "_").lower(), None)
        if creator is not None:
            res = creator(lid, props)
        else:
            if type_ not in _NO_OP_TYPES and not type_.startswith(_QUIET_PREFIXES):
                self._warn(f"{lid} ({type_}) is not emulated locally; only its name is known")
            res = Resource(lid, type_, physical_id(self.stack_name, lid), emulated=False)
            res.attrs["Arn"] = f"arn:aws:local:{self.region}:{self.account_id}:{lid}"
        res.type, res.props = type_, props
        self.resources[lid] = res

    # --- S3
    def _create_aws_s3_bucket(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("BucketName") or physical_id(self.stack_name, lid, lower=True, max_len=63)
        s3 = self.s3
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(**kwargs)
        if (props.get("VersioningConfiguration") or {}).get("Status"):
            s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]}
            )
        res = Resource(
            lid,
            "AWS::S3::Bucket",
            name,
            {
                "Arn": f"arn:aws:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
                "WebsiteURL": f"http://{name}.s3-website.{self.region}.amazonaws.com",
            },
        )
        notif = props.get("NotificationConfiguration") or {}
        config: dict[str, Any] = {}
        for q in notif.get("QueueConfigurations", []):
            config.setdefault("QueueConfigurations", []).append(
                {"QueueArn": q["Queue"], "Events": [q["Event"]], **_s3_filter(q.get("Filter"))}
            )
        for t in notif.get("TopicConfigurations", []):
            config.setdefault("TopicConfigurations", []).append(
                {"TopicArn": t["Topic"], "Events": [t["Event"]], **_s3_filter(t.get("Filter"))}
            )
        if config:
            s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration=config)
        for lc in notif.get("LambdaConfigurations", []):
            res.attrs.setdefault("_lambda_notifications", []).append(lc)
        if notif.get("EventBridgeConfiguration"):
            self._warn(f"{lid}: S3 -> EventBridge notifications are not emulated locally")
        return res

    def _add_s3_lambda_notification(self, bucket: str, function: str, events: list[str], flt: Any) -> None:
        """S3 -> Lambda, through an internal queue (neither emulator invokes Lambda itself)."""
        url, arn = self._internal_queue(f"s3-{bucket}-{function}")
        s3 = self.s3
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
        current.pop("ResponseMetadata", None)
        current.setdefault("QueueConfigurations", []).append(
            {"QueueArn": arn, "Events": events, **_s3_filter(flt)}
        )
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
        self._pollers.append(_Poller("s3", url, arn, function))

    # --- SQS
    def _create_aws_sqs_queue(self, lid: str, props: dict[str, Any]) -> Resource:
        fifo = bool(props.get("FifoQueue"))
        name = props.get("QueueName") or physical_id(self.stack_name, lid, max_len=75 if fifo else 80)
        if fifo and not name.endswith(".fifo"):
            name += ".fifo"
        attrs: dict[str, str] = {}
        for key in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "MaximumMessageSize",
            "ReceiveMessageWaitTimeSeconds",
            "ContentBasedDeduplication",
            "FifoQueue",
        ):
            if key in props:
                value = props[key]
                attrs[key] = str(value).lower() if isinstance(value, bool) else str(value)
        if "RedrivePolicy" in props:
            policy = props["RedrivePolicy"]
            attrs["RedrivePolicy"] = policy if isinstance(policy, str) else json.dumps(policy)
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self._queues_by_arn[arn] = (url, float(props.get("VisibilityTimeout", 30)))
        return Resource(lid, "AWS::SQS::Queue", url, {"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _internal_queue(self, purpose: str) -> tuple[str, str]:
        digest = hashlib.sha1(f"{self.stack_name}/{purpose}".encode()).hexdigest()[:10]
        name = f"{self.stack_name[:40]}-rt-{digest}"
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def _queue_for_arn(self, arn: str) -> tuple[str, float]:
        if arn in self._queues_by_arn:
            return self._queues_by_arn[arn]
        sqs = self.client("sqs")
        url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
        vt = float(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"][
                "VisibilityTimeout"
            ]
        )
        self._queues_by_arn[arn] = (url, vt)
        return url, vt

    # --- SNS
    def _create_aws_sns_topic(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("TopicName") or physical_id(self.stack_name, lid, max_len=256)
        attributes = {"FifoTopic": "true"} if props.get("FifoTopic") else {}
        arn = self.client("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
        res = Resource(lid, "AWS::SNS::Topic", arn, {"TopicArn": arn, "TopicName": name})
        for sub in props.get("Subscription", []):
            self._subscribe(arn, sub["Protocol"], sub["Endpoint"], {})
        return res

    def _create_aws_sns_subscription(self, lid: str, props: dict[str, Any]) -> Resource:
        extra = {k: props[k] for k in ("FilterPolicy", "RawMessageDelivery", "RedrivePolicy") if k in props}
        arn = self._subscribe(props["TopicArn"], props["Protocol"], props["Endpoint"], extra)
        return Resource(lid, "AWS::SNS::Subscription", arn, {"Arn": arn})

    def _subscribe(self, topic_arn: str, protocol: str, endpoint: str, extra: dict[str, Any]) -> str:
        attributes = {
            k: (json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in extra.items()
        }
        sns = self.client("sns")
        if protocol == "lambda":
            # SNS -> Lambda through an internal SQS subscription; the runtime unwraps it.
            function = endpoint
            url, qarn = self._internal_queue(f"sns-{topic_arn}-{function}")
            attributes.pop("RawMessageDelivery", None)
            sub = sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=qarn,
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )
            self._pollers.append(
                _Poller("sns", url, qarn, function, meta={"topic": topic_arn, "sub": sub["SubscriptionArn"]})
            )
            return str(sub["SubscriptionArn"])
        if protocol in {"sqs", "sns"}:
            sub = sns.subscribe(
                TopicArn=topic_arn,
                Protocol=protocol,
                Endpoint=endpoint,
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )
            return str(sub["SubscriptionArn"])
        self._warn(f"SNS subscription {protocol}:{endpoint} is not delivered locally")
        return f"{topic_arn}:{uuid.uuid4()}"

    # --- SSM, Secrets Manager
    def _create_aws_ssm_parameter(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("Name") or f"CFN-{physical_id(self.stack_name, lid)}"
        kwargs: dict[str, Any] = {
            "Name": name,
            "Value": str(props["Value"]),
            "Type": props.get("Type", "String"),
            "Overwrite": True,
        }
        if props.get("Description"):
            kwargs["Description"] = props["Description"]
        if props.get("AllowedPattern"):
            kwargs["AllowedPattern"] = props["AllowedPattern"]
        self.client("ssm").put_parameter(**kwargs)
        return Resource(lid, "AWS::SSM::Parameter", name, {"Type": kwargs["Type"], "Value": kwargs["Value"]})

    def _create_aws_secretsmanager_secret(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("Name") or physical_id(self.stack_name, lid)
        secret = props.get("SecretString")
        if secret is None:
            gen = props.get("GenerateSecretString") or {}
            value = base64.b32encode(os.urandom(20)).decode()[: int(gen.get("PasswordLength", 32))]
            template = gen.get("SecretStringTemplate")
            secret = (
                json.dumps({**json.loads(template), gen["GenerateStringKey"]: value}) if template else value
            )
        arn = self.client("secretsmanager").create_secret(Name=name, SecretString=secret)["ARN"]
        return Resource(lid, "AWS::SecretsManager::Secret", arn, {"Id": arn})

    # --- CloudWatch alarms
    def _create_aws_cloudwatch_alarm(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("AlarmName") or physical_id(self.stack_name, lid, max_len=255)
        arn = f"arn:aws:cloudwatch:{self.region}:{self.account_id}:alarm:{name}"
        alarm = Alarm(name, props, arn)
        try:
            self.evaluator.add(alarm)
        except AlarmConfigError as exc:
            self._warn(str(exc))
        api = {k: v for k, v in props.items() if k not in {"AlarmName", "Tags"}}
        # The runtime evaluates on its clock and performs the actions itself; the emulator's own
        # evaluator (LocalStack's runs on wall time) must not act as well.
        api["ActionsEnabled"] = False
        if "Threshold" in api:
            api["Threshold"] = float(api["Threshold"])
        try:
            self.client("cloudwatch").put_metric_alarm(AlarmName=name, **api)
        except Exception as exc:  # the emulator's copy is informational only
            self._warn(f"{lid}: emulator rejected the alarm definition ({exc}); evaluated locally only")
        return Resource(lid, "AWS::CloudWatch::Alarm", name, {"Arn": arn})

    def _create_aws_cloudwatch_compositealarm(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("AlarmName") or physical_id(self.stack_name, lid, max_len=255)
        arn = f"arn:aws:cloudwatch:{self.region}:{self.account_id}:alarm:{name}"
        self.evaluator.add_composite(CompositeAlarm(name, props, arn))
        return Resource(lid, "AWS::CloudWatch::CompositeAlarm", name, {"Arn": arn})

    # --- EventBridge
    def _create_aws_events_eventbus(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props["Name"]
        arn = self.client("events").create_event_bus(Name=name)["EventBusArn"]
        return Resource(lid, "AWS::Events::EventBus", name, {"Arn": arn, "Name": name})

    def _create_aws_events_rule(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("Name") or physical_id(self.stack_name, lid, max_len=64)
        bus = props.get("EventBusName", "default")
        bus_name = bus.rsplit("/", 1)[-1] if bus.startswith("arn:") else bus
        arn = f"arn:aws:events:{self.region}:{self.account_id}:rule/" + (
            name if bus_name == "default" else f"{bus_name}/{name}"
        )
        enabled = props.get("State", "ENABLED") == "ENABLED"
        targets = props.get("Targets", [])
        if "ScheduleExpression" in props and enabled:
            self._add_schedule(name, props["ScheduleExpression"], targets, "events", arn)
        if "EventPattern" in props:
            pattern = props["EventPattern"]
            pattern = json.loads(pattern) if isinstance(pattern, str) else pattern
            self._add_pattern_rule(name, arn, bus_name, pattern, targets, enabled)
        ref = name if bus_name == "default" else f"{bus_name}|{name}"
        return Resource(lid, "AWS::Events::Rule", ref, {"Arn": arn})

    def _add_pattern_rule(
        self,
        name: str,
        arn: str,
        bus: str,
        pattern: dict[str, Any],
        targets: list[dict[str, Any]],
        enabled: bool,
    ) -> None:
        events = self.client("events")
        events.put_rule(
            Name=name,
            EventBusName=bus,
            EventPattern=json.dumps(pattern),
            State="ENABLED" if enabled else "DISABLED",
        )
        api_targets = []
        for i, t in enumerate(targets):
            target = {k: t[k] for k in ("Input", "InputPath", "InputTransformer") if k in t}
            target["Id"] = str(t.get("Id") or f"t{i}")
            if ":lambda:" in t["Arn"]:
                url, qarn = self._internal_queue(f"rule-{bus}-{name}-{t['Arn']}")
                target["Arn"] = qarn
                self._pollers.append(
                    _Poller("events", url, qarn, t["Arn"], meta={"pattern": pattern, "rule": name})
                )
            else:
                target["Arn"] = t["Arn"]
            api_targets.append(target)
        if api_targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=api_targets)
        if enabled:
            self._pattern_rules.append(_PatternRule(name, arn, bus, pattern, targets))

    def _add_schedule(
        self, name: str, expression: str, targets: list[dict[str, Any]], kind: str, rule_arn: str = ""
    ) -> None:
        schedule = Schedule(expression)
        now = self.clock.now()
        self._schedules.append(
            _Schedule(name, schedule, targets, now, schedule.next_after(now, now), kind, rule_arn)
        )

    def _create_aws_scheduler_schedule(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("Name") or physical_id(self.stack_name, lid, max_len=64)
        if props.get("ScheduleExpressionTimezone", "UTC") != "UTC":
            self._warn(f"{lid}: schedules run in UTC locally")
        if props.get("State", "ENABLED") == "ENABLED":
            self._add_schedule(name, props["ScheduleExpression"], [props["Target"]], "scheduler")
        arn = f"arn:aws:scheduler:{self.region}:{self.account_id}:schedule/default/{name}"
        return Resource(lid, "AWS::Scheduler::Schedule", name, {"Arn": arn})

    # --- Firehose, DynamoDB
    def _create_aws_kinesisfirehose_deliverystream(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("DeliveryStreamName") or physical_id(self.stack_name, lid, max_len=64)
        kwargs: dict[str, Any] = {
            "DeliveryStreamName": name,
            "DeliveryStreamType": props.get("DeliveryStreamType", "DirectPut"),
        }
        for key in ("ExtendedS3DestinationConfiguration", "S3DestinationConfiguration"):
            if key in props:
                conf = dict(props[key])
                conf.setdefault("RoleARN", f"arn:aws:iam::{self.account_id}:role/firehose")
                kwargs[key] = conf
        if len(kwargs) == 2:
            self._warn(f"{lid}: only S3 destinations are emulated for Firehose")
        firehose = self.client("firehose")
        try:
            firehose.create_delivery_stream(**kwargs)
        except Exception as exc:
            # Some emulators reject newer options (dynamic partitioning ...): keep the S3 basics.
            conf = kwargs.pop("ExtendedS3DestinationConfiguration", None)
            if conf is None:
                raise
            basic = {
                k: conf[k]
                for k in (
                    "RoleARN",
                    "BucketARN",
                    "Prefix",
                    "ErrorOutputPrefix",
                    "BufferingHints",
                    "CompressionFormat",
                )
                if k in conf
            }
            self._warn(f"{lid}: emulator rejected part of the Firehose config ({exc}); using {sorted(basic)}")
            firehose.create_delivery_stream(**kwargs, ExtendedS3DestinationConfiguration=basic)
        arn = f"arn:aws:firehose:{self.region}:{self.account_id}:deliverystream/{name}"
        return Resource(lid, "AWS::KinesisFirehose::DeliveryStream", name, {"Arn": arn})

    # --- CloudWatch Logs: log groups by name, subscription filters to Firehose
    def _create_aws_logs_loggroup(self, lid: str, props: dict[str, Any]) -> Resource:
        # Nothing to create: a function's output is captured in process. The name matters, since
        # subscription filters name the log group they read (/aws/lambda/<function name>).
        name = props.get("LogGroupName") or physical_id(self.stack_name, lid)
        arn = f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{name}:*"
        return Resource(lid, "AWS::Logs::LogGroup", name, {"Arn": arn})

    def _create_aws_logs_subscriptionfilter(self, lid: str, props: dict[str, Any]) -> Resource:
        """Lines of the log group's function that match the pattern go to the Firehose stream.

        Delivered at the next pump (as Firehose delivers after its buffer interval), shaped as the
        stream's processors would leave them: with Decompression + CloudWatchLogProcessing
        (DataMessageExtraction) each message is one record (plus a newline with
        AppendDelimiterToRecord); otherwise the CloudWatch Logs envelope, gzip'd unless decompressed.
        """
        res = Resource(lid, "AWS::Logs::SubscriptionFilter", props.get("FilterName") or lid, {})
        group, pattern = str(props.get("LogGroupName", "")), str(props.get("FilterPattern", ""))
        dest = str(props.get("DestinationArn", ""))
        if ":firehose:" not in dest or "deliverystream/" not in dest:
            self._warn(
                f"{lid}: only Firehose destinations are emulated for subscription filters; {dest} gets nothing"
            )
            res.emulated = False
            return res
        try:
            matches = logfilters.compile_pattern(pattern)
        except logfilters.UnsupportedPatternError as exc:
            self._warn(f"{lid}: filter pattern not emulated ({exc}); no log events are delivered")
            res.emulated = False
            return res
        conf: dict[str, Any] = {}
        for r in self.resources.values():
            if r.type == "AWS::KinesisFirehose::DeliveryStream" and r.attrs.get("Arn") == dest:
                conf = r.props.get("ExtendedS3DestinationConfiguration") or {}
        processing = conf.get("ProcessingConfiguration") or {}
        enabled = str(processing.get("Enabled", True)).lower() != "false"
        processors = (processing.get("Processors") or []) if enabled else []
        types = [str(p.get("Type")) for p in processors]
        extract = any(
            p.get("Type") == "CloudWatchLogProcessing"
            and any(
                q.get("ParameterName") == "DataMessageExtraction"
                and str(q.get("ParameterValue")).lower() == "true"
                for q in p.get("Parameters") or []
            )
            for p in processors
        )
        stream = dest.rsplit("deliverystream/", 1)[1]
        self._subscriptions.append(_Subscription(res.ref, group, matches, stream, types, extract))
        return res

    def _on_output(self, spec: FunctionSpec, inv: Invocation) -> None:
        """A function's output lines -> the subscription filters of its log group."""
        group = f"/aws/lambda/{spec.name}"
        subs = [s for s in self._subscriptions if s.log_group == group]
        if not subs:
            return
        lines = inv.stdout.splitlines()
        ts = int(inv.started * 1000)
        for sub in subs:
            events = [
                {"id": f"{inv.request_id}-{i}", "timestamp": ts, "message": line}
                for i, line in enumerate(lines)
                if line.strip() and sub.matches(line)
            ]
            if events:
                with self._log_lock:
                    self._log_batches.append((sub, events))

    def flush_subscriptions(self) -> int:
        """Deliver the log events matched so far to their Firehose streams; returns records put."""
        with self._log_lock:
            batches, self._log_batches = self._log_batches, []
        if not batches:
            return 0
        by_stream: dict[str, list[bytes]] = {}
        for sub, events in batches:
            records = by_stream.setdefault(sub.stream, [])
            delimiter = b"\n" if "AppendDelimiterToRecord" in sub.processors else b""
            if sub.extract_messages and "Decompression" in sub.processors:
                records.extend(e["message"].encode("utf-8", "surrogatepass") + delimiter for e in events)
                continue
            envelope = json.dumps(
                {
                    "messageType": "DATA_MESSAGE",
                    "owner": self.account_id,
                    "logGroup": sub.log_group,
                    "logStream": "local/[$LATEST]shelfwise",
                    "subscriptionFilters": [sub.name],
                    "logEvents": events,
                }
            ).encode()
            records.append(
                envelope + delimiter if "Decompression" in sub.processors else gzip.compress(envelope)
            )
        firehose = self.client("firehose")
        put = 0
        for stream, records in by_stream.items():
            # PutRecordBatch limits: 500 records and 4 MiB per call.
            start = 0
            while start < len(records):
                end, size = start, 0
                while end < len(records) and end - start < 500 and size + len(records[end]) <= 4 << 20:
                    size += len(records[end])
                    end += 1
                end = max(end, start + 1)
                resp = firehose.put_record_batch(
                    DeliveryStreamName=stream, Records=[{"Data": r} for r in records[start:end]]
                )
                if resp.get("FailedPutCount"):
                    self._warn(f"subscription delivery to {stream}: {resp['FailedPutCount']} records failed")
                put += end - start
                start = end
        return put

    def _create_aws_dynamodb_table(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("TableName") or physical_id(self.stack_name, lid)
        keys = (
            "AttributeDefinitions",
            "KeySchema",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "StreamSpecification",
        )
        kwargs = {k: props[k] for k in keys if k in props}
        kwargs["BillingMode"] = props.get("BillingMode", "PAY_PER_REQUEST")
        if "ProvisionedThroughput" in props:
            kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        desc = self.client("dynamodb").create_table(TableName=name, **kwargs)["TableDescription"]
        return Resource(
            lid,
            "AWS::DynamoDB::Table",
            name,
            {"Arn": desc["TableArn"], "StreamArn": desc.get("LatestStreamArn", "")},
        )

    # --- HTTP API
    def _create_aws_serverless_httpapi(self, lid: str, props: dict[str, Any]) -> Resource:
        return self._create_http_api(lid, props)

    def _create_http_api(self, lid: str, props: dict[str, Any]) -> Resource:
        api_id = hashlib.sha1(f"{self.stack_name}/{lid}".encode()).hexdigest()[:10]
        port = self._api_port if not self.apis else 0
        api = LocalHttpApi(api_id, [], self._invoke_for_api, self.account_id, self.clock.now, port=port)
        self.apis[lid] = api
        res = Resource(lid, "AWS::Serverless::HttpApi", api_id, {"ApiEndpoint": api.url, "ApiId": api_id})
        self.resources[lid] = res
        return res

    def _invoke_for_api(self, function: str, event: dict[str, Any]) -> Invocation:
        return self.host.invoke(function, event)

    # --- functions
    def _create_aws_serverless_function(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("FunctionName") or physical_id(self.stack_name, lid, max_len=64)
        arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
        if "InlineCode" in props:
            raise TemplateError(f"{lid}: InlineCode functions are not supported by the local runtime")
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{lid}: CodeUri must be a local folder")
        variables = ((props.get("Environment") or {}).get("Variables")) or {}
        env = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in variables.items()}
        spec = FunctionSpec(
            logical_id=lid,
            name=name,
            arn=arn,
            code_dir=(self.template_path.parent / code_uri).resolve(),
            handler=str(props.get("Handler", "app.lambda_handler")),
            timeout=float(props.get("Timeout", 3)),
            memory=int(props.get("MemorySize", 128)),
            environment=env,
            properties=props,
        )
        self.host.add(spec)
        attrs: dict[str, Any] = {"Arn": arn}
        if props.get("AutoPublishAlias"):
            attrs["Alias"] = props["AutoPublishAlias"]
        return Resource(lid, "AWS::Serverless::Function", name, attrs)

    def _create_aws_lambda_eventsourcemapping(self, lid: str, props: dict[str, Any]) -> Resource:
        source = str(props["EventSourceArn"])
        if ":sqs:" not in source:
            self._warn(f"{lid}: only SQS event source mappings are delivered locally")
        else:
            url, vt = self._queue_for_arn(source)
            self._pollers.append(
                _Poller(
                    "sqs",
                    url,
                    source,
                    str(props["FunctionName"]),
                    batch_size=int(props.get("BatchSize", 10)),
                    report_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                    visibility_timeout=vt,
                    enabled=bool(props.get("Enabled", True)),
                )
            )
        return Resource(lid, "AWS::Lambda::EventSourceMapping", str(uuid.uuid4()))

    def _wire_function_events(self, lid: str, spec: dict[str, Any]) -> None:
        fn = self.resources[lid]
        fn_arn = str(fn.attrs["Arn"])
        for event_name, type_, raw in iter_function_events(spec):
            p = self.resolver.resolve(raw)
            if type_ == "SQS":
                url, vt = self._queue_for_arn(str(p["Queue"]))
                self._pollers.append(
                    _Poller(
                        "sqs",
                        url,
                        str(p["Queue"]),
                        lid,
                        batch_size=int(p.get("BatchSize", 10)),
                        report_failures="ReportBatchItemFailures" in p.get("FunctionResponseTypes", []),
                        visibility_timeout=vt,
                        enabled=bool(p.get("Enabled", True)),
                    )
                )
            elif type_ == "S3":
                events = p["Events"] if isinstance(p["Events"], list) else [p["Events"]]
                self._add_s3_lambda_notification(str(p["Bucket"]), lid, events, p.get("Filter"))
            elif type_ == "SNS":
                extra = {"FilterPolicy": p["FilterPolicy"]} if "FilterPolicy" in p else {}
                self._subscribe(str(p["Topic"]), "lambda", lid, extra)
            elif type_ in {"Schedule", "ScheduleV2"}:
                expr = p.get("Schedule") or p.get("ScheduleExpression")
                enabled = p.get("Enabled", True) and p.get("State", "ENABLED") == "ENABLED"
                if enabled:
                    target = {"Arn": fn_arn, **({"Input": p["Input"]} if "Input" in p else {})}
                    name = p.get("Name") or f"{lid}{event_name}"
                    rule_arn = f"arn:aws:events:{self.region}:{self.account_id}:rule/{name}"
                    self._add_schedule(
                        name, str(expr), [target], "events" if type_ == "Schedule" else "scheduler", rule_arn
                    )
            elif type_ in {"EventBridgeRule", "CloudWatchEvent"}:
                name = p.get("RuleName") or physical_id(self.stack_name, f"{lid}{event_name}", max_len=64)
                bus = p.get("EventBusName", "default")
                arn = f"arn:aws:events:{self.region}:{self.account_id}:rule/{name}"
                target = {"Arn": fn_arn, "Id": f"{lid}{event_name}Target"}
                target.update({k: p[k] for k in ("Input", "InputPath", "InputTransformer") if k in p})
                enabled = p.get("State", "ENABLED") == "ENABLED" and p.get("Enabled", True)
                self._add_pattern_rule(name, arn, bus, p["Pattern"], [target], enabled)
            elif type_ == "HttpApi":
                api_lid = "ServerlessHttpApi"
                if p.get("ApiId"):
                    api_lid = next(
                        k for k, r in self.resources.items() if r.ref == p["ApiId"] and k in self.apis
                    )
                path, method = p.get("Path", "$default"), str(p.get("Method", "ANY")).upper()
                route = Route(
                    "ANY" if method in {"ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD"} else method, path, lid
                )
                route.payload_version = str(p.get("PayloadFormatVersion", "2.0"))
                if route.payload_version != "2.0":
                    self._warn(f"{lid}.{event_name}: payload format {route.payload_version} served as 2.0")
                self.apis[api_lid].routes.append(route)
            else:
                self._warn(f"{lid}.{event_name}: event source type {type_} is not delivered locally")

    # ------------------------------------------------------------------ delivery
    def pump(self, max_rounds: int = 1000, *, settle: bool | float = True) -> int:
        """Deliver everything pending now: queue messages and notifications; returns the count.

        An emulator that delivers asynchronously (LocalStack's S3 -> SQS, SNS -> SQS, EventBridge
        -> SQS) may not show a message yet: with ``settle``, a quiet round is re-polled for up to
        ``self.settle`` seconds (or the float given) before the pump calls it done.
        """
        window = self.settle if settle is True else float(settle or 0.0)
        delivered = 0
        with self._lock:
            self.flush_metrics()
            self.flush_subscriptions()
            for _ in range(max_rounds):
                self._release_redeliveries()
                n = self._poll_all()
                deadline = time.monotonic() + window
                while not n and time.monotonic() < deadline:
                    time.sleep(min(0.2, window))
                    n = self._poll_all()
                delivered += n
                if not n:
                    break
        return delivered

    def advance(self, seconds: float) -> int:
        """Move the clock forward, firing schedules, alarm evaluations and redeliveries in order."""
        with self._lock:
            return self._run_until(self.clock.now() + seconds)

    def run_pending(self) -> int:
        """Everything due up to the clock's current time (``local up`` calls this every second)."""
        with self._lock:
            return self._run_until(self.clock.now())

    def _run_until(self, target: float) -> int:
        count = self.pump()
        while True:
            due = self._next_due()
            if due is None or due > target:
                break
            if not self.clock.follow_wall:
                self.clock.set(max(due, self.clock.now()))
            fired = self._fire_due(due)
            redelivered = self._release_redeliveries()
            # Only work done (a schedule fired, an alarm changed, a message released) can have
            # queued something; an alarm round without changes leaves nothing to deliver.
            if fired or redelivered:
                count += fired + self.pump(settle=min(self.settle, 0.5))
        if not self.clock.follow_wall and target > self.clock.now():
            self.clock.set(target)
        return count + self.pump(settle=False)

    def _next_due(self) -> float | None:
        times = [s.next_fire for s in self._schedules if s.next_fire is not None]
        times += [t for t, _, _ in self._redeliver]
        if (self.evaluator.alarms or self.evaluator.composites) and self._next_alarm_eval is not None:
            times.append(self._next_alarm_eval)
        return min(times) if times else None

    def _fire_due(self, due: float) -> int:
        count = 0
        for s in sorted(self._schedules, key=lambda s: s.next_fire or 0):
            if s.next_fire is not None and s.next_fire <= due:
                fired_at = s.next_fire
                s.next_fire = s.schedule.next_after(fired_at, s.created)
                for target in s.targets:
                    self._deliver_scheduled(s, target, fired_at)
                    count += 1
        if self._next_alarm_eval is not None and self._next_alarm_eval <= due:
            self.flush_metrics()
            t = self._next_alarm_eval
            self._next_alarm_eval = t + 60.0
            for change in self.evaluator.evaluate(t):
                self._on_alarm_change(change)
                count += 1
        return count

    def _deliver_scheduled(self, s: _Schedule, target: dict[str, Any], at: float) -> None:
        if "Input" in target:
            event = target["Input"]
            event = json.loads(event) if isinstance(event, str) else event
        elif s.kind == "scheduler":
            event = {}
        else:
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": self.account_id,
                "time": iso(at),
                "region": self.region,
                "resources": [s.rule_arn],
                "detail": {},
            }
        self._deliver_to_target(target["Arn"], event)

    def _deliver_to_target(self, arn: str, event: Any) -> None:
        if ":lambda:" in arn:
            self._invoke_async(arn, event)
        elif ":sqs:" in arn:
            url, _ = self._queue_for_arn(arn)
            self.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(event))
        elif ":sns:" in arn:
            self.client("sns").publish(TopicArn=arn, Message=json.dumps(event))
        else:
            self._warn(f"target {arn} is not delivered locally")

    def _invoke_async(self, function: str, event: Any, retries: int = 2) -> Invocation:
        """An asynchronous invocation: Lambda retries a failed one twice, then drops it."""
        inv = self.host.invoke(function, event)
        for _ in range(retries):
            if inv.ok:
                break
            inv = self.host.invoke(function, event)
        if not inv.ok:
            self.async_failures.append(inv)
            log.warning("async invocation of %s failed: %s", function, inv.error)
        return inv

    def _release_redeliveries(self) -> int:
        now = self.clock.now()
        due = [r for r in self._redeliver if r[0] <= now]
        self._redeliver = [r for r in self._redeliver if r[0] > now]
        sqs = self.client("sqs")
        for _, url, handle in due:
            with contextlib.suppress(Exception):  # a handle may be stale if the emulator redelivered
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        return len(due)

    def _poll_all(self) -> int:
        count = 0
        for poller in list(self._pollers):
            if poller.enabled:
                count += self._poll(poller)
        return count

    def _receive(self, url: str, limit: int) -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        messages: list[dict[str, Any]] = []
        while len(messages) < limit:
            resp = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, limit - len(messages)),
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch = resp.get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        return messages

    def _poll(self, p: _Poller) -> int:
        messages = self._receive(p.queue_url, p.batch_size if p.kind == "sqs" else 10)
        if not messages:
            return 0
        sqs = self.client("sqs")
        if p.kind == "sqs":
            self._deliver_sqs_batch(p, messages)
            return len(messages)
        for m in messages:
            body = json.loads(m["Body"])
            if p.kind == "s3":
                if body.get("Event") == "s3:TestEvent":
                    pass  # AWS sends the test event to queues only, never to a function
                else:
                    self._invoke_async(p.function, body)
            elif p.kind == "sns":
                self._invoke_async(p.function, self._sns_event(body, p))
            elif p.kind == "events":
                if patterns.matches(p.meta["pattern"], body):
                    self._invoke_async(p.function, body)
                else:
                    log.warning(
                        "emulator routed an event that does not match rule %s; dropped", p.meta["rule"]
                    )
            sqs.delete_message(QueueUrl=p.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)

    def _deliver_sqs_batch(self, p: _Poller, messages: list[dict[str, Any]]) -> None:
        """An SQS event source mapping: one batch, then delete / keep per the response."""
        records = [self._sqs_record(m, p.queue_arn) for m in messages]
        inv = self.host.invoke(p.function, {"Records": records})
        sqs = self.client("sqs")
        by_id = {m["MessageId"]: m for m in messages}
        failed: set[str]
        if not inv.ok:
            failed = set(by_id)
        elif p.report_failures and isinstance(inv.payload, dict) and inv.payload.get("batchItemFailures"):
            ids = [
                f.get("itemIdentifier") if isinstance(f, dict) else None
                for f in inv.payload["batchItemFailures"]
            ]
            # An empty or unknown identifier fails the whole batch, as Lambda does.
            failed = set(by_id) if any(i not in by_id for i in ids) else set(ids)  # type: ignore[arg-type]
        else:
            failed = set()
        ok = [m for mid, m in by_id.items() if mid not in failed]
        for i in range(0, len(ok), 10):
            chunk = ok[i : i + 10]
            sqs.delete_message_batch(
                QueueUrl=p.queue_url,
                Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(chunk)],
            )
        when = self.clock.now() + p.visibility_timeout
        for mid in failed:
            self._redeliver.append((when, p.queue_url, by_id[mid]["ReceiptHandle"]))

    def _sqs_record(self, m: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        attrs = {k: v for k, v in m.get("Attributes", {}).items()}
        msg_attrs = {}
        for k, v in (m.get("MessageAttributes") or {}).items():
            msg_attrs[k] = {
                "stringValue": v.get("StringValue"),
                "binaryValue": base64.b64encode(v["BinaryValue"]).decode() if "BinaryValue" in v else None,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": v.get("DataType"),
            }
        return {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": attrs,
            "messageAttributes": msg_attrs,
            "md5OfBody": m.get("MD5OfBody", hashlib.md5(m["Body"].encode()).hexdigest()),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": self.region,
        }

    def _sns_event(self, envelope: dict[str, Any], p: _Poller) -> dict[str, Any]:
        attrs = {
            k: {"Type": v.get("Type"), "Value": v.get("Value")}
            for k, v in (envelope.get("MessageAttributes") or {}).items()
        }
        return {
            "Records": [
                {
                    "EventSource": "aws:sns",
                    "EventVersion": "1.0",
                    "EventSubscriptionArn": p.meta["sub"],
                    "Sns": {
                        "Type": envelope.get("Type", "Notification"),
                        "MessageId": envelope.get("MessageId", str(uuid.uuid4())),
                        "TopicArn": envelope.get("TopicArn", p.meta["topic"]),
                        "Subject": envelope.get("Subject"),
                        "Message": envelope.get("Message", ""),
                        "Timestamp": envelope.get("Timestamp", iso(self.clock.now())),
                        "SignatureVersion": envelope.get("SignatureVersion", "1"),
                        "Signature": envelope.get("Signature", "local"),
                        "SigningCertUrl": envelope.get("SigningCertURL", ""),
                        "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                        "MessageAttributes": attrs,
                    },
                }
            ]
        }

    # ------------------------------------------------------------------ EventBridge (runtime events)
    def put_event(
        self, source: str, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None
    ) -> int:
        """Publish an AWS-originated event (e.g. an alarm state change) to the default bus's rules.

        Matching is the runtime's own (emulators refuse or ignore ``aws.*`` sources); returns the
        number of targets it reached.
        """
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self.account_id,
            "time": iso(self.clock.now()),
            "region": self.region,
            "resources": resources or [],
            "detail": detail,
        }
        reached = 0
        for rule in self._pattern_rules:
            if rule.bus == "default" and patterns.matches(rule.pattern, event):
                for t in rule.targets:
                    payload = json.loads(t["Input"]) if "Input" in t else event
                    self._deliver_to_target(str(t["Arn"]), payload)
                    reached += 1
        return reached

    # ------------------------------------------------------------------ metrics and alarms
    def _on_emf(self, inv: Invocation, docs: list[dict[str, Any]]) -> None:
        """EMF lines -> metrics, as CloudWatch Logs does, stamped on the runtime's clock."""
        wall_start = time.time() - inv.duration_ms / 1000
        datums: list[tuple[str, dict[str, Any]]] = []
        for doc in docs:
            for m in emf_metrics(doc):
                ts = m["Timestamp"] / 1000 if m["Timestamp"] else wall_start
                at = inv.started + max(0.0, ts - wall_start)
                vals = [float(v) for v in m["Values"]]
                dims = m["Dimensions"] or []
                key = metric_key(m["Namespace"], m["MetricName"], dims)
                for v in vals:
                    self.raw_metrics.add(key, at, v)
                datums.append(
                    (
                        m["Namespace"],
                        {
                            "MetricName": m["MetricName"],
                            "Dimensions": dims,
                            "at": at,
                            "Values": vals,
                            "Unit": m["Unit"],
                        },
                    )
                )
        with self._metrics_lock:
            self._pending_metrics.extend(datums)
        if not self.defer_metrics:
            self.flush_metrics()

    def flush_metrics(self) -> int:
        """Publish buffered EMF metrics; returns the PutMetricData calls made.

        Values of one series within one second are sent pre-aggregated (``StatisticValues``:
        SampleCount, Sum, Minimum, Maximum), as a client would batch them; the standard statistics
        alarms read are unchanged, and percentiles come from the raw values the runtime keeps.
        At most 1,000 datums per call.
        """
        with self._metrics_lock:
            pending, self._pending_metrics = self._pending_metrics, []
        if not pending:
            return 0
        merged: dict[tuple[Any, ...], list[float]] = {}
        for ns, d in pending:
            dims = tuple((x["Name"], x["Value"]) for x in d["Dimensions"])
            merged.setdefault((ns, d["MetricName"], dims, math.floor(d["at"]), d["Unit"]), []).extend(
                d["Values"]
            )
        by_ns: dict[str, list[dict[str, Any]]] = {}
        for (ns, name, dims, at, unit), vals in merged.items():
            if not vals:
                continue
            by_ns.setdefault(ns, []).append(
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                    "Timestamp": datetime.fromtimestamp(at, tz=UTC),
                    "StatisticValues": {
                        "SampleCount": float(len(vals)),
                        "Sum": float(sum(vals)),
                        "Minimum": float(min(vals)),
                        "Maximum": float(max(vals)),
                    },
                    "Unit": unit,
                }
            )
        cw = self.client("cloudwatch")
        calls = 0
        for ns, data in by_ns.items():
            for i in range(0, len(data), 1000):
                cw.put_metric_data(Namespace=ns, MetricData=data[i : i + 1000])
                calls += 1
        return calls

    def put_metric(
        self,
        namespace: str,
        name: str,
        values: float | list[float],
        dimensions: dict[str, str] | list[dict[str, str]] | None = None,
        *,
        timestamp: float | None = None,
        unit: str = "None",
    ) -> None:
        """PutMetricData to the emulator and keep the raw values (percentiles need them)."""
        vals = [float(v) for v in (values if isinstance(values, list) else [values])]
        dims = dimensions or []
        if isinstance(dims, dict):
            dims = [{"Name": k, "Value": str(v)} for k, v in dims.items()]
        at = self.clock.now() if timestamp is None else timestamp
        key = metric_key(namespace, name, dims)
        for v in vals:
            self.raw_metrics.add(key, at, v)
        cw = self.client("cloudwatch")
        for i in range(0, len(vals), 150):
            datum: dict[str, Any] = {
                "MetricName": name,
                "Dimensions": dims,
                "Timestamp": datetime.fromtimestamp(at, tz=UTC),
                "Values": vals[i : i + 150],
                "Unit": unit,
            }
            cw.put_metric_data(Namespace=namespace, MetricData=[datum])

    def _datapoints(
        self, key: MetricKey, stat: str, start: float, end: float, period: int
    ) -> list[float | None]:
        n = round((end - start) / period)
        if standard_or_percentile(stat) == "raw":
            return [
                statistic(self.raw_metrics.values(key, start + i * period, start + (i + 1) * period), stat)
                for i in range(n)
            ]
        namespace, name, dims = key
        # Alarms are evaluated every minute but a period-300 alarm asks for the same complete
        # periods five times in a row: with embedded moto, the answer can only change when data
        # of that metric (any dimensions) was put since, so the last query answers until then
        # (AWS/* metrics are computed by moto on the fly and always queried).
        version = None if namespace.startswith("AWS/") else self._metric_version(namespace, name)
        cache_key = (key, stat, period)
        cached = self._datapoint_cache.get(cache_key)
        if version is not None and cached is not None and cached[:3] == (start, end, version):
            return list(cached[3])
        resp = self.client("cloudwatch").get_metric_statistics(
            Namespace=namespace,
            MetricName=name,
            Dimensions=[{"Name": k, "Value": v} for k, v in dims],
            StartTime=datetime.fromtimestamp(start, tz=UTC),
            EndTime=datetime.fromtimestamp(end, tz=UTC),
            Period=period,
            Statistics=[stat],
        )
        out: list[float | None] = [None] * n
        for dp in resp.get("Datapoints", []):
            i = int((dp["Timestamp"].timestamp() - start) // period)
            if 0 <= i < n and stat in dp:
                out[i] = float(dp[stat])
        if version is not None:
            self._datapoint_cache[cache_key] = (start, end, version, list(out))
        return out

    def _metric_version(self, namespace: str, name: str) -> int | None:
        """How many times data of this metric was seen put (None: the emulator cannot tell)."""
        seen = (
            self.emulator.metric_names_put_since(self.account_id, self.region, self._metric_index)
            if self.emulator
            else None
        )
        if seen is None:
            return None
        self._metric_index, names = seen
        for n in names:
            self._metric_versions[n] = self._metric_versions.get(n, 0) + 1
        return self._metric_versions.get((namespace, name), 0)

    def _on_alarm_change(self, change: StateChange) -> None:
        alarm: Alarm | CompositeAlarm = (
            self.evaluator.alarms.get(change.alarm_name) or self.evaluator.composites[change.alarm_name]
        )
        props = alarm.props
        with contextlib.suppress(Exception):
            self.client("cloudwatch").set_alarm_state(
                AlarmName=alarm.name, StateValue=change.new_state, StateReason=change.reason[:1023]
            )
        actions_key = {
            "ALARM": "AlarmActions",
            "OK": "OKActions",
            "INSUFFICIENT_DATA": "InsufficientDataActions",
        }[change.new_state]
        if props.get("ActionsEnabled", True):
            message = self._alarm_sns_message(alarm, change)
            for arn in props.get(actions_key, []):
                if ":sns:" in arn:
                    subject = f'{change.new_state}: "{alarm.name}" in {self.region}'[:100]
                    self.client("sns").publish(TopicArn=arn, Subject=subject, Message=json.dumps(message))
                elif ":lambda:" in arn:
                    self._invoke_async(
                        arn, {"source": "aws.cloudwatch", "alarmArn": alarm.arn, "alarmData": message}
                    )
                else:
                    self._warn(f"alarm action {arn} is not performed locally")
        self.put_event(
            "aws.cloudwatch",
            "CloudWatch Alarm State Change",
            self._alarm_event_detail(alarm, change),
            [alarm.arn],
        )

    def _alarm_sns_message(self, alarm: Alarm | CompositeAlarm, change: StateChange) -> dict[str, Any]:
        p = alarm.props
        if isinstance(alarm, CompositeAlarm):
            return self._composite_sns_message(alarm, change)
        trigger: dict[str, Any] = {
            "Period": alarm.period,
            "EvaluationPeriods": alarm.evaluation_periods,
            "DatapointsToAlarm": alarm.datapoints_to_alarm,
            "ComparisonOperator": p.get("ComparisonOperator"),
            "Threshold": float(p.get("Threshold", 0)),
            "TreatMissingData": alarm.treat_missing,
            "EvaluateLowSampleCountPercentile": p.get("EvaluateLowSampleCountPercentile", ""),
        }
        if "MetricName" in p:
            trigger.update(
                {
                    "MetricName": p["MetricName"],
                    "Namespace": p["Namespace"],
                    "StatisticType": "ExtendedStatistic" if "ExtendedStatistic" in p else "Statistic",
                    "Statistic": str(p.get("ExtendedStatistic") or p.get("Statistic", "")).upper(),
                    "Unit": p.get("Unit"),
                    "Dimensions": [{"value": d["Value"], "name": d["Name"]} for d in p.get("Dimensions", [])],
                }
            )
        else:
            trigger["Metrics"] = p.get("Metrics", [])
        return {
            "AlarmName": alarm.name,
            "AlarmDescription": p.get("AlarmDescription"),
            "AWSAccountId": self.account_id,
            "AlarmConfigurationUpdatedTimestamp": iso(self._started_at),
            "NewStateValue": change.new_state,
            "NewStateReason": change.reason,
            "StateChangeTime": iso(change.timestamp),
            "Region": self.region,
            "AlarmArn": alarm.arn,
            "OldStateValue": change.old_state,
            "OKActions": p.get("OKActions", []),
            "AlarmActions": p.get("AlarmActions", []),
            "InsufficientDataActions": p.get("InsufficientDataActions", []),
            "Trigger": trigger,
        }

    def _composite_sns_message(self, alarm: CompositeAlarm, change: StateChange) -> dict[str, Any]:
        p = alarm.props
        return {
            "AlarmName": alarm.name,
            "AlarmDescription": p.get("AlarmDescription"),
            "AWSAccountId": self.account_id,
            "NewStateValue": change.new_state,
            "NewStateReason": change.reason,
            "StateChangeTime": iso(change.timestamp),
            "Region": self.region,
            "AlarmArn": alarm.arn,
            "OldStateValue": change.old_state,
            "AlarmRule": p.get("AlarmRule"),
            "OKActions": p.get("OKActions", []),
            "AlarmActions": p.get("AlarmActions", []),
            "InsufficientDataActions": p.get("InsufficientDataActions", []),
        }

    def _alarm_event_detail(self, alarm: Alarm | CompositeAlarm, change: StateChange) -> dict[str, Any]:
        p = alarm.props
        metrics: list[dict[str, Any]]
        if isinstance(alarm, CompositeAlarm):
            metrics = []
        elif "Metrics" in p:
            metrics = [
                {
                    "id": m["Id"],
                    **({"expression": m["Expression"]} if "Expression" in m else {}),
                    **(
                        {
                            "metricStat": {
                                "metric": {
                                    "namespace": m["MetricStat"]["Metric"]["Namespace"],
                                    "name": m["MetricStat"]["Metric"]["MetricName"],
                                    "dimensions": {
                                        d["Name"]: d["Value"]
                                        for d in m["MetricStat"]["Metric"].get("Dimensions", [])
                                    },
                                },
                                "period": m["MetricStat"]["Period"],
                                "stat": m["MetricStat"]["Stat"],
                            }
                        }
                        if "MetricStat" in m
                        else {}
                    ),
                    "returnData": m.get("ReturnData", True),
                }
                for m in p["Metrics"]
            ]
        else:
            metrics = [
                {
                    "id": "m1",
                    "metricStat": {
                        "metric": {
                            "namespace": p.get("Namespace"),
                            "name": p.get("MetricName"),
                            "dimensions": {d["Name"]: d["Value"] for d in p.get("Dimensions", [])},
                        },
                        "period": alarm.period,
                        "stat": p.get("ExtendedStatistic") or p.get("Statistic"),
                    },
                    "returnData": True,
                }
            ]
        reason_data = json.dumps(
            {"version": "1.0", "evaluatedDatapoints": [v for v in change.datapoints if v is not None]}
        )
        previous_time = alarm.history[-2].timestamp if len(alarm.history) > 1 else self._started_at
        return {
            "alarmName": alarm.name,
            "state": {
                "value": change.new_state,
                "reason": change.reason,
                "reasonData": reason_data,
                "timestamp": iso(change.timestamp),
            },
            "previousState": {"value": change.old_state, "timestamp": iso(previous_time)},
            "configuration": {"description": p.get("AlarmDescription", ""), "metrics": metrics},
        }

    def alarm_history(self, alarm: str | None = None) -> list[dict[str, Any]]:
        """State transitions the runtime evaluated, oldest first (optionally of one alarm)."""
        names = None
        if alarm is not None:
            names = {self.physical_name(alarm) if alarm in self.resources else alarm}
        every: list[Alarm | CompositeAlarm] = [
            *self.evaluator.alarms.values(),
            *self.evaluator.composites.values(),
        ]
        changes = [c for a in every for c in a.history if names is None or a.name in names]
        return [c.as_dict() for c in sorted(changes, key=lambda c: c.timestamp)]

    def alarm_state(self, alarm: str) -> str:
        name = self.physical_name(alarm) if alarm in self.resources else alarm
        return self.evaluator.state_of(name)

    # ------------------------------------------------------------------ outputs, description
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


def _s3_filter(flt: Any) -> dict[str, Any]:
    """CloudFormation's ``Filter.S3Key.Rules`` -> the API's ``Filter.Key.FilterRules``."""
    if not flt:
        return {}
    rules = (flt.get("S3Key") or {}).get("Rules") or []
    return {"Filter": {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}}


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
