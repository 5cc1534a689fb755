"""CloudWatch alarm evaluation with AWS semantics, on the runtime's clock.

Neither emulator can do what the platform's alarms need locally: moto never evaluates alarms,
LocalStack evaluates on wall time (not the test's clock), and neither computes percentiles or
metric math. The evaluator here reads datapoints for each period (from the emulator's
GetMetricStatistics for plain statistics, from the raw values the runtime saw for percentiles),
applies period / evaluation periods / datapoints-to-alarm / comparison / TreatMissingData, and
reports state changes; the runtime turns those into AlarmActions (SNS) and EventBridge events.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

OK, ALARM, INSUFFICIENT = "OK", "ALARM", "INSUFFICIENT_DATA"

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}
_STANDARD = {"Sum", "Average", "Minimum", "Maximum", "SampleCount"}


class AlarmConfigError(ValueError):
    """An alarm definition the evaluator cannot evaluate (e.g. anomaly detection)."""


MetricKey = tuple[str, str, tuple[tuple[str, str], ...]]


def metric_key(namespace: str, name: str, dimensions: Iterable[dict[str, str]] | dict[str, str]) -> MetricKey:
    """Canonical identity of a metric: namespace, name and sorted dimensions."""
    if isinstance(dimensions, dict):
        dims = tuple(sorted((str(k), str(v)) for k, v in dimensions.items()))
    else:
        dims = tuple(sorted((str(d["Name"]), str(d["Value"])) for d in dimensions))
    return (namespace, name, dims)


class RawStore:
    """Raw metric values the runtime saw (EMF lines, runtime puts), for percentiles."""

    def __init__(self) -> None:
        self._values: dict[MetricKey, list[tuple[float, float]]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, key: MetricKey, timestamp: float, value: float, count: int = 1) -> None:
        with self._lock:
            self._values[key].extend([(timestamp, float(value))] * max(1, int(count)))

    def values(self, key: MetricKey, start: float, end: float) -> list[float]:
        with self._lock:
            return [v for t, v in self._values.get(key, []) if start <= t < end]


def statistic(values: list[float], stat: str) -> float | None:
    """A CloudWatch statistic of raw values: Sum/Average/Minimum/Maximum/SampleCount/pNN/tmNN."""
    if not values:
        return None
    if stat == "Sum":
        return float(sum(values))
    if stat == "Average":
        return float(sum(values) / len(values))
    if stat == "Minimum":
        return float(min(values))
    if stat == "Maximum":
        return float(max(values))
    if stat == "SampleCount":
        return float(len(values))
    if stat.startswith("p"):
        return percentile(values, float(stat[1:]))
    if stat.startswith("tm"):
        q = float(stat[2:]) / 100
        ordered = sorted(values)
        kept = ordered[: max(1, math.ceil(q * len(ordered)))]
        return float(sum(kept) / len(kept))
    raise AlarmConfigError(f"unsupported statistic {stat!r}")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (CloudWatch reports an observed value, not an interpolation)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


# --------------------------------------------------------------------------- metric math

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CMP = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def eval_expression(expression: str, values: dict[str, float | None]) -> float | None:
    """Arithmetic metric math over ids (``m1 / m2 * 100``); ``None`` when an operand is missing.

    + - * / unary minus, numbers, ids, comparisons (1 or 0, as CloudWatch gives them) and
    ``IF(condition, a, b)``: what threshold alarms on guarded ratios need. Anything else
    (functions such as FILL or METRICS) is rejected rather than guessed.
    """
    tree = ast.parse(expression, mode="eval")

    def ev(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise AlarmConfigError(f"metric math: unknown id {node.id!r}")
            return values[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = ev(node.operand)
            return None if v is None else -v
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            a, b = ev(node.left), ev(node.right)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Div) and b == 0:
                return None
            return _BIN[type(node.op)](a, b)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP:
            a, b = ev(node.left), ev(node.comparators[0])
            if a is None or b is None:
                return None
            return float(_CMP[type(node.ops[0])](a, b))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "IF"
            and len(node.args) == 3
            and not node.keywords
        ):
            cond = ev(node.args[0])
            if cond is None:
                return None
            return ev(node.args[1]) if cond != 0 else ev(node.args[2])
        raise AlarmConfigError(f"metric math: unsupported expression {expression!r}")

    return ev(tree)


# --------------------------------------------------------------------------- alarms


@dataclass
class StateChange:
    """One transition, as AWS records it in the alarm history."""

    alarm_name: str
    timestamp: float
    old_state: str
    new_state: str
    reason: str
    datapoints: list[float | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "AlarmName": self.alarm_name,
            "Timestamp": datetime.fromtimestamp(self.timestamp, tz=UTC).isoformat(),
            "OldState": self.old_state,
            "NewState": self.new_state,
            "Reason": self.reason,
            "Datapoints": self.datapoints,
        }


@dataclass
class Alarm:
    """A metric alarm as declared (``AWS::CloudWatch::Alarm`` properties, resolved)."""

    name: str
    props: dict[str, Any]
    arn: str = ""
    state: str = INSUFFICIENT
    history: list[StateChange] = field(default_factory=list)

    @property
    def period(self) -> int:
        if "Period" in self.props:
            return int(self.props["Period"])
        periods = [int(m["MetricStat"]["Period"]) for m in self.props.get("Metrics", []) if "MetricStat" in m]
        if not periods:
            raise AlarmConfigError(f"alarm {self.name}: no Period")
        return min(periods)

    @property
    def evaluation_periods(self) -> int:
        return int(self.props["EvaluationPeriods"])

    @property
    def datapoints_to_alarm(self) -> int:
        return int(self.props.get("DatapointsToAlarm", self.evaluation_periods))

    @property
    def treat_missing(self) -> str:
        return str(self.props.get("TreatMissingData", "missing"))

    def compare(self, value: float) -> bool:
        op = str(self.props["ComparisonOperator"])
        if op not in _COMPARE:
            raise AlarmConfigError(f"alarm {self.name}: comparison {op} is not supported locally")
        return _COMPARE[op](value, float(self.props["Threshold"]))


DatapointSource = Callable[[MetricKey, str, float, float, int], list[float | None]]
"""(metric, statistic, start, end, period) -> one value or None per period, oldest first."""


class AlarmEvaluator:
    """Evaluates alarms at clock instants and returns their state changes."""

    def __init__(self, source: DatapointSource) -> None:
        self.source = source
        self.alarms: dict[str, Alarm] = {}
        self.composites: dict[str, CompositeAlarm] = {}

    def add_composite(self, alarm: CompositeAlarm) -> None:
        self.composites[alarm.name] = alarm

    def state_of(self, ref: str) -> str:
        """Current state of an alarm named by name or ARN."""
        name = ref.split(":alarm:", 1)[1] if ":alarm:" in ref else ref
        found = self.alarms.get(name) or self.composites.get(name)
        if found is None:
            raise AlarmConfigError(f"composite rule names an unknown alarm {ref!r}")
        return found.state

    def add(self, alarm: Alarm) -> None:
        self.period_of(alarm)
        self.alarms[alarm.name] = alarm

    @staticmethod
    def period_of(alarm: Alarm) -> int:
        if "ThresholdMetricId" in alarm.props:
            raise AlarmConfigError(f"alarm {alarm.name}: anomaly detection alarms are not evaluated locally")
        return alarm.period

    def datapoints(self, alarm: Alarm, now: float) -> list[float | None]:
        """The alarm's value for each of its last EvaluationPeriods complete periods."""
        period, n = alarm.period, alarm.evaluation_periods
        end = math.floor(now / period) * period
        start = end - n * period
        props = alarm.props
        if "Metrics" in props:
            series: dict[str, list[float | None]] = {}
            result: list[float | None] | None = None
            for m in props["Metrics"]:
                if "MetricStat" in m:
                    ms = m["MetricStat"]
                    metric = ms["Metric"]
                    key = metric_key(metric["Namespace"], metric["MetricName"], metric.get("Dimensions", []))
                    series[m["Id"]] = self.source(key, str(ms["Stat"]), start, end, period)
            for m in props["Metrics"]:
                if "Expression" in m:
                    series[m["Id"]] = [
                        eval_expression(m["Expression"], {k: v[i] for k, v in series.items()})
                        for i in range(n)
                    ]
            returned = [m for m in props["Metrics"] if m.get("ReturnData", True)]
            if len(returned) != 1:
                raise AlarmConfigError(f"alarm {alarm.name}: exactly one metric must have ReturnData true")
            result = series[returned[0]["Id"]]
            return result
        stat = props.get("ExtendedStatistic") or props.get("Statistic")
        if not stat:
            raise AlarmConfigError(f"alarm {alarm.name}: no Statistic or ExtendedStatistic")
        key = metric_key(props["Namespace"], props["MetricName"], props.get("Dimensions", []))
        return self.source(key, str(stat), start, end, period)

    def decide(self, alarm: Alarm, points: list[float | None]) -> tuple[str, str]:
        """The new state and a reason, from datapoints (oldest first), per TreatMissingData.

        ``notBreaching``/``breaching`` fill gaps as good/bad. ``missing`` and ``ignore`` judge
        the datapoints present: all missing gives INSUFFICIENT_DATA (``missing``) or keeps the
        state (``ignore``); fewer present than DatapointsToAlarm alarms only when every present
        one breaches (as AWS's table shows for a lone breaching point among missing ones).
        """
        m, n = alarm.datapoints_to_alarm, alarm.evaluation_periods
        treat = alarm.treat_missing
        flags: list[bool | None] = [None if p is None else alarm.compare(p) for p in points]
        if treat == "notBreaching":
            flags = [bool(f) for f in flags]
        elif treat == "breaching":
            flags = [True if f is None else f for f in flags]
        present = [f for f in flags if f is not None]
        breaching = sum(1 for f in present if f)
        shown = ", ".join("missing" if p is None else f"{p:g}" for p in points)
        base = f"{breaching} of {n} datapoints [{shown}] {alarm.props.get('ComparisonOperator')} {alarm.props.get('Threshold')}"
        if not present:
            if treat == "ignore":
                return alarm.state, f"no datapoints; state kept ({base})"
            return INSUFFICIENT, f"Insufficient Data: {n} datapoints were unknown."
        if breaching >= m or (len(present) < m and breaching == len(present)):
            return ALARM, f"Threshold Crossed: {base} (minimum {m} to alarm)."
        return OK, f"Threshold not crossed: {base} (minimum {m} to alarm)."

    def evaluate(self, now: float) -> list[StateChange]:
        """Evaluate every alarm at ``now``; return the transitions (state is updated)."""
        changes: list[StateChange] = []
        for alarm in self.alarms.values():
            points = self.datapoints(alarm, now)
            new, reason = self.decide(alarm, points)
            if new != alarm.state:
                change = StateChange(alarm.name, now, alarm.state, new, reason, points)
                alarm.state = new
                alarm.history.append(change)
                changes.append(change)
        for composite in self.composites.values():
            rule = str(composite.props["AlarmRule"])
            new = ALARM if evaluate_rule(rule, self.state_of) else OK
            if new != composite.state:
                change = StateChange(
                    composite.name,
                    now,
                    composite.state,
                    new,
                    f"AlarmRule {'true' if new == ALARM else 'false'}: {rule}",
                    [],
                )
                composite.state = new
                composite.history.append(change)
                changes.append(change)
        return changes


