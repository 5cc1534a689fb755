"""The template ships served-list lines, and only them, to raw/ through their own Firehose stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shelfwise.served_lists import FILTER_PATTERN
from shelfwise_local.runtime.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def _resources() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")["Resources"]


def test_the_subscription_reads_the_serving_log_group_with_the_served_list_pattern() -> None:
    res = _resources()
    sub = res["ServedListsSubscriptionFilter"]["Properties"]
    assert sub["FilterPattern"] == FILTER_PATTERN
    assert sub["LogGroupName"] == {"Ref": "ServeRecommendationsLogGroup"}
    assert sub["DestinationArn"] == {"Fn::GetAtt": ["ImpressionsDeliveryStream", "Arn"]}
    role = res["ServedListsSubscriptionRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "logs.amazonaws.com"}


def test_the_impressions_stream_extracts_messages_into_raw_and_stays_apart_from_events() -> None:
    res = _resources()
    conf = res["ImpressionsDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    assert conf["Prefix"].startswith("raw/") and conf["Prefix"] != "raw/events/"
    assert not conf["ErrorOutputPrefix"].startswith("raw/")
    processors = conf["ProcessingConfiguration"]["Processors"]
    assert [p["Type"] for p in processors] == [
        "Decompression",
        "CloudWatchLogProcessing",
        "AppendDelimiterToRecord",
    ]
    assert processors[1]["Parameters"] == [
        {"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}
    ]
    events = res["EventsDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    assert "ProcessingConfiguration" not in events  # collect_events puts plain records there
    serve = res["ServeRecommendationsFunction"]["Properties"]
    assert "IMPRESSIONS_STREAM" not in serve["Environment"]["Variables"]
    assert not any("FirehoseWritePolicy" in p for p in serve["Policies"] if isinstance(p, dict))
