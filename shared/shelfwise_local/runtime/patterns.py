"""EventBridge event-pattern matching, as AWS documents it.

Used for the events the runtime itself produces ("CloudWatch Alarm State Change") and as a
check on events the emulator routes, so a rule behaves the same on both emulators. Supports
exact values, ``prefix``, ``suffix``, ``anything-but``, ``numeric``, ``exists``,
``equals-ignore-case``, ``wildcard`` and ``$or``.
"""

from __future__ import annotations

import fnmatch
import operator
from typing import Any

_MISSING = object()


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """True when ``event`` satisfies every field of ``pattern``."""
    for key, expected in pattern.items():
        if key == "$or":
            if not any(matches(p, event) for p in expected):
                return False
            continue
        value = event.get(key, _MISSING) if isinstance(event, dict) else _MISSING
        if isinstance(expected, dict):
            if value is _MISSING or not isinstance(value, dict):
                return False
            if not matches(expected, value):
                return False
        elif isinstance(expected, list):
            if not _match_leaf(expected, value):
                return False
        else:
            raise ValueError(f"event pattern leaf for {key!r} must be a list, got {expected!r}")
    return True


def _match_leaf(rules: list[Any], value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    exists_rules = [r for r in rules if isinstance(r, dict) and "exists" in r]
    for r in exists_rules:
        present = value is not _MISSING
        if r["exists"] != present:
            return False
    others = [r for r in rules if not (isinstance(r, dict) and "exists" in r)]
    if not others:
        return True
    if value is _MISSING:
        return False
    return any(_match_one(r, v) for r in others for v in values)


_NUMERIC = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _match_one(rule: Any, v: Any) -> bool:
    if not isinstance(rule, dict):
        return (bool(rule == v) and type(rule) is type(v)) or (rule is None and v is None)
    (kind, arg), *_ = rule.items()
    if kind == "prefix":
        if isinstance(arg, dict):
            return isinstance(v, str) and v.lower().startswith(str(arg["equals-ignore-case"]).lower())
        return isinstance(v, str) and v.startswith(arg)
    if kind == "suffix":
        if isinstance(arg, dict):
            return isinstance(v, str) and v.lower().endswith(str(arg["equals-ignore-case"]).lower())
        return isinstance(v, str) and v.endswith(arg)
    if kind == "equals-ignore-case":
        return isinstance(v, str) and v.lower() == str(arg).lower()
    if kind == "wildcard":
        return isinstance(v, str) and fnmatch.fnmatchcase(v, str(arg))
    if kind == "anything-but":
        if isinstance(arg, dict):
            return not any(_match_one({k: a}, v) for k, a in arg.items())
        excluded = arg if isinstance(arg, list) else [arg]
        return v not in excluded
    if kind == "numeric":
        if not isinstance(v, int | float) or isinstance(v, bool):
            return False
        ops = list(arg)
        return all(_NUMERIC[ops[i]](v, ops[i + 1]) for i in range(0, len(ops), 2))
    if kind == "cidr":
        import ipaddress

        try:
            return ipaddress.ip_address(v) in ipaddress.ip_network(arg, strict=False)
        except ValueError:
            return False
    raise ValueError(f"unsupported event pattern operator {kind!r}")