def standard_or_percentile(stat: str) -> str:
    """'standard' for the statistics emulators compute, else 'raw' (from values the runtime saw)."""
    return "standard" if stat in _STANDARD else "raw"


# --------------------------------------------------------------------------- composite alarms

_RULE_TOKEN = re.compile(
    r'\s*(?:(ALARM|OK|INSUFFICIENT_DATA)\(\s*"?([^")]+?)"?\s*\)|(AND|OR|NOT|TRUE|FALSE)\b|(\()|(\)))'
)


def evaluate_rule(rule: str, state_of: Callable[[str], str]) -> bool:
    """A composite alarm's AlarmRule (``ALARM("a") OR (OK(b) AND NOT ALARM(c))``, TRUE, FALSE).

    ``state_of`` maps an alarm name or ARN to its current state. Precedence: NOT > AND > OR.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(rule.rstrip()):
        m = _RULE_TOKEN.match(rule, pos)
        if m is None:
            raise AlarmConfigError(f"cannot parse AlarmRule near {rule[pos : pos + 30]!r}")
        if m.group(1):
            tokens.append(("state", f"{m.group(1)}|{m.group(2).strip()}"))
        elif m.group(3):
            tokens.append((m.group(3), m.group(3)))
        else:
            tokens.append(("(" if m.group(4) else ")", ""))
        pos = m.end()
    i = 0

    def peek() -> str | None:
        return tokens[i][0] if i < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens):
            raise AlarmConfigError(f"AlarmRule ends too early: {rule!r}")
        i += 1
        return tokens[i - 1]

    def expr_or() -> bool:
        value = expr_and()
        while peek() == "OR":
            take()
            value = expr_and() or value
        return value

    def expr_and() -> bool:
        value = expr_not()
        while peek() == "AND":
            take()
            value = expr_not() and value
        return value

    def expr_not() -> bool:
        if peek() == "NOT":
            take()
            return not expr_not()
        kind, text = take()
        if kind == "(":
            value = expr_or()
            if take()[0] != ")":
                raise AlarmConfigError(f"unbalanced parentheses in AlarmRule {rule!r}")
            return value
        if kind in {"TRUE", "FALSE"}:
            return kind == "TRUE"
        if kind == "state":
            wanted, ref = text.split("|", 1)
            return state_of(ref) == wanted
        raise AlarmConfigError(f"unexpected {kind!r} in AlarmRule {rule!r}")

    value = expr_or()
    if i != len(tokens):
        raise AlarmConfigError(f"trailing tokens in AlarmRule {rule!r}")
    return value


@dataclass
class CompositeAlarm:
    """An ``AWS::CloudWatch::CompositeAlarm``: ALARM while its rule holds, else OK."""

    name: str
    props: dict[str, Any]
    arn: str = ""
    state: str = INSUFFICIENT
    history: list[StateChange] = field(default_factory=list)
