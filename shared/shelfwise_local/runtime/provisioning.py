"""Provisioning: the template's resources created on the emulator in dependency order, and every
function event source wired to a delivery path (see ``delivery``).

``_create`` dispatches on the resource type to ``_create_<type>`` (``AWS::S3::Bucket`` ->
``_create_aws_s3_bucket``); a type without a creator is known by name only, with a warning.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import uuid
from typing import Any

from shelfwise_local.runtime.alarms import Alarm, AlarmConfigError, CompositeAlarm
from shelfwise_local.runtime.base import PatternRule, Poller, Resource, RuleSchedule, RuntimeBase
from shelfwise_local.runtime.clock import Schedule
from shelfwise_local.runtime.functions import FunctionSpec
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


class Provisioning(RuntimeBase):
    """Creates the template's resources and wires function events."""

    # --- the stack
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
        self._pollers.append(Poller("s3", url, arn, function))

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
                Poller("sns", url, qarn, function, meta={"topic": topic_arn, "sub": sub["SubscriptionArn"]})
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

    # --- CloudWatch alarms (evaluated by the metrics part)
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

    # --- EventBridge, EventBridge Scheduler
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
            target: dict[str, Any] = {"Id": str(t.get("Id") or f"t{i}")}
            if ":lambda:" in t["Arn"]:
                # The emulator routes the event as it is; the runtime builds the function's input
                # (Input, InputPath, InputTransformer) after its own match, the same on every emulator.
                url, qarn = self._internal_queue(f"rule-{bus}-{name}-{t['Arn']}")
                target["Arn"] = qarn
                meta = {"pattern": pattern, "rule": name, "arn": arn, "target": t}
                self._pollers.append(Poller("events", url, qarn, t["Arn"], meta=meta))
            else:
                target.update({k: t[k] for k in ("Arn", "Input", "InputPath", "InputTransformer") if k in t})
            api_targets.append(target)
        if api_targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=api_targets)
        if enabled:
            self._pattern_rules.append(PatternRule(name, arn, bus, pattern, targets))

    def _add_schedule(
        self, name: str, expression: str, targets: list[dict[str, Any]], kind: str, rule_arn: str = ""
    ) -> None:
        schedule = Schedule(expression)
        now = self.clock.now()
        self._schedules.append(
            RuleSchedule(name, schedule, targets, now, schedule.next_after(now, now), kind, rule_arn)
        )

    def _create_aws_scheduler_schedule(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("Name") or physical_id(self.stack_name, lid, max_len=64)
        if props.get("ScheduleExpressionTimezone", "UTC") != "UTC":
            self._warn(f"{lid}: schedules run in UTC locally")
        arn = self._schedule_arn(name, props.get("GroupName"))
        if props.get("State", "ENABLED") == "ENABLED":
            self._add_schedule(name, props["ScheduleExpression"], [props["Target"]], "scheduler", arn)
        return Resource(lid, "AWS::Scheduler::Schedule", name, {"Arn": arn})

    def _schedule_arn(self, name: str, group: str | None) -> str:
        return f"arn:aws:scheduler:{self.region}:{self.account_id}:schedule/{group or 'default'}/{name}"

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

    def _create_aws_dynamodb_table(self, lid: str, props: dict[str, Any]) -> Resource:
        name = props.get("TableName") or physical_id(self.stack_name, lid)
        if self.emulator is not None and self.emulator.kind == "localstack":
            # LocalStack's DynamoDB needs DynamoDB Local, which its host mode cannot fetch (each
            # call then fails after seconds of retries): the table is not created and its Ref is
            # empty, so a function that takes the name from its environment runs without it.
            self._warn(
                f"{lid}: DynamoDB is not available on LocalStack in host mode; not created (Ref empty)"
            )
            arn = f"arn:aws:dynamodb:{self.region}:{self.account_id}:table/{name}"
            return Resource(lid, "AWS::DynamoDB::Table", "", {"Arn": arn, "StreamArn": ""}, emulated=False)
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

    # --- functions and their events
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
                Poller(
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
                    Poller(
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
                    if type_ == "Schedule":
                        name = p.get("Name") or f"{lid}{event_name}"
                        arn = f"arn:aws:events:{self.region}:{self.account_id}:rule/{name}"
                    else:  # SAM names a schedule after its function and event unless told to omit it
                        name = p.get("Name") or (
                            physical_id(self.stack_name, f"{lid}{event_name}", max_len=64)
                            if p.get("OmitName")
                            else f"{lid}{event_name}"
                        )
                        arn = self._schedule_arn(name, p.get("GroupName"))
                    kind = "events" if type_ == "Schedule" else "scheduler"
                    self._add_schedule(name, str(expr), [target], kind, arn)
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


def _s3_filter(flt: Any) -> dict[str, Any]:
    """CloudFormation's ``Filter.S3Key.Rules`` -> the API's ``Filter.Key.FilterRules``."""
    if not flt:
        return {}
    rules = (flt.get("S3Key") or {}).get("Rules") or []
    return {"Filter": {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}}
