"""Metrics and alarms: EMF lines to CloudWatch metrics on the runtime's clock, the datapoints alarms
read, and what an alarm state change does (SNS / Lambda actions, the EventBridge event).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from shelfwise_local.runtime.alarms import (
    Alarm,
    CompositeAlarm,
    MetricKey,
    StateChange,
    metric_key,
    standard_or_percentile,
    statistic,
)
from shelfwise_local.runtime.base import RuntimeBase
from shelfwise_local.runtime.clock import iso
from shelfwise_local.runtime.functions import Invocation, emf_metrics


class MetricsAndAlarms(RuntimeBase):
    """EMF metrics, PutMetricData, alarm datapoints and alarm actions."""

    # --- metrics
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

    # --- what alarms read
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

    # --- alarm actions and events
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

    # --- alarm state
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
