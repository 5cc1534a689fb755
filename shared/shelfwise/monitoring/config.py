"""Monitoring configuration and alarm thresholds, in pure Python.

The template's alarms use the same numbers (a unit test checks they agree), so the demo and the
tests can reason about detection without reading YAML. Why each default is what it is lives in
docs/monitoring.md.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

NAMESPACE = "Shelfwise"
VARIANTS: tuple[str, ...] = ("champion", "challenger", "fallback")
ALLOWED_DIMENSIONS = frozenset({"Variant", "Endpoint"})

TreatMissing = Literal["breaching", "notBreaching", "ignore", "missing"]
Comparison = Literal["GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold"]
Target = Literal["challenger", "champion", "none"]


@dataclass(frozen=True)
class AttributionWindows:
    """How long after an impression feedback still counts for it (seconds)."""

    click: int = 30 * 60
    add_to_cart: int = 2 * 3600
    purchase: int = 24 * 3600
    # Early clicks: the label-light signal, counted for both variants with the same censoring.
    early_click: int = 5 * 60

    def for_type(self, event_type: str) -> int:
        return {"click": self.click, "add_to_cart": self.add_to_cart, "purchase": self.purchase}[event_type]


@dataclass(frozen=True)
class BotRules:
    """Thresholds of the bot-like-actor rules (shelfwise.bots says what each means)."""

    max_events_per_hour: float = 600.0
    min_events: int = 30
    max_median_gap_s: float = 3.0
    max_gap_cv: float = 0.25
    max_item_entropy_bits: float = 1.0


@dataclass(frozen=True)
class MonitoringConfig:
    """Everything a monitoring pass needs besides clients and data."""

    window_seconds: int = 300
    attribution: AttributionWindows = field(default_factory=AttributionWindows)
    # Minimum samples before a statistic is published at all (missing data = no evidence).
    min_lists_for_rates: int = 50
    min_lists_for_comparison: int = 100
    # Early clicks judge gross failures only (30% margin, alpha 0.005): the variance taken at the
    # decision boundary keeps the bound honest on fewer lists, and a 10% canary of a small shop
    # reaches 30 lists in one or two windows where 100 took four.
    min_lists_for_early_comparison: int = 30
    min_clicks_for_comparison: int = 20
    # Split canary: shoppers are the unit of the click comparison, and each shopper's clicked lists
    # over this many hours before the canary are the covariate that takes out the variance their
    # habits explain (CUPED); 0 = no covariate.
    covariate_lookback_hours: float = 24.0
    min_scores_for_drift: int = 500
    # Popularity shift vs the champion (JS over popularity buckets, a dashboard line): published
    # from this many challenger impressions.
    min_challenger_impressions_for_shift: int = 100
    # The alarm's popularity shift: challenger minus champion mean popularity percentile of served
    # items in one window, bounded below with shoppers as units; its false-alarm chance over a whole
    # canary (spent over the windows) and the shoppers each side needs before it is published.
    popularity_shift_alpha: float = 0.01
    min_shoppers_for_shift: int = 5
    min_events_for_input_drift: int = 500
    # Input drift: the last hour of behaviour against a baseline frozen after this many events.
    input_lookback_seconds: int = 3600
    input_baseline_events: int = 5000
    # Champion CTR drift (taste drift): last hour of matured windows vs a frozen early baseline.
    champion_baseline_lists: int = 10000
    champion_lookback_windows: int = 12
    drift_alpha: float = 0.005
    drift_margin: float = 0.05
    # Anytime-valid one-sided confidence sequence (half-normal mixture): the chance of a false alarm
    # over all looks of one canary, and the mixing scale on the log-ratio (about the size of effect
    # we care about: log(0.8) = -0.22). One-sided 0.05 is what the earlier two-sided 0.1 held.
    alpha: float = 0.02
    tau: float = 0.2
    # Early clicks only need to catch gross failures (a broken model loses most clicks): stricter
    # alpha, wider margin, and a mixing scale tuned to large effects so ~100 lists per variant do.
    early_alpha: float = 0.005
    early_tau: float = 1.0
    # The relative drops the alarms decide on (the thresholds of the two comparison alarms).
    quality_margin: float = 0.02
    early_margin: float = 0.3
    histogram_epsilon: float = 1e-4
    # Interleaved canary: decisive lists (one model's items got more clicks) needed before its
    # comparison is published, and before its early-click comparison is.
    min_decisive_lists: int = 30
    min_early_decisive_lists: int = 10
    # The interleaved preference moves about twice as far as the CTR ratio (in the bench's click
    # model a 20% CTR drop is a 36% drop in win odds), so its mixing scale is twice the split's.
    interleaved_tau: float = 0.4
    # Promotion evidence: non-inferiority of the challenger, on matured windows only, at this
    # one-sided anytime-valid confidence (1 - alpha) and relative margin (on the CTR ratio for a
    # split canary, on the win odds for an interleaved one: twice as far, as above).
    noninferiority_margin: float = 0.03
    interleaved_noninferiority_margin: float = 0.06
    noninferiority_alpha: float = 0.05
    # Steps past half the traffic and the promotion rest on the stricter confidence: 10% -> 50% on
    # 95%, 50% -> 100% and promotion on 99%. The 50% stage gathers the challenger's data five
    # times as fast as the 10% one, so the stricter bound costs a good model little time
    # (docs/monitoring.md).
    promotion_alpha: float = 0.01
    # Bot-like actors (shelfwise.bots) leave the metrics; their share is published from this many
    # behaviour events in the window.
    bots: BotRules = field(default_factory=BotRules)
    min_events_for_bot_share: int = 200

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm as the template declares it (suffix = the part after the stack name)."""

    suffix: str
    metric: str
    threshold: float
    comparison: Comparison
    datapoints_to_alarm: int
    evaluation_periods: int
    treat_missing_data: TreatMissing
    statistic: str = "Maximum"
    variant: str | None = None
    endpoint: str | None = None
    period: int = 300
    # What the rollback function does when this alarm enters ALARM.
    target: Target = "none"
    guard: str = ""
    # What happens besides the notification when it accuses no model (e.g. a retrain).
    action: str = ""
    namespace: str = NAMESPACE
    # A level worth a look but no action (drawn on the dashboard, quoted in the docs): e.g. PSI 0.1.
    warning: float | None = None


