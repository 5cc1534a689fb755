"""What template.yaml promises about security, rendered as CloudFormation would render it.

The key policy for both forms of the key's parameter name and a customer-managed KMS key;
secure API defaults and the loud output of the open mode; retention of raw and quarantined data;
an alarm on every dead-letter queue; gradual code deploys of the API functions; the alarms that
move models count only model and platform faults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shelfwise.monitoring.config import ERROR_RATE_MIN_REQUESTS
from shelfwise_local.runtime.alarms import eval_expression
from shelfwise_local.runtime.template import NO_VALUE, Context, Resolver, load_template, parameter_values

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
RES = TEMPLATE["Resources"]
ARN = re.compile(r"^arn:aws:ssm:eu-west-1:123456789012:parameter/[^/][A-Za-z0-9_.\-/]*$")


def render(value: Any, **params: str) -> Any:
    """``value`` with intrinsics resolved for these parameter values (refs to resources by name)."""
    ctx = Context("shop", "eu-west-1", "123456789012", parameters=parameter_values(TEMPLATE, params))
    resolver = Resolver(TEMPLATE, ctx, lambda name: f"<{name}>", lambda name, att: f"<{name}.{att}>")
    return _drop(resolver.resolve(value)), resolver


def _drop(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [_drop(v) for v in value if v is not NO_VALUE]
    return value


@pytest.mark.parametrize("name", ["/shop/pseudonymisation-key", "shop/pseudonymisation-key", "shelfwise-key"])
@pytest.mark.parametrize(
    "kms", ["", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"]
)
def test_the_key_policy_renders_a_valid_arn_for_either_name_form_and_a_customer_kms_key(
    name: str, kms: str
) -> None:
    spec = RES["PseudonymisationKeyReadPolicy"]
    doc, resolver = render(
        spec["Properties"]["PolicyDocument"],
        PseudonymisationKeyParameter=name,
        PseudonymisationKeyKmsKeyArn=kms,
    )
    assert resolver.condition(spec["Condition"])
    ssm, *rest = doc["Statement"]
    assert ARN.match(ssm["Resource"]), ssm["Resource"]
    assert ssm["Resource"].endswith("parameter/" + name.lstrip("/"))
    assert "//" not in ssm["Resource"].split(":parameter", 1)[1]
    if kms:
        (decrypt,) = rest
        assert decrypt["Action"] == "kms:Decrypt" and decrypt["Resource"] == kms
        assert decrypt["Condition"]["StringEquals"]["kms:ViaService"] == "ssm.eu-west-1.amazonaws.com"
    else:
        assert rest == []  # the AWS-managed aws/ssm key needs no grant in the function's policy


def test_every_function_that_sees_user_ids_can_read_the_key_only_when_one_is_set() -> None:
    for fn in ("IngestEventsFunction", "ServeRecommendationsFunction", "CollectEventsFunction"):
        props = RES[fn]["Properties"]
        assert props["Environment"]["Variables"]["PSEUDONYMISATION_KEY_PARAMETER"] == {
            "Ref": "PseudonymisationKeyParameter"
        }
        with_key, _ = render(props["Policies"], PseudonymisationKeyParameter="/k")
        without, _ = render(props["Policies"])
        assert (
            "<PseudonymisationKeyReadPolicy>" in with_key and "<PseudonymisationKeyReadPolicy>" not in without
        ), fn


def test_the_api_requires_authentication_unless_opened_explicitly_and_says_so() -> None:
    assert TEMPLATE["Parameters"]["ApiAuth"]["Default"] == "AWS_IAM"
    paths = RES["ServingHttpApi"]["Properties"]["DefinitionBody"]["paths"]
    for auth, scheme in (("AWS_IAM", "AWS_IAM"), ("JWT", "JwtAuthorizer"), ("NONE", None)):
        rendered, _ = render(paths, ApiAuth=auth)
        for path, methods in rendered.items():
            for method, op in methods.items():
                if path == "/v1/openapi.json":
                    assert op["security"] == []
                    continue
                expected = [{scheme: []}] if scheme else []
                assert op["security"] == expected, (auth, path, method)
        output, _ = render(TEMPLATE["Outputs"]["ApiAccess"]["Value"], ApiAuth=auth)
        assert ("WARNING: THE API IS OPEN" in output) == (auth == "NONE"), output
    for fn in ("ServeRecommendationsFunction", "CollectEventsFunction"):
        assert RES[fn]["Properties"]["Environment"]["Variables"]["API_AUTH"] == {"Ref": "ApiAuth"}


def test_raw_and_quarantined_data_expire_after_the_retention_parameters() -> None:
    assert TEMPLATE["Parameters"]["RawRetentionDays"]["Default"] == 30
    assert TEMPLATE["Parameters"]["QuarantineRetentionDays"]["Default"] == 30
    raw, _ = render(RES["RawBucket"]["Properties"]["LifecycleConfiguration"], RawRetentionDays="7")
    rules = {r["Prefix"]: r for r in raw["Rules"]}
    assert rules["raw/"]["ExpirationInDays"] == "7" and rules["raw/"]["NoncurrentVersionExpiration"]
    assert rules["delivery-errors/"]["ExpirationInDays"] == "7"
    quarantine, _ = render(
        RES["QuarantineBucket"]["Properties"]["LifecycleConfiguration"], QuarantineRetentionDays="14"
    )
    assert [r["ExpirationInDays"] for r in quarantine["Rules"]] == ["14"]


def _queues_used_as_dlq() -> set[str]:
    dlqs = set()
    for spec in RES.values():
        props = spec.get("Properties") or {}
        redrive = props.get("RedrivePolicy") or {}
        if redrive:
            dlqs.add(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
        dlq = props.get("DeadLetterQueue") or {}
        if dlq:
            dlqs.add(dlq["TargetArn"]["Fn::GetAtt"][0])
    return dlqs


def test_every_dead_letter_queue_has_an_alarm_that_notifies() -> None:
    dlqs = _queues_used_as_dlq()
    assert dlqs >= {"IngestDLQ", "RollbackDLQ"}
    alarmed = set()
    for spec in RES.values():
        if spec["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = spec["Properties"]
        for dim in props.get("Dimensions") or []:
            value = dim["Value"]
            if props.get("Namespace") == "AWS/SQS" and isinstance(value, dict) and "Fn::GetAtt" in value:
                assert props["MetricName"] == "ApproximateNumberOfMessagesVisible" and props["Threshold"] == 0
                assert {"Ref": "NotificationsTopic"} in props["AlarmActions"]
                alarmed.add(value["Fn::GetAtt"][0])
    assert dlqs <= alarmed, dlqs - alarmed
    rollback = RES["RollbackModelFunction"]["Properties"]
    assert rollback["EventInvokeConfig"]["MaximumRetryAttempts"] == 2


def test_api_functions_deploy_gradually_behind_the_error_and_latency_alarms() -> None:
    for fn in ("ServeRecommendationsFunction", "CollectEventsFunction"):
        props = RES[fn]["Properties"]
        assert props["AutoPublishAlias"]
        pref = props["DeploymentPreference"]
        assert pref["Type"].startswith(("Canary", "Linear"))
        alarms = {a["Ref"] for a in pref["Alarms"]}
        assert {"ErrorRateAlarm", "LatencyP99Alarm"} <= alarms, fn


def test_the_error_rate_alarm_needs_a_minimum_of_requests_and_ignores_dependency_outages() -> None:
    props = RES["ErrorRateAlarm"]["Properties"]
    (expr,) = [m["Expression"] for m in props["Metrics"] if "Expression" in m]
    names = {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in props["Metrics"] if "MetricStat" in m}
    assert names == {"requests": "Requests", "errors": "Errors"}
    threshold = float(props["Threshold"])
    n = ERROR_RATE_MIN_REQUESTS
    # A quiet minute of nothing but failures cannot alarm; a busy one can.
    assert eval_expression(expr, {"requests": n - 1, "errors": n - 1}) <= threshold  # type: ignore[operator]
    assert eval_expression(expr, {"requests": n, "errors": 5}) > threshold  # type: ignore[operator]
    assert eval_expression(expr, {"requests": 1000, "errors": 10}) <= threshold  # type: ignore[operator]
    assert eval_expression(expr, {"requests": None, "errors": None}) is None  # no traffic: no datapoint
    outage = RES["EventsDeliveryAlarm"]["Properties"]
    assert outage["MetricName"] == "DependencyErrors"
    assert {"Ref": "RollbackTopic"} not in outage["AlarmActions"]
