"""`shelfwise bench canary_bandit`: the Thompson-sampling split against the fixed stages, same runs.

A counts-level Monte Carlo of canaries. Window by window (5 minutes), ``--lists`` requests are
split between champion and challenger by the current weight, and each list gets a click with its
variant's list CTR. The decisions are the product's own: ``Rollout.step`` (stages or bandit) every
window on the monitor's evidence (``MonitoringJob.evidence`` over the windows matured so far), and
``Rollout.on_alarm`` when the challenger-quality alarm (its bound and M-of-N rule, as in
``bench detection``) goes to ALARM. The registry is an in-memory stand-in with the same alias
semantics and audit history (this is a benchmark, not the product: the real registry on moto is
exercised by the tests).

Both policies see the same traffic draws per run (common random numbers), over ``--hours``.
Reported per scenario (the challenger's CTR relative to the champion's) and policy: the share of
lists served by the worse variant, the regret (expected clicks lost against always serving the
better variant, per 1,000 lists), how often the challenger was promoted or taken out, and the
median hours to promotion.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shelfwise.alarm_notices import AlarmNotice
from shelfwise.canary_bandit import BanditPolicy
from shelfwise.errors import ConflictError
from shelfwise.monitoring.config import DEFAULT_ALARMS, MonitoringConfig, alarm_state
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.state import Deployment, MemoryStateStore
from shelfwise.registry import Aliases, AliasSnapshot
from shelfwise.rollout import Rollout, RolloutPolicy
from shelfwise_local.bench._common import emit, peak_rss_mb
from shelfwise_local.bench.detection_mc import quality_bound

T0 = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
K = 10
# A window's clicks are counted as matured by the pass 35 minutes after it began (30-minute
# attribution, then the window itself).
MATURE_AFTER = 7
QUALITY = next(a for a in DEFAULT_ALARMS if a.suffix == "challenger-quality")


@dataclass
class MemoryRegistry:
    """The registry's alias semantics and audit history in memory (``RegistryPort``)."""

    clock: list[datetime]
    state: Aliases = field(default_factory=lambda: Aliases("v1"))
    records: list[dict[str, Any]] = field(default_factory=list)

    def aliases(self) -> Aliases:
        return self.state

    def snapshot(self) -> AliasSnapshot:
        return AliasSnapshot(self.state, None, len(self.records), self.records[-1] if self.records else {})

    def _change(self, action: str, version: str, after: Aliases, **detail: Any) -> Aliases:
        before = self.state
        self.state = after
        self.records.append(
            {
                "time": self.clock[0].isoformat(),
                "action": action,
                "version": version,
                "before": before.to_json(),
                "after": after.to_json(),
                **detail,
            }
        )
        return after

    def start_canary(self, version: str, weight: float = 0.1, *, expected: Any = None) -> Aliases:
        s = self.state
        return self._change("CanaryStarted", version, Aliases(s.champion, version, s.previous, weight))

    def set_canary_weight(self, weight: float, *, expected: Any = None, detail: Any = None) -> Aliases:
        s = self.state
        if s.challenger is None:
            raise ConflictError("no challenger")
        after = Aliases(s.champion, s.challenger, s.previous, weight)
        return self._change("CanaryAdvanced", s.challenger, after, **(detail or {}))

    def promote(self, version: str | None = None, *, expected: Any = None) -> Aliases:
        s = self.state
        target = version or s.challenger
        assert target is not None
        return self._change("ModelPromoted", target, Aliases(target, None, s.champion, 0.0))

    def rollback(self, reason: str, scope: str = "auto", *, expected: Any = None) -> Aliases:
        s = self.state
        assert s.challenger is not None
        return self._change(
            "ModelRolledBack", s.challenger, Aliases(s.champion, None, s.previous, 0.0), reason=reason
        )

    def history(self) -> list[dict[str, Any]]:
        return list(self.records)

    def registration(self, version: str) -> dict[str, Any]:
        return {"offered_for_canary": True}


@dataclass
class Outcome:
    lists: int = 0
    worse_lists: int = 0
    regret: float = 0.0
    promoted_at: float | None = None  # hours after the canary started
    ended: str | None = None  # "alarm" or "age"