# Default alarms. Every model alarm is driven by a metric the job only publishes once its minimum
# sample guard holds, so "missing" means "not enough evidence" -> notBreaching for model alarms.
DEFAULT_ALARMS: tuple[AlarmSpec, ...] = (
    AlarmSpec(
        suffix="challenger-quality",
        metric="CtrDropLCB",
        variant="challenger",
        threshold=0.02,
        comparison="GreaterThanThreshold",
        # 1 of 1: the bound is already anytime-valid; 2 of 3 cost a window and cut false alarms
        # only from ~2.0% to ~1.7% per 48-hour canary (docs/monitoring.md, power analysis).
        datapoints_to_alarm=1,
        evaluation_periods=1,
        treat_missing_data="notBreaching",
        target="challenger",
        guard="published only with >= 100 lists per variant and >= 20 champion clicks",
    ),
    AlarmSpec(
        suffix="challenger-early-clicks",
        metric="EarlyCtrDropLCB",
        variant="challenger",
        threshold=0.3,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=1,
        evaluation_periods=1,
        treat_missing_data="notBreaching",
        target="challenger",
        guard="published only with >= 30 lists per variant and >= 20 early champion clicks",
    ),
    AlarmSpec(
        suffix="challenger-score-drift",
        metric="ScorePSI",
        variant="challenger",
        threshold=0.25,
        warning=0.1,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=2,
        evaluation_periods=2,
        treat_missing_data="notBreaching",
        target="challenger",
        guard="published only with >= 500 served scores; reference = the challenger bundle's manifest",
    ),
    AlarmSpec(
        suffix="challenger-coverage-shift",
        metric="PopularityShiftLCB",
        variant="challenger",
        # Lower confidence bound of how far the challenger's served items moved in the last hour's
        # popularity ranking (percentile points / 100, shoppers as units, alpha spent over the
        # canary's windows): the noise is in the bound, so the threshold is only the size of shift
        # that matters. A model serving random items moves ~0.35-0.45, a retrain ~0.01-0.03.
        threshold=0.1,
        comparison="GreaterThanThreshold",
        # 1 of 1: a canary's probation (4% of traffic) must be judged within its first window.
        datapoints_to_alarm=1,
        evaluation_periods=1,
        treat_missing_data="notBreaching",
        target="challenger",
        guard="published with >= 5 shoppers per variant; alpha 0.01 per canary, spent over its windows",
    ),
    AlarmSpec(
        suffix="champion-score-drift",
        metric="ScorePSI",
        variant="champion",
        threshold=0.25,
        warning=0.1,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=3,
        evaluation_periods=4,
        treat_missing_data="notBreaching",
        target="none",
        guard="published only with >= 500 served scores; reference = the champion bundle's manifest",
        action="retrain (TrainModelFunction) + notify",
    ),
    AlarmSpec(
        suffix="champion-ctr-drift",
        metric="ChampionCtrDropLCB",
        variant="champion",
        threshold=0.05,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=3,
        evaluation_periods=4,
        treat_missing_data="notBreaching",
        target="none",
        guard="published once a 10,000-list baseline is frozen and the last hour of matured windows holds >= 100 lists",
        action="retrain (TrainModelFunction) + notify",
    ),
    AlarmSpec(
        suffix="input-drift",
        metric="InputCategoryPSI",
        threshold=0.2,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=3,
        evaluation_periods=4,
        treat_missing_data="notBreaching",
        target="none",
        guard="published only once a 5,000-event baseline is frozen and the last hour holds >= 500 behaviour events",
        action="retrain (TrainModelFunction) + notify",
    ),
    AlarmSpec(
        suffix="bot-surge",
        metric="BotShare",
        threshold=0.2,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=2,
        evaluation_periods=3,
        treat_missing_data="notBreaching",
        target="none",
        guard="published only with >= 200 behaviour events in the window; bots are already excluded from every metric",
        action="notify (bots already excluded from metrics and training data)",
    ),
    AlarmSpec(
        # The exploration budget's click cost: the champion's hourly mean of ExplorationCtrCost above
        # 3% (the most a 5% slot budget should cost) for 3 hours running. Hourly, because one
        # window's estimate from ~50 lists is far noisier than the budget.
        suffix="exploration-cost",
        metric="ExplorationCtrCost",
        variant="champion",
        statistic="Average",
        threshold=0.03,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=3,
        evaluation_periods=3,
        treat_missing_data="notBreaching",
        target="none",
        guard="published only for matured windows whose lists carry exploration swaps, with >= 50 lists of the variant",
        action="notify (lower SERVING_RULES.exploration share or epsilon)",
        period=3600,
    ),
    AlarmSpec(
        suffix="error-rate",
        metric="ErrorRate",
        threshold=0.05,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=2,
        evaluation_periods=3,
        treat_missing_data="notBreaching",
        target="champion",
        guard="metric math IF(requests >= 50, errors / requests, 0): a minute with fewer than 50 requests cannot alarm; Errors counts 5xx and crashes only (never a 4xx, never a dependency outage)",
        period=60,
    ),
    AlarmSpec(
        suffix="events-delivery",
        metric="DependencyErrors",
        statistic="Sum",
        threshold=5.0,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=2,
        evaluation_periods=3,
        treat_missing_data="notBreaching",
        target="none",
        guard="POST /v1/events answered 503 because the delivery stream took none of a batch: a dependency outage, kept out of Errors",
        period=60,
    ),
    AlarmSpec(
        suffix="ingest-dlq",
        metric="ApproximateNumberOfMessagesVisible",
        threshold=0.0,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=1,
        evaluation_periods=1,
        treat_missing_data="notBreaching",
        target="none",
        guard="the ingest DLQ holds a message",
        namespace="AWS/SQS",
    ),
    AlarmSpec(
        suffix="rollback-dlq",
        metric="ApproximateNumberOfMessagesVisible",
        threshold=0.0,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=1,
        evaluation_periods=1,
        treat_missing_data="notBreaching",
        target="none",
        guard="the rollback function's DLQ holds an alarm it could not act on",
        namespace="AWS/SQS",
        period=60,
    ),
    AlarmSpec(
        suffix="latency-p99",
        metric="LatencyMs",
        statistic="p99",
        threshold=300.0,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=3,
        evaluation_periods=5,
        treat_missing_data="notBreaching",
        target="none",
        guard="p99 over 1-minute periods, 3 of 5; no requests = no datapoint = notBreaching",
        period=60,
    ),
    AlarmSpec(
        suffix="data-freshness",
        metric="MinutesSinceNewestPartition",
        threshold=120.0,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=2,
        evaluation_periods=2,
        treat_missing_data="breaching",
        target="none",
        guard="published every pass; missing means the monitor itself is down, which is breaching",
    ),
    AlarmSpec(
        suffix="quarantine-rate",
        metric="QuarantineRate",
        threshold=0.05,
        comparison="GreaterThanThreshold",
        datapoints_to_alarm=2,
        evaluation_periods=3,
        treat_missing_data="notBreaching",
        target="none",
        guard="published only when >= 1,000 rows were ingested in the window",
    ),
)

# Metric math of the error-rate alarm (serving's EMF Requests and Errors, summed per minute): a
# minute with fewer requests than this cannot alarm, whatever its ratio.
ERROR_RATE_MIN_REQUESTS = 50

# The alarms whose state must be OK for the promoter to advance a canary stage.
PROMOTION_GATE_SUFFIXES: tuple[str, ...] = (
    "challenger-quality",
    "challenger-early-clicks",
    "challenger-score-drift",
    "challenger-coverage-shift",
    "error-rate",
    "latency-p99",
)


def alarm(suffix: str, alarms: tuple[AlarmSpec, ...] = DEFAULT_ALARMS) -> AlarmSpec:
    """The alarm spec with this suffix."""
    for spec in alarms:
        if spec.suffix == suffix:
            return spec
    raise KeyError(suffix)


def alarm_name(stack_name: str, suffix: str) -> str:
    """The physical alarm name the template gives (``<stack>-<suffix>``)."""
    return f"{stack_name}-{suffix}"


def breaches(spec: AlarmSpec, value: float) -> bool:
    """Whether one datapoint breaches ``spec`` (what CloudWatch does per period)."""
    if spec.comparison == "GreaterThanThreshold":
        return value > spec.threshold
    if spec.comparison == "GreaterThanOrEqualToThreshold":
        return value >= spec.threshold
    return value < spec.threshold


def alarm_state(spec: AlarmSpec, points: list[float | None]) -> str:
    """CloudWatch's verdict on the last ``evaluation_periods`` datapoints (oldest first, None = missing).

    ``notBreaching``/``breaching`` fill gaps as good/bad; ``missing``/``ignore`` judge the points
    present, and all-missing is INSUFFICIENT_DATA. Lets tests and the demo replay alarms offline.
    """
    recent: list[float | None] = list(points[-spec.evaluation_periods :])
    window: list[float | None] = [None] * (spec.evaluation_periods - len(recent))
    window += recent
    flags: list[bool | None] = [None if p is None else breaches(spec, p) for p in window]
    if spec.treat_missing_data == "notBreaching":
        flags = [bool(f) for f in flags]
    elif spec.treat_missing_data == "breaching":
        flags = [True if f is None else f for f in flags]
    present = [f for f in flags if f is not None]
    if not present:
        return "INSUFFICIENT_DATA"
    hits = sum(present)
    if hits >= spec.datapoints_to_alarm or (len(present) < spec.datapoints_to_alarm and hits == len(present)):
        return "ALARM"
    return "OK"


def config_with_overrides(raw: str) -> MonitoringConfig:
    """MonitoringConfig with the overrides of ``raw``, a JSON object of its numeric fields.

    Empty means the documented defaults; e.g. a small shop's ``{"champion_baseline_lists": 3000}``.
    Anything else (not JSON, not an object, an unknown or non-numeric field) is an ``InputError``
    naming ``MONITORING_CONFIG``, the variable the function reads it from.
    """
    from shelfwise.errors import InputError

    if not raw.strip():
        return MonitoringConfig()
    try:
        overrides = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"MONITORING_CONFIG is not JSON: {exc}") from exc
    base = MonitoringConfig()
    if not isinstance(overrides, dict):
        raise InputError("MONITORING_CONFIG must be a JSON object of MonitoringConfig fields")
    for key, value in overrides.items():
        current = getattr(base, key, None)
        if key.startswith("_") or not isinstance(current, int | float) or isinstance(value, bool):
            raise InputError(f"MONITORING_CONFIG: {key!r} is not a numeric MonitoringConfig field")
        if not isinstance(value, int | float):
            raise InputError(f"MONITORING_CONFIG: {key} must be a number, got {value!r}")
    return dataclasses.replace(base, **overrides)
