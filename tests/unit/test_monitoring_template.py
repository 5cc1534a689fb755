"""The template's monitoring section agrees with the pure-Python config and infra/dashboard.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from shelfwise.monitoring.config import DEFAULT_ALARMS, PROMOTION_GATE_SUFFIXES, MonitoringConfig, alarm

ROOT = Path(__file__).resolve().parents[2]


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_Loader.add_multi_constructor("!", _tag)


def resources() -> dict[str, Any]:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=_Loader)["Resources"]


def _alarms_by_suffix() -> dict[str, dict[str, Any]]:
    out = {}
    for res in resources().values():
        if res.get("Type") == "AWS::CloudWatch::Alarm":
            name = res["Properties"]["AlarmName"]["Sub"]
            out[name.replace("${AWS::StackName}-", "")] = res["Properties"]
    return out


def test_every_configured_alarm_is_in_the_template_with_the_same_numbers() -> None:
    declared = _alarms_by_suffix()
    for spec in DEFAULT_ALARMS:
        props = declared[spec.suffix]
        assert float(props["Threshold"]) == spec.threshold, spec.suffix
        assert props["ComparisonOperator"] == spec.comparison
        assert int(props["EvaluationPeriods"]) == spec.evaluation_periods
        assert int(props["DatapointsToAlarm"]) == spec.datapoints_to_alarm
        assert props["TreatMissingData"] == spec.treat_missing_data
        if "MetricName" in props:
            assert props["MetricName"] == spec.metric
            dims = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
            assert dims.get("Variant") == spec.variant
        actions = [a["Ref"] for a in props["AlarmActions"]]
        assert ("RollbackTopic" in actions) == (spec.target != "none"), spec.suffix


def test_comparison_margins_equal_the_alarm_thresholds() -> None:
    cfg = MonitoringConfig()
    assert cfg.quality_margin == alarm("challenger-quality").threshold
    assert cfg.early_margin == alarm("challenger-early-clicks").threshold


def test_promoter_gates_on_the_configured_alarms() -> None:
    env = resources()["PromoteModelFunction"]["Properties"]["Environment"]["Variables"]
    refs = [r["Ref"] for r in env["GATE_ALARM_NAMES"]["Join"][1]]
    by_id = {
        lid: res["Properties"]["AlarmName"]["Sub"]
        for lid, res in resources().items()
        if res.get("Type") == "AWS::CloudWatch::Alarm"
    }
    assert [by_id[r].replace("${AWS::StackName}-", "") for r in refs] == list(PROMOTION_GATE_SUFFIXES)


def test_dashboard_body_is_infra_dashboard_json() -> None:
    body = resources()["ModelHealthDashboard"]["Properties"]["DashboardBody"]["Sub"]
    on_disk = (ROOT / "infra" / "dashboard.json").read_text()
    assert body == on_disk
    widgets = json.loads(on_disk)["widgets"]
    alarm_widget = next(w for w in widgets if w["type"] == "alarm")
    assert len(alarm_widget["properties"]["alarms"]) == len(DEFAULT_ALARMS)


def test_rollback_function_subscribes_to_the_rollback_topic() -> None:
    events = resources()["RollbackModelFunction"]["Properties"]["Events"]
    assert events["ModelAlarms"]["Type"] == "SNS"
    assert events["ModelAlarms"]["Properties"]["Topic"] == {"Ref": "RollbackTopic"}


def test_dashboard_template_and_docs_are_generated_from_the_one_alarm_definition() -> None:
    from shelfwise.monitoring.dashboard import dashboard_text, render_docs, render_template

    assert (ROOT / "infra" / "dashboard.json").read_text() == dashboard_text(), (
        "run `shelfwise alarms --write`"
    )
    template = (ROOT / "template.yaml").read_text()
    assert render_template(template) == template, "run `shelfwise alarms --write`"
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    assert render_docs(docs) == docs, "run `shelfwise alarms --write`"


def test_every_metric_alarm_draws_its_threshold_on_the_axis_of_its_metric() -> None:
    from shelfwise.monitoring.dashboard import dashboard

    widgets = [w["properties"] for w in dashboard()["widgets"] if w["type"] == "metric"]
    for spec in DEFAULT_ALARMS:
        if spec.namespace != "Shelfwise":  # AWS/SQS queue depths: on the alarm widget only
            continue
        drawn = []
        for props in widgets:
            for m in props["metrics"]:
                opts = m[-1]
                named = "expression" in opts and opts["label"] == spec.metric
                plain = spec.metric in m and (spec.variant is None or spec.variant in m)
                if named or plain:
                    axis = opts.get("yAxis", "left")
                    lines = props.get("annotations", {}).get("horizontal", [])
                    drawn += [
                        ln
                        for ln in lines
                        if ln["value"] == spec.threshold
                        and ln.get("yAxis", "left") == axis
                        and spec.suffix in ln["label"]
                    ]
        assert drawn, f"{spec.suffix}: no threshold line at {spec.threshold} beside its metric"


def test_a_changed_threshold_shows_in_every_generated_place() -> None:
    import dataclasses

    from shelfwise.monitoring.dashboard import alarm_table, dashboard_text

    changed = tuple(
        dataclasses.replace(a, threshold=0.123) if a.suffix == "input-drift" else a for a in DEFAULT_ALARMS
    )
    assert "> 0.123" in alarm_table(changed) and '"value": 0.123' in dashboard_text(changed)
    assert dashboard_text(changed) != (ROOT / "infra" / "dashboard.json").read_text()


def test_drift_alarms_on_the_champion_and_inputs_trigger_a_retrain_not_a_rollback() -> None:
    res = resources()
    rule = res["TrainModelFunction"]["Properties"]["Events"]["DriftAlarm"]
    assert rule["Type"] == "EventBridgeRule"
    pattern = rule["Properties"]["Pattern"]
    assert pattern["detail-type"] == ["CloudWatch Alarm State Change"]
    assert pattern["detail"]["state"] == {"value": ["ALARM"]}
    names = {
        res[r["Ref"]]["Properties"]["AlarmName"]["Sub"].replace("${AWS::StackName}-", "")
        for r in pattern["detail"]["alarmName"]
    }
    retrain = {a.suffix for a in DEFAULT_ALARMS if a.action.startswith("retrain")}
    assert names == retrain == {"input-drift", "champion-ctr-drift", "champion-score-drift"}
    assert all(alarm(s).target == "none" for s in retrain)  # none of them rolls a model back


def test_exploration_over_budget_for_three_hours_notifies_and_rolls_nothing_back() -> None:
    from shelfwise.alarm_notices import AlarmNotice, alarm_target
    from shelfwise.monitoring.config import alarm_state
    from shelfwise.monitoring.dashboard import dashboard

    spec = alarm("exploration-cost")
    assert (spec.metric, spec.variant, spec.period, spec.statistic) == (
        "ExplorationCtrCost",
        "champion",
        3600,
        "Average",
    )
    assert alarm_state(spec, [0.05, 0.04, 0.031]) == "ALARM"
    assert alarm_state(spec, [0.05, 0.02, 0.05]) == "OK"  # one cheap hour: not a standing cost
    assert alarm_state(spec, [None, None, None]) == "OK"  # no exploration, no datapoint
    props = _alarms_by_suffix()["exploration-cost"]
    assert [a["Ref"] for a in props["AlarmActions"]] == ["NotificationsTopic"]
    notice = AlarmNotice("stack-exploration-cost", "ALARM", datetime.now(UTC))
    assert alarm_target(notice) == "none"
    charts = [w for w in dashboard()["widgets"] if "ExplorationCtrCost" in json.dumps(w)]
    assert charts and '"label": "exploration-cost alarm"' in json.dumps(charts[0])
