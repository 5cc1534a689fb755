"""Thompson sampling over the canary's traffic split: the challenger's share follows the evidence.

The reward is the monitor's matured, list-level one: a list is rewarded when it got a click within
the attribution window (``MonitoringJob.evidence``: clicked lists per variant on matured windows
since the canary started; for an interleaved canary, the interleaved lists each model won). Each
variant's reward rate has a Beta(1 + rewarded, 1 + unrewarded) posterior; the challenger's share
is the posterior probability that it is the better variant (probability matching: what per-request
Thompson sampling sends it on average), kept between a minimum (so the canary keeps learning and
is never paused by the bandit) and the smaller of the challenger's cap and one minus the
champion's floor. For an interleaved canary the posterior is over the challenger's share of the
decisive lists, and "better" means above one half.

Purchases are not a reward here: their 24-hour attribution window is as long as a canary. The
posterior draws come from numpy's generator seeded from the policy's seed, the challenger and the
counts, so the same evidence always gives the same split: reproducible in tests, and a repeated
promotion step does not move traffic twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from shelfwise.errors import InputError


@dataclass(frozen=True)
class BanditPolicy:
    """Bounds and pace of the Thompson-sampling split."""

    # The champion always keeps at least this share of traffic, and the challenger never gets more
    # than its cap: the effective ceiling is the smaller of the two.
    champion_floor: float = 0.5
    challenger_cap: float = 0.5
    # The bandit never sends the challenger less than this (0 would pause the canary).
    challenger_min: float = 0.05
    # No split before each variant has this many matured lists (a posterior from a handful of lists
    # is a coin toss), and no move smaller than ``min_change`` (each move is an audited alias change).
    min_lists: int = 50
    min_change: float = 0.05
    # One move at most multiplies the challenger's share by this (cuts are not limited): an early,
    # noisy posterior cannot send a fresh challenger from 10% to the cap at once.
    max_growth: float = 2.0
    # At most one allocation change per this many minutes (rewards mature in 30 minutes).
    min_minutes_between: float = 15.0
    # A canary that shows no non-inferiority within this long ends, like a stage held too long.
    max_canary_hours: float = 72.0
    # Posterior draws per decision: the share's Monte Carlo error is at most 0.5 / sqrt(draws)
    # (0.008 at 4,000), well inside ``min_change``.
    draws: int = 4000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("champion_floor", "challenger_cap", "challenger_min"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must be in [0, 1]")
        if not 0 < self.challenger_min <= self.ceiling:
            raise InputError(
                "challenger_min must be above 0 and at most min(challenger_cap, 1 - champion_floor)"
            )
        if self.draws < 100 or self.min_lists < 1 or self.min_change < 0 or self.max_canary_hours <= 0:
            raise InputError("draws >= 100, min_lists >= 1, min_change >= 0 and max_canary_hours > 0")
        if self.max_growth <= 1:
            raise InputError("max_growth must be above 1")

    @property
    def ceiling(self) -> float:
        """The highest challenger share the bandit may set."""
        return min(self.challenger_cap, 1.0 - self.champion_floor)

    def bound(self, share: float, current: float | None = None) -> float:
        """``share`` within the bounds, and at most ``max_growth`` times the ``current`` share."""
        top = self.ceiling if current is None else min(self.ceiling, max(current, 1e-9) * self.max_growth)
        return max(min(share, top), min(self.challenger_min, top))


@dataclass(frozen=True)
class Allocation:
    """One Thompson-sampling decision: the posterior, the probability the challenger is better,
    and the share it gets (recorded with every allocation change)."""

    design: str
    p_challenger_better: float
    weight: float
    posterior_challenger: tuple[int, int]
    posterior_champion: tuple[int, int] | None
    draws: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _seed(policy: BanditPolicy, challenger: str, counts: tuple[int, ...]) -> int:
    text = f"{policy.seed}|{challenger}|{','.join(map(str, counts))}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def allocate(
    evidence: Mapping[str, Any] | None, policy: BanditPolicy, current: float | None = None
) -> Allocation | str:
    """The challenger's share from the monitor's ``evidence`` (a move from the ``current`` share,
    when given), or why there is none yet."""
    # Imported here: the rollback function imports rollout (and this module) without numpy's layer.
    import numpy as np

    if not evidence or not evidence.get("challenger"):
        return "no evidence from the monitor for this challenger yet"
    challenger = str(evidence["challenger"])
    if evidence.get("design") == "interleaved":
        w_c, w_b = int(evidence.get("wins_challenger") or 0), int(evidence.get("wins_champion") or 0)
        if w_c + w_b < policy.min_lists:
            return f"bandit waits: {w_c + w_b} < {policy.min_lists} decisive interleaved lists"
        seed = _seed(policy, challenger, (w_c, w_b))
        rng = np.random.default_rng(seed)
        post_c, post_b = (1 + w_c, 1 + w_b), None
        better = int((rng.beta(*post_c, size=policy.draws) > 0.5).sum())
    elif evidence.get("design") == "split":
        n_c, x_c = int(evidence.get("lists_challenger") or 0), int(evidence.get("clicked_challenger") or 0)
        n_b, x_b = int(evidence.get("lists_champion") or 0), int(evidence.get("clicked_champion") or 0)
        if min(n_c, n_b) < policy.min_lists:
            return f"bandit waits: {min(n_c, n_b)} < {policy.min_lists} matured lists per variant"
        if not (0 <= x_c <= n_c and 0 <= x_b <= n_b):
            raise InputError("evidence counts clicked lists outside 0..lists")
        seed = _seed(policy, challenger, (n_c, x_c, n_b, x_b))
        rng = np.random.default_rng(seed)
        post_c, post_b = (1 + x_c, 1 + n_c - x_c), (1 + x_b, 1 + n_b - x_b)
        draws_c = rng.beta(*post_c, size=policy.draws)
        better = int((draws_c > rng.beta(*post_b, size=policy.draws)).sum())
    else:
        return "bandit waits: the evidence has no design (split or interleaved) yet"
    p = better / policy.draws
    return Allocation(
        design=str(evidence["design"]),
        p_challenger_better=round(p, 4),
        weight=policy.bound(round(p, 4), current),
        posterior_challenger=post_c,
        posterior_champion=post_b,
        draws=policy.draws,
        seed=seed,
    )
