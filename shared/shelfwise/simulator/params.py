"""Parameters of the simulated shop and the incidents it can inject.

Defaults are tuned so a default run resembles a real shop (docs/simulator.md has the comparison
with Taobao UserBehavior's published mix and the UCI Online Retail II log).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shelfwise.errors import InputError

INCIDENTS: tuple[str, ...] = (
    "taste_drift",
    "new_category",
    "price_shock",
    "data_outage",
    "schema_change",
    "bot_traffic",
    "corrupted_export",
)

# Default options per incident; `--incident NAME@DAY` uses them, the API can override any.
INCIDENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "taste_drift": {"share": 0.3},
    "new_category": {"items_share": 0.06, "boost": 6.0},
    "price_shock": {"factor": 1.6, "top_category": 0},
    "data_outage": {"hours": 6.0},
    "schema_change": {"rename": {"price": "unit_price"}, "extra": {"channel": "app"}},
    "bot_traffic": {"views": 5000, "interval_s": 1.0},
    "corrupted_export": {"share": 0.005},
}


class SimulatorError(InputError):
    """Bad simulator parameters or incident specification (the message says which and why)."""


@dataclass(frozen=True)
class Incident:
    """An incident switched on at simulated day ``at`` (fractional: 2.5 = day 2 at 12:00 UTC)."""

    name: str
    at: float
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in INCIDENTS:
            raise SimulatorError(f"unknown incident {self.name!r}; known: {', '.join(INCIDENTS)}")
        if not math.isfinite(self.at) or self.at < 0:
            raise SimulatorError(f"incident {self.name!r}: time must be a day >= 0, got {self.at}")
        unknown = set(self.options) - set(INCIDENT_DEFAULTS[self.name])
        if unknown:
            raise SimulatorError(f"incident {self.name!r}: unknown options {sorted(unknown)}")

    def opt(self, key: str) -> Any:
        """The option ``key``, or its default."""
        return self.options.get(key, INCIDENT_DEFAULTS[self.name][key])

    @property
    def day(self) -> int:
        return math.floor(self.at)

    @classmethod
    def parse(cls, spec: str) -> Incident:
        """``NAME@DAY`` (DAY may be fractional), e.g. ``taste_drift@3`` or ``data_outage@2.25``."""
        name, sep, at = spec.partition("@")
        if not sep:
            raise SimulatorError(f"incident {spec!r}: expected NAME@DAY, e.g. taste_drift@3")
        try:
            when = float(at)
        except ValueError:
            raise SimulatorError(f"incident {spec!r}: DAY must be a number, got {at!r}") from None
        return cls(name.strip(), when)


@dataclass(frozen=True)
class ShopParams:
    """Everything that shapes the shop. Same params + same seed = byte-identical output."""

    n_users: int = 10_000
    n_items: int = 5_000
    n_days: int = 7
    start: date = date(2026, 1, 5)  # a Monday
    dim: int = 16
    n_top_categories: int = 8
    n_sub_categories: int = 6
    # Users: share existing at day 0 (the rest join evenly over the period), heavy-tailed activity.
    initial_user_share: float = 0.7
    activity_sigma: float = 1.1
    sessions_per_user_day: float = 0.22
    anonymous_share: float = 0.25
    login_share: float = 0.5
    # Sessions: lognormal number of views, share starting with a search, share exploring outside
    # the user's favourite categories, share of replenishment sessions (repeat purchases).
    views_mu: float = 1.35
    views_sigma: float = 0.95
    search_share: float = 0.25
    explore_share: float = 0.2
    replenish_share: float = 0.03
    # Shopping missions: a user's interest stays on one category for a while (comparing, deciding,
    # coming back over several days); this share of their browsing sessions follows the current
    # mission, which changes every `mission_days` (per-user phase). A mission is a need outside
    # the favourites (a category by its weight) `mission_explore` of the time, else a favourite;
    # `mission_complement` of the missions follow up on the previous one with its category's
    # complement (accessories after a device, refills after an appliance).
    mission_share: float = 0.6
    mission_days: float = 3.0
    mission_explore: float = 0.5
    mission_complement: float = 0.4
    # Items: share launched before day 0 (the rest arrive over the period), Zipf exponent.
    initial_item_share: float = 0.9
    zipf_a: float = 1.05
    in_stock_share: float = 0.95
    consumable_share: float = 0.25
    # Funnel: P(event) = sigmoid(base + slope * true affinity); the bases are calibrated when the
    # shop is built so that these rates hold whatever the catalogue's size (Taobao-like defaults).
    view_to_cart: float = 0.058
    view_to_fav: float = 0.034
    cart_to_purchase: float = 0.37
    funnel_slope: float = 0.9
    remove_share: float = 0.3
    price_elasticity: float = 1.5
    # Closed loop: P(click | shown at position p) = sigmoid(click_base + slope * affinity) / log2(p + 2);
    # then cart and purchase with their own bases.
    click_base: float = -4.0
    loop_cart_base: float = -2.0
    loop_buy_base: float = -1.0
    incidents: tuple[Incident, ...] = ()

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_days", "dim", "n_top_categories", "n_sub_categories"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SimulatorError(f"{name} must be a positive integer, got {value!r}")
        if self.n_items < self.n_top_categories * self.n_sub_categories:
            raise SimulatorError(
                f"n_items ({self.n_items}) must be at least the number of leaf categories "
                f"({self.n_top_categories * self.n_sub_categories})"
            )
        for name in (
            "initial_user_share",
            "anonymous_share",
            "login_share",
            "search_share",
            "explore_share",
            "replenish_share",
            "mission_share",
            "mission_explore",
            "mission_complement",
            "initial_item_share",
            "in_stock_share",
            "consumable_share",
            "remove_share",
            "view_to_cart",
            "view_to_fav",
            "cart_to_purchase",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SimulatorError(f"{name} must be within [0, 1], got {value!r}")
        if not (math.isfinite(self.mission_days) and self.mission_days > 0):
            raise SimulatorError(f"mission_days must be a positive number of days, got {self.mission_days!r}")
        for inc in self.incidents:
            if inc.at >= self.n_days:
                raise SimulatorError(
                    f"incident {inc.name}@{inc.at} is after the last simulated day ({self.n_days - 1})"
                )

    @property
    def n_leaves(self) -> int:
        return self.n_top_categories * self.n_sub_categories

    @property
    def start_ms(self) -> int:
        return int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp() * 1000)

    def day_date(self, day: int) -> date:
        return self.start + timedelta(days=day)

    def incident(self, name: str) -> Incident | None:
        """The first incident of that name, if switched on."""
        return next((i for i in self.incidents if i.name == name), None)

    def with_incidents(self, *incidents: Incident) -> ShopParams:
        return replace(self, incidents=tuple(incidents))
