"""The demo's sizes and settings: one run of the loop, and the smaller run the e2e test uses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
WINDOW_S = 300
# Serving explores 5% of slots (swaps from the model's next 30 items) and logs propensities, so the
# registry's gate can estimate a new version off-policy before it sees traffic (docs/offpolicy.md).
DEMO_SERVING_RULES: dict[str, Any] = {
    "exclude_out_of_stock": True,
    "exclude_purchased": True,
    "exploration": {"share": 1.0, "epsilon": 0.05, "pool": 30},
}
# The demo's champion serves a few hundred known-user lists before v3 arrives (the fast run ~500);
# the platform defaults are 1,000 lists and an effective sample size of 200.
DEMO_OPE_MIN_LISTS = 150
DEMO_OPE_MIN_ESS = 100.0


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run. ``fast()`` is the e2e test's smaller run of the same loop."""

    n_users: int = 5000
    n_items: int = 1500
    history_days: int = 6
    v1_days: int = 3  # v1 learns from the first days only; v2 from all of them (+ served feedback)
    sessions_per_user_day: float = 1.0
    seed: int = 7
    k: int = 10
    # Requests per 5-minute window, the same in every phase (the shop's stable traffic).
    requests: int = 400
    # Template parameter CanaryMode. The split's control is the champion's 90% of the traffic, so
    # at this traffic it catches a broken model sooner than interleaving, whose evidence is only
    # the canary's own clicked lists (docs/demo.md); --canary-mode interleave runs the other design.
    canary_mode: str = "split"
    # Template parameter CanaryAllocation: the fixed stages, or the Thompson-sampling split.
    canary_allocation: str = "stages"
    stable_windows: int = 3
    # The serving day (None: the most recent one ending today); any weekday.
    serving_day: date | None = None
    # Champion CTR baseline (MonitoringConfig.champion_baseline_lists, default 10,000) and its
    # lookback (default 12 windows): sized to the demo's shop through MONITORING_CONFIG.
    champion_baseline_lists: int = 1000
    champion_lookback_windows: int = 6
    # Promotion evidence (MonitoringConfig.noninferiority_margin and its interleaved twin, defaults
    # 0.03 and 0.06): a canary of a couple of platform hours at this traffic can show near-equal
    # models non-inferior only within a wide margin (docs/demo.md); production canaries run for days.
    noninferiority_margin: float = 0.4
    # Share of users whose tastes change. At 30% the ItemKNN champion loses ~15% of its list CTR,
    # which the demo's traffic cannot resolve in 30 windows; 50% is a clear, detectable drift.
    drift_share: float = 0.5
    taste_drift: bool = True  # the e2e test's --fast run stops after the rollback
    max_canary_windows: int = 50
    max_broken_windows: int = 12
    # A broken model must be out within one window, having placed at most 5% of the items shown.
    # A canary starts on probation (4% of traffic, two windows), where the popularity-shift alarm
    # judges it from 5 shoppers per variant in its first window (docs/monitoring.md). Interleaved
    # lists have no challenger variant for the check: early clicks decide (10% of the items, plus noise).
    detection_windows_max: int = 1
    exposed_share_max: float = 0.05
    interleaved_detection_windows_max: int = 8
    interleaved_exposed_share_max: float = 0.13
    max_drift_windows: int = 30
    # Families trained beside the defaults, e.g. "sequential" (needs `make torch`).
    extra_families: str = ""
    # The v2 challenger's family, e.g. "sequential" (needs `make torch`): served by an operator
    # override of the guarded selection, past the offline gate's comparisons with other models
    # (docs/training.md), then canaried, monitored and promoted or rolled back on evidence.
    challenger_family: str = ""

    @classmethod
    def fast(cls) -> DemoConfig:
        return cls(stable_windows=2, champion_baseline_lists=800, taste_drift=False)
