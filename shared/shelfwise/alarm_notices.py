"""Alarm notifications: the state changes CloudWatch sends (SNS alarm actions, EventBridge), read
into ``AlarmNotice``, and whom an alarm accuses (``alarm_target``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shelfwise.errors import InputError
from shelfwise.instants import aware_time
from shelfwise.monitoring.config import DEFAULT_ALARMS, AlarmSpec


@dataclass(frozen=True)
class AlarmNotice:
    """An alarm state change, from SNS (CloudWatch alarm action) or EventBridge."""

    name: str
    state: str
    changed_at: datetime
    reason: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    metric: str | None = None

    @property
    def dedupe_key(self) -> str:
        return f"{self.name}@{self.changed_at.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}"


def parse_alarm_notices(event: Mapping[str, Any]) -> list[AlarmNotice]:
    """Alarm state changes in a Lambda event: SNS records of alarm actions, or one EventBridge event."""
    if event.get("detail-type") == "CloudWatch Alarm State Change":
        d = event.get("detail") or {}
        state = d.get("state") or {}
        dims: dict[str, str] = {}
        metric = None
        for m in (d.get("configuration") or {}).get("metrics") or []:
            stat = (m.get("metricStat") or {}).get("metric") or {}
            metric = metric or stat.get("name")
            dims.update({str(k): str(v) for k, v in (stat.get("dimensions") or {}).items()})
        if not d.get("alarmName") or not state.get("value"):
            raise InputError("EventBridge alarm event lacks detail.alarmName or detail.state.value")
        return [
            AlarmNotice(
                name=str(d["alarmName"]),
                state=str(state["value"]),
                changed_at=aware_time(state.get("timestamp") or event.get("time"), "alarm time"),
                reason=str(state.get("reason", "")),
                dimensions=dims,
                metric=metric,
            )
        ]
    records = event.get("Records")
    if not isinstance(records, list):
        raise InputError("event is neither SNS records nor a CloudWatch Alarm State Change")
    out = []
    for rec in records:
        sns = rec.get("Sns") or {}
        try:
            msg = json.loads(sns.get("Message") or "")
        except ValueError as exc:
            raise InputError(f"SNS message is not an alarm notification: {exc}") from exc
        if not isinstance(msg, dict) or "AlarmName" not in msg or "NewStateValue" not in msg:
            raise InputError("SNS message lacks AlarmName or NewStateValue")
        trigger = msg.get("Trigger") or {}
        dims = {
            str(x.get("name") or x.get("Name")): str(x.get("value") or x.get("Value"))
            for x in trigger.get("Dimensions") or []
        }
        out.append(
            AlarmNotice(
                name=str(msg["AlarmName"]),
                state=str(msg["NewStateValue"]),
                changed_at=aware_time(msg.get("StateChangeTime") or sns.get("Timestamp"), "alarm time"),
                reason=str(msg.get("NewStateReason", "")),
                dimensions=dims,
                metric=trigger.get("MetricName"),
            )
        )
    return out


def alarm_target(notice: AlarmNotice, alarms: Sequence[AlarmSpec] = DEFAULT_ALARMS) -> str:
    """``challenger``, ``champion`` or ``none``: whom an alarm accuses.

    The alarm's own spec decides first (alarm names end with the spec suffix); otherwise its
    ``Variant`` dimension; alarms about data or inputs accuse no model.
    """
    for spec in alarms:
        if notice.name == spec.suffix or notice.name.endswith("-" + spec.suffix):
            return spec.target
    variant = notice.dimensions.get("Variant")
    if variant in ("challenger", "champion"):
        return variant
    return "none"