def one_canary(
    policy: RolloutPolicy, rates: tuple[float, float], lists: int, windows: int, rng: np.random.Generator
) -> Outcome:
    """One canary of challenger rate ``rates[1]`` against champion rate ``rates[0]``."""
    cfg = MonitoringConfig()
    clock = [T0]
    reg = MemoryRegistry(clock)
    rollout = Rollout(reg, policy=policy)
    reg.start_canary("v2", policy.stages[0])
    job = MonitoringJob(None, None, MemoryStateStore(), cfg)  # type: ignore[arg-type]
    state: dict[str, Any] = {
        "challenger": "v2",
        "champion": "v1",
        "canary_started_at": (T0 + WINDOW).isoformat(),
        "windows": {},
    }
    r_b, r_c = rates
    better, gap = max(r_b, r_c), abs(r_c - r_b)
    out = Outcome()
    counts: list[tuple[int, int, int, int]] = []  # (n_c, x_c, n_b, x_b) per window
    cum = np.zeros(4, dtype=np.int64)
    points: list[float | None] = []
    impressions: list[int] = []
    for w in range(windows):
        a = reg.aliases()
        weight = a.canary_weight if a.challenger else 0.0
        serving_c = a.champion == "v2"  # promoted
        n_c = int(rng.binomial(lists, weight))
        n_b = lists - n_c
        x_c = int(rng.binomial(n_c, r_c))
        x_b = int(rng.binomial(n_b, r_c if serving_c else r_b))
        counts.append((n_c, x_c, n_b, x_b))
        rate_of_served = (n_c * r_c + n_b * (r_c if serving_c else r_b)) / lists
        out.lists += lists
        out.regret += lists * (better - rate_of_served)
        if gap > 0:
            worse_is_c = r_c < r_b
            out.worse_lists += (n_c + (n_b if serving_c else 0)) if worse_is_c else (0 if serving_c else n_b)
        clock[0] = T0 + (w + 1) * WINDOW
        if not a.challenger:
            continue
        # The monitor: cumulative quality bound (alarm), matured windows into the evidence.
        cum += np.array([x_c, n_c, x_b, n_b])
        b = quality_bound(cfg, False, int(cum[0]), int(cum[1]), int(cum[2]), int(cum[3]))
        points.append(None if b is None else b.drop_lcb)
        impressions.append(n_c * K)
        m = w - MATURE_AFTER + 1
        if m >= 0:
            mc, mxc, mb, mxb = counts[m]
            state["windows"][(T0 + m * WINDOW).isoformat()] = {
                "click": {"challenger|v2": [mc, mxc], "champion|v1": [mb, mxb]}
            }
        if alarm_state(QUALITY, points) == "ALARM":
            notice = AlarmNotice(f"bench-{QUALITY.suffix}", "ALARM", clock[0], "Threshold Crossed")
            if rollout.on_alarm(notice, clock[0]).action == "rollback":
                out.ended = "alarm"
            continue
        evidence = job.evidence(state, Deployment("v1", "v2", weight), clock[0])
        since = max(
            (
                datetime.fromisoformat(r["time"])
                for r in reg.records
                if r["action"]
                in (
                    {"CanaryStarted"}
                    if policy.allocation == "thompson"
                    else {"CanaryStarted", "CanaryAdvanced"}
                )
            ),
        )
        stage_imp = sum(impressions[int((since - T0) / WINDOW) :])
        d = rollout.step({}, stage_imp, clock[0], evidence)
        if d.action == "promote":
            out.promoted_at = (w + 1) * 5 / 60
        elif d.action == "rollback":
            out.ended = "age"
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="shelfwise bench canary_bandit", description=__doc__.splitlines()[0])
    ap.add_argument("--lists", type=int, default=400, help="lists (requests) per 5-minute window")
    ap.add_argument("--hours", type=float, default=24.0, help="horizon of each canary run")
    ap.add_argument("--runs", type=int, default=30, help="Monte Carlo runs per scenario and policy")
    ap.add_argument("--ctr", type=float, default=0.3, help="the champion's list CTR")
    ap.add_argument(
        "--relative",
        default="0.1,0,-0.05,-0.15,-0.5",
        help="challenger CTRs relative to the champion's (comma-separated)",
    )
    ap.add_argument("--champion-floor", type=float, default=BanditPolicy.champion_floor)
    ap.add_argument("--challenger-cap", type=float, default=BanditPolicy.challenger_cap)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    if args.lists < 1 or args.runs < 1 or args.hours <= 0 or not 0 < args.ctr < 1:
        ap.error("--lists, --runs and --hours must be positive and --ctr in (0, 1)")
    t0 = time.perf_counter()
    windows = int(args.hours * 12)
    staged = RolloutPolicy()
    thompson = replace(
        staged,
        allocation="thompson",
        bandit=BanditPolicy(champion_floor=args.champion_floor, challenger_cap=args.challenger_cap),
    )
    scenarios = {}
    for rel in [float(x) for x in args.relative.split(",")]:
        rates = (args.ctr, min(1.0, args.ctr * (1 + rel)))
        row: dict[str, Any] = {}
        for name, policy in (("stages", staged), ("thompson", thompson)):
            outs = [
                one_canary(policy, rates, args.lists, windows, np.random.default_rng([args.seed, run]))
                for run in range(args.runs)
            ]
            promoted = [o.promoted_at for o in outs if o.promoted_at is not None]
            row[name] = {
                "worse_share": round(sum(o.worse_lists for o in outs) / sum(o.lists for o in outs), 4),
                "regret_per_1000_lists": round(
                    1000 * sum(o.regret for o in outs) / sum(o.lists for o in outs), 3
                ),
                "promoted": round(len(promoted) / len(outs), 3),
                "ended_by_alarm": round(sum(o.ended == "alarm" for o in outs) / len(outs), 3),
                "ended_by_age": round(sum(o.ended == "age" for o in outs) / len(outs), 3),
                "median_hours_to_promotion": round(float(np.median(promoted)), 2) if promoted else None,
            }
        scenarios[f"{rel:+.0%}"] = row
        print(f"challenger {rel:+.0%}: {row}", file=sys.stderr)
    emit(
        {
            "lists_per_window": args.lists,
            "hours": args.hours,
            "runs": args.runs,
            "champion_ctr": args.ctr,
            "bandit": {"champion_floor": args.champion_floor, "challenger_cap": args.challenger_cap},
            "scenarios": scenarios,
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0
