"""What a rule or a schedule hands its target, as AWS builds it.

An EventBridge rule target gets the event itself, or its ``Input`` (constant JSON: nothing of the
event, no ``time``), its ``InputPath`` (a part of the event) or its ``InputTransformer`` (variables
from ``InputPathsMap`` and the reserved ``aws.events.*`` ones put into ``InputTemplate``). An
EventBridge Scheduler target gets its ``Input`` with the ``<aws.scheduler.*>`` context attributes
filled in. A constant input is how a schedule passes arguments; a transformer or the
``scheduled-time`` attribute is how it also passes the instant it fired for.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

_MISSING = object()
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def rule_target_input(
    target: dict[str, Any], event: dict[str, Any], *, rule_arn: str, rule_name: str, ingestion_time: str
) -> Any:
    """The payload an EventBridge rule delivers to ``target`` for ``event``."""
    if "Input" in target:
        return _json_or_text(target["Input"])
    if "InputPath" in target:
        found = select(event, str(target["InputPath"]))
        return None if found is _MISSING else found
    spec = target.get("InputTransformer")
    if spec is None:
        return event
    values = {name: select(event, str(path)) for name, path in (spec.get("InputPathsMap") or {}).items()}
    values.update(
        {
            "aws.events.rule-arn": rule_arn,
            "aws.events.rule-name": rule_name,
            "aws.events.event.ingestion-time": ingestion_time,
            "aws.events.event": {k: v for k, v in event.items() if k != "detail"},
            "aws.events.event.json": event,
        }
    )
    return _json_or_text(fill_template(str(spec["InputTemplate"]), values))


def scheduler_target_input(
    target: dict[str, Any], *, schedule_arn: str, scheduled_time: str, attempt: int = 1
) -> Any:
    """The payload EventBridge Scheduler delivers: ``Input`` with its context attributes, else ``{}``."""
    if "Input" not in target:
        return {}
    text = target["Input"] if isinstance(target["Input"], str) else json.dumps(target["Input"])
    attributes = {
        "schedule-arn": schedule_arn,
        "scheduled-time": scheduled_time,
        "execution-id": uuid.uuid4().hex[:16],
        "attempt-number": str(attempt),
    }
    for name, value in attributes.items():
        text = text.replace(f"<aws.scheduler.{name}>", value)
    return _json_or_text(text)


def select(event: Any, path: str) -> Any:
    """The value at an EventBridge JSON path (``$``, ``$.a.b``, ``$.a[0]``), or ``_MISSING``.

    Written out rather than taken from a JSONPath library: EventBridge accepts only this subset
    (dots and indices; names may hold dashes), and a fuller syntax would accept templates AWS refuses.
    """
    if path == "$":
        return event
    steps = list(_PATH_STEP.finditer(path, 1))
    if not path.startswith("$") or "".join(m.group(0) for m in steps) != path[1:]:
        raise ValueError(f"JSON path {path!r} is not one the local runtime supports ($.a.b[0])")
    value = event
    for m in steps:
        key, index = m.group(1), m.group(2)
        if key is not None and isinstance(value, dict) and key in value:
            value = value[key]
        elif index is not None and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return _MISSING
    return value


def fill_template(template: str, values: dict[str, Any]) -> str:
    """``InputTemplate`` with each known ``<name>`` replaced: inside a JSON string by the value's
    text (a string as it is, anything else as its JSON), outside one by the value's JSON; a path
    the event lacks gives an empty text or ``null``. Unknown names stay as they are."""
    out: list[str] = []
    in_string = escaped = False
    i = 0
    while i < len(template):
        ch = template[i]
        m = _PLACEHOLDER.match(template, i) if ch == "<" else None
        if m and m.group(1) in values:
            value = values[m.group(1)]
            if in_string:
                text = "" if value is _MISSING else value if isinstance(value, str) else json.dumps(value)
                out.append(json.dumps(text)[1:-1])
            else:
                out.append("null" if value is _MISSING else json.dumps(value))
            i = m.end()
            continue
        if escaped:
            escaped = False
        elif ch == "\\" and in_string:
            escaped = True
        elif ch == '"':
            in_string = not in_string
        out.append(ch)
        i += 1
    return "".join(out)


def _json_or_text(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw
