"""Rollout policy: alarm-driven rollback and staged canary promotion, on top of the registry.

Rollback: an alarm entering ALARM that concerns the challenger stops the canary (weight 0,
challenger cleared); one that concerns the champion puts ``previous`` back, but only when the
champion was promoted recently (a long-standing champion failing is an infrastructure problem that
an old model will not fix). Duplicate or stale alarm deliveries are recognised and do nothing.

Probation: a canary starts at a small share (4%) until the label-free checks had a window to look
(a broken model is rolled back there); then the first stage.

Promotion on evidence: the challenger moves through the stages (10% -> 50% -> 100%) only when the
monitor's evidence shows it not worse than the champion beyond the non-inferiority margin (the
anytime-valid lower bound of its click ratio on matured windows), with enough matured data, the
gating alarms OK and the stage old and busy enough; then champion := challenger and previous :=
the old champion (the registry's ``promote``). Missing or insufficient evidence holds the stage; a
stage held longer than ``max_stage_hours`` ends the canary, with the reason.

Optionally (``RolloutPolicy.allocation = "thompson"``) a Thompson-sampling bandit decides the
split while the canary runs instead of the fixed stages (:mod:`shelfwise.canary_bandit`): it moves
the challenger's share between its bounds as the matured rewards come in, each move an audited
change with its posterior and evidence; promotion still needs the same non-inferiority evidence,
and the alarms still roll back.

Every change is made on the registry snapshot the decision read (``expected=``), so it is written
only if nobody changed the aliases since: a promotion decided before a rollback fails rather than
undoing it, and a rollback that loses such a race decides again on the new state. An alarm
notification is marked handled only once its decision is carried out, so a retried delivery of a
rollback that failed half-way completes it.

Every decision, including "hold" and "ignored", is returned and written as an audit record;
alias changes are announced by the registry (EventBridge) and rollbacks also on SNS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from botocore.exceptions import ClientError

from shelfwise.alarm_notices import AlarmNotice, alarm_target, parse_alarm_notices
from shelfwise.canary_bandit import Allocation, BanditPolicy, allocate
from shelfwise.errors import InputError
from shelfwise.instants import aware_time
from shelfwise.monitoring.config import DEFAULT_ALARMS, PROMOTION_GATE_SUFFIXES, AlarmSpec
from shelfwise.registry import AliasConflictError

DECISIONS_PREFIX = "monitoring/decisions/"
Action = Literal["rollback", "advance", "allocate", "promote", "hold", "ignore", "idle", "start"]
ALLOCATIONS = ("stages", "thompson")


class RegistryPort(Protocol):
    """What rollout needs from ``shelfwise.registry.Registry``."""

    def aliases(self) -> Any: ...
    def snapshot(self) -> Any: ...
    def set_canary_weight(
        self, weight: float, *, expected: Any = None, detail: Mapping[str, Any] | None = None
    ) -> Any: ...
    def start_canary(self, version: str, weight: float = 0.1, *, expected: Any = None) -> Any: ...
    def promote(self, version: str | None = None, *, expected: Any = None) -> Any: ...
    def rollback(self, reason: str, scope: str = "auto", *, expected: Any = None) -> Any: ...
    def history(self) -> list[dict[str, Any]]: ...
    def registration(self, version: str) -> dict[str, Any]: ...


# A rollback that lost a race with another alias change decides again this many times.
ROLLBACK_ATTEMPTS = 5
# A challenger alarm that arrives after its challenger was promoted (the promotion raced the
# alarm) accuses the new champion when the promotion is at most this old.
PROMOTION_RACE = timedelta(hours=1)


@dataclass(frozen=True)
class RolloutPolicy:
    """Stages and guards of the staged promotion and of champion rollback."""

    stages: tuple[float, ...] = (0.1, 0.5, 1.0)
    # Probation: a canary starts at this smaller share (0 = at the first stage) and moves to the
    # first stage once the label-free checks (score drift, popularity shift vs the champion,
    # errors) had their look: after this long, with this many challenger impressions and no
    # gating alarm. A broken model is caught there, before a tenth of the shoppers see it.
    probation: float = 0.04
    probation_minutes: float = 10.0
    probation_impressions: int = 100
    # The stage must have served this many challenger impressions...
    min_stage_impressions: int = 2000
    # ...and lasted long enough that its first window's click labels matured (30 min + a window).
    min_stage_minutes: float = 40.0
    # A champion alarm rolls back to `previous` only this long after the promotion.
    champion_rollback_grace_hours: float = 24.0
    # Evidence: matured evaluation windows since the canary started, and decisive interleaved lists
    # (or lists per variant of a split), before non-inferiority can advance a stage.
    min_mature_windows: int = 6
    min_evidence_lists: int = 50
    # A step to more than this share (the challenger then serves most shoppers) and the promotion
    # are judged on the evidence's stricter promotion bound.
    strict_above: float = 0.5
    # A stage that cannot show non-inferiority within this long ends the canary.
    max_stage_hours: float = 24.0
    # Who sets the split while the canary runs: the fixed ``stages`` (from the first stage on), or
    # a Thompson-sampling ``bandit`` starting at the first stage.
    allocation: str = "stages"
    bandit: BanditPolicy = field(default_factory=BanditPolicy)

    def __post_init__(self) -> None:
        if self.allocation not in ALLOCATIONS:
            raise InputError(f"allocation must be one of {', '.join(ALLOCATIONS)}")
        if (
            not self.stages
            or any(not 0 < s <= 1 for s in self.stages)
            or list(self.stages) != sorted(set(self.stages))
        ):
            raise InputError("stages must be increasing weights in (0, 1]")
        if self.stages[-1] != 1.0:
            raise InputError("the last stage must be 1.0 (all traffic) before promotion")
        if not 0 <= self.probation < self.stages[0]:
            raise InputError("the probation share must be below the first stage (0 = none)")

    @property
    def start_weight(self) -> float:
        """The share a canary starts at: the probation's, else (or with the bandit) the first stage's."""
        return self.stages[0] if self.allocation == "thompson" else (self.probation or self.stages[0])

    def next_stage(self, weight: float) -> float | None:
        """The next weight above ``weight``, or None when at the last stage."""
        for s in self.stages:
            if s > weight + 1e-9:
                return s
        return None


@dataclass
class Decision:
    """What the policy decided and did, for logs, the report and the caller."""

    action: Action
    reason: str
    at: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    alarm: str | None = None
    target: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _state(aliases: Any) -> dict[str, Any]:
    if hasattr(aliases, "to_json"):
        return dict(aliases.to_json())
    return dict(aliases)


def _last_promotion_from_canary(
    history: Sequence[Mapping[str, Any]], champion: str | None
) -> datetime | None:
    """When ``champion`` was promoted from the challenger slot, if that promotion is the latest
    canary change (no canary started, advanced or rolled back since); else None."""
    if not champion:
        return None
    for rec in reversed(history):
        action = rec.get("action")
        if action not in {"CanaryStarted", "CanaryAdvanced", "ModelPromoted", "ModelRolledBack"}:
            continue
        was_challenger = (rec.get("before") or {}).get("challenger") == champion
        if action == "ModelPromoted" and rec.get("version") == champion and was_challenger:
            return aware_time(rec["time"], "audit time")
        return None
    return None


def _last(history: Sequence[Mapping[str, Any]], actions: set[str], version: str | None) -> datetime | None:
    for rec in reversed(history):
        if rec.get("action") in actions and (version is None or rec.get("version") == version):
            return aware_time(rec["time"], "audit time")
    return None


class Rollout:
    """Applies the policy through the registry; records decisions in S3 and announces rollbacks."""

    def __init__(
        self,
        registry: RegistryPort,
        *,
        s3: Any = None,
        bucket: str | None = None,
        sns: Any = None,
        topic_arn: str | None = None,
        policy: RolloutPolicy | None = None,
        alarms: Sequence[AlarmSpec] = DEFAULT_ALARMS,
    ) -> None:
        self.registry, self.s3, self.bucket, self.sns, self.topic_arn = registry, s3, bucket, sns, topic_arn
        self.policy = policy or RolloutPolicy()
        self.alarms = alarms

    # ------------------------------------------------------------------ rollback
    def on_alarm(self, notice: AlarmNotice, now: datetime) -> Decision:
        """React to one alarm state change (idempotent: a repeated delivery is a no-op).

        The notification is marked handled only after the decision was carried out and
        recorded; a failure before that leaves it unmarked, so Lambda's retry decides again.
        """
        if notice.state == "ALARM" and alarm_target(notice, self.alarms) != "none" and self._handled(notice):
            before = _state(self.registry.aliases())
            return self._record(
                Decision(
                    "ignore",
                    "duplicate delivery of an alarm already handled",
                    at=now.isoformat(),
                    before=before,
                    after=before,
                    alarm=notice.name,
                    target=alarm_target(notice, self.alarms),
                )
            )
        for attempt in range(ROLLBACK_ATTEMPTS):
            try:
                decision = self._decide_alarm(notice, now)
                break
            except AliasConflictError:
                if attempt == ROLLBACK_ATTEMPTS - 1:
                    raise
        if notice.state == "ALARM" and decision.target not in (None, "none"):
            self._mark_handled(notice)
        return decision

    def _decide_alarm(self, notice: AlarmNotice, now: datetime) -> Decision:
        snap = self.registry.snapshot()
        before = _state(snap.aliases)
        base: dict[str, Any] = {
            "at": now.isoformat(),
            "before": before,
            "after": before,
            "alarm": notice.name,
        }
        if notice.state != "ALARM":
            return self._record(Decision("ignore", f"alarm went to {notice.state}, not ALARM", **base))
        target = alarm_target(notice, self.alarms)
        base["target"] = target
        if target == "none":
            return self._record(Decision("ignore", "alarm does not concern a model version", **base))
        history = self.registry.history()
        challenger, champion = before.get("challenger"), before.get("champion")
        reason = f"{notice.name} in ALARM: {notice.reason}"[:500]
        if target == "challenger" and not challenger and before.get("previous"):
            # The canary may have been promoted while this alarm was on its way (or in the same
            # minute): the accused version is then the champion, and it goes, not the alarm.
            promoted = _last_promotion_from_canary([*history, snap.last_change], champion)
            if promoted is not None and promoted >= notice.changed_at - PROMOTION_RACE:
                after = _state(self.registry.rollback(reason, scope="champion", expected=snap))
                decision = Decision(
                    "rollback",
                    f"champion {champion}, promoted from the canary this alarm accuses, replaced by "
                    f"previous {before['previous']}",
                    **{**base, "after": after},
                )
                return self._announce(self._record(decision))
        if target == "challenger":
            if not challenger:
                return self._record(Decision("ignore", "no canary is running (already rolled back?)", **base))
            started = _last(history, {"CanaryStarted"}, challenger)
            if started and notice.changed_at < started:
                return self._record(Decision("ignore", "alarm predates the current canary", **base))
            after = _state(self.registry.rollback(reason, scope="canary", expected=snap))
            decision = Decision("rollback", f"canary of {challenger} stopped", **{**base, "after": after})
            return self._announce(self._record(decision))
        # Champion alarm. A recently promoted champion is the prime suspect: restore previous (the
        # registry stops a running canary too, since it was compared against the removed champion).
        promoted = _last(history, {"ModelPromoted"}, champion)
        recent = (
            promoted is not None
            and promoted <= notice.changed_at
            and notice.changed_at - promoted <= timedelta(hours=self.policy.champion_rollback_grace_hours)
        )
        if recent and before.get("previous"):
            after = _state(self.registry.rollback(reason, scope="champion", expected=snap))
            decision = Decision(
                "rollback",
                f"champion {champion} replaced by previous {before['previous']}",
                **{**base, "after": after},
            )
            return self._announce(self._record(decision))
        if challenger:
            # An established champion rarely breaks by itself; the canary is the most recent change.
            after = _state(self.registry.rollback(reason, scope="canary", expected=snap))
            decision = Decision(
                "rollback", f"canary of {challenger} stopped (champion alarm)", **{**base, "after": after}
            )
            return self._announce(self._record(decision))
        why = (
            "champion alarm but no previous version to restore"
            if not before.get("previous")
            else "champion not promoted recently; a model rollback would not help, needs a person"
        )
        return self._record(Decision("hold", why, **base))

    def _claim_key(self, notice: AlarmNotice) -> str:
        return f"{DECISIONS_PREFIX}claims/{notice.dedupe_key}.json"

    def _handled(self, notice: AlarmNotice) -> bool:
        """Whether this alarm transition was already acted on (its claim exists)."""
        if self.s3 is None or not self.bucket:
            return False
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._claim_key(notice))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def _mark_handled(self, notice: AlarmNotice) -> None:
        """Record that the transition was acted on (after the action: a failure leaves it open)."""
        if self.s3 is None or not self.bucket:
            return
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._claim_key(notice), Body=b"{}", IfNoneMatch="*")
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) not in {
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            }:
                raise

    def _announce(self, decision: Decision) -> Decision:
        if self.sns is not None and self.topic_arn:
            self.sns.publish(
                TopicArn=self.topic_arn,
                Subject="Shelfwise model rolled back"[:100],
                Message=json.dumps(decision.to_json(), default=str),
                MessageAttributes={"action": {"DataType": "String", "StringValue": decision.action}},
            )
        return decision

    # ------------------------------------------------------------------ canary start
    def offer(self, version: str, *, gate_passed: bool, now: datetime) -> Decision:
        """Start the canary of a newly registered ``version`` at the first stage, when it may start.

        It starts only when the offline gate passed, a champion exists and is another version, and
        no other canary runs: one challenger at a time keeps the comparison clean. Otherwise the
        version waits in the registry and the decision says why.
        """
        snap = self.registry.snapshot()
        aliases = _state(snap.aliases)
        base: dict[str, Any] = {"at": now.isoformat(), "before": aliases, "after": aliases, "target": version}
        if not gate_passed:
            return self._record(Decision("hold", f"{version} did not pass the offline gate", **base))
        if aliases.get("champion") in {None, version}:
            return Decision("idle", f"{version} is the champion; nothing to canary", **base)
        if aliases.get("challenger") == version:
            return Decision("idle", f"{version} is already in canary", **base)
        if aliases.get("challenger"):
            return self._record(
                Decision("hold", f"canary of {aliases['challenger']} still running; {version} waits", **base)
            )
        weight = self.policy.start_weight
        try:
            after = _state(self.registry.start_canary(version, weight, expected=snap))
        except AliasConflictError as exc:
            return self._record(Decision("hold", f"{version} waits: {exc}", **base))
        return self._record(
            Decision("start", f"{version} canary started at {weight:g}", **{**base, "after": after})
        )

    # ------------------------------------------------------------------ promotion
    def step(
        self,
        alarm_states: Mapping[str, str],
        stage_impressions: int,
        now: datetime,
        evidence: Mapping[str, Any] | None = None,
    ) -> Decision:
        """One scheduled promotion step: advance a stage, promote, hold, or end the canary, and say why.

        ``alarm_states`` maps the gating alarms' names to their state (OK / ALARM /
        INSUFFICIENT_DATA); ``stage_impressions`` counts challenger impressions since the current
        stage began (from the monitoring state); ``evidence`` is the monitor's non-inferiority
        evidence (``MonitoringJob.evidence``): without it a stage never advances.
        """
        snap = self.registry.snapshot()
        aliases = _state(snap.aliases)
        base: dict[str, Any] = {"at": now.isoformat(), "before": aliases, "after": aliases}
        challenger, weight = aliases.get("challenger"), float(aliases.get("canary_weight") or 0.0)
        if not challenger:
            return Decision("idle", "no challenger", **base)
        if weight <= 0:
            return self._record(Decision("hold", "canary paused (weight 0)", **base))
        firing = sorted(n for n, s in alarm_states.items() if s == "ALARM")
        if firing:
            return self._record(Decision("hold", f"alarms in ALARM: {', '.join(firing)}", **base))
        history = self.registry.history()
        if self.policy.allocation == "thompson":
            return self._bandit_step(
                snap, base, history, challenger, weight, stage_impressions, now, evidence
            )
        stage_start = _last(history, {"CanaryStarted", "CanaryAdvanced"}, challenger)
        minutes = (now - stage_start).total_seconds() / 60.0 if stage_start else 0.0
        detail: dict[str, Any] = {
            "stage_minutes": round(minutes, 1),
            "stage_impressions": stage_impressions,
            "weight": weight,
            "evidence": dict(evidence) if evidence else None,
        }
        if minutes >= 60.0 * self.policy.max_stage_hours:
            why = self._evidence_gap(evidence, challenger) or "not shown non-inferior"
            reason = (
                f"stage {weight:g} held {minutes / 60:.1f} h (> {self.policy.max_stage_hours:g} h): {why}"
            )
            return self._end_canary(challenger, reason, detail, base)
        if weight < self.policy.stages[0] - 1e-9:
            return self._probation_step(weight, minutes, stage_impressions, snap, detail, base, challenger)
        if minutes < self.policy.min_stage_minutes:
            return self._record(
                Decision(
                    "hold",
                    f"stage too young ({minutes:.0f} < {self.policy.min_stage_minutes:.0f} min)",
                    detail=detail,
                    **base,
                )
            )
        if stage_impressions < self.policy.min_stage_impressions:
            return self._record(
                Decision(
                    "hold",
                    f"stage has {stage_impressions} < {self.policy.min_stage_impressions} challenger impressions",
                    detail=detail,
                    **base,
                )
            )
        nxt = self.policy.next_stage(weight)
        gap = self._evidence_gap(evidence, challenger, promote=nxt is None or nxt > self.policy.strict_above)
        if gap:
            return self._record(Decision("hold", gap, detail=detail, **base))
        try:
            if nxt is None:
                after = _state(self.registry.promote(challenger, expected=snap))
            else:
                after = _state(self.registry.set_canary_weight(nxt, expected=snap))
        except AliasConflictError as exc:
            # A rollback (or an operator) changed the aliases since this step read them: its
            # change stands; the next step decides on the new state.
            return self._record(Decision("hold", str(exc), detail=detail, **base))
        if nxt is None:
            return self._record(
                Decision(
                    "promote", f"{challenger} promoted to champion", detail=detail, **{**base, "after": after}
                )
            )
        return self._record(
            Decision(
                "advance",
                f"{challenger} advanced {weight:g} -> {nxt:g}",
                detail=detail,
                **{**base, "after": after},
            )
        )

    def _probation_step(
        self,
        weight: float,
        minutes: float,
        stage_impressions: int,
        snap: Any,
        detail: dict[str, Any],
        base: dict[str, Any],
        challenger: str,
    ) -> Decision:
        """Probation to the first stage once the label-free checks had their look (no alarm fired:
        the caller held on any); click evidence is the first stage's to gather."""
        p = self.policy
        if minutes < p.probation_minutes:
            why = f"probation too young ({minutes:.0f} < {p.probation_minutes:.0f} min)"
            return self._record(Decision("hold", why, detail=detail, **base))
        if stage_impressions < p.probation_impressions:
            why = f"probation has {stage_impressions} < {p.probation_impressions} challenger impressions"
            return self._record(Decision("hold", why, detail=detail, **base))
        try:
            after = _state(self.registry.set_canary_weight(p.stages[0], expected=snap))
        except AliasConflictError as exc:
            return self._record(Decision("hold", str(exc), detail=detail, **base))
        return self._record(
            Decision(
                "advance",
                f"{challenger} advanced {weight:g} -> {p.stages[0]:g}: probation passed "
                f"({stage_impressions} impressions, label-free checks quiet)",
                detail=detail,
                **{**base, "after": after},
            )
        )

    def _end_canary(
        self, challenger: str, reason: str, detail: dict[str, Any], base: dict[str, Any]
    ) -> Decision:
        """A canary that could not show non-inferiority in time leaves traffic, with the reason."""
        after = _state(self.registry.rollback(reason[:500], scope="canary"))
        return self._record(
            Decision(
                "rollback",
                f"canary of {challenger} ended: {reason}",
                detail=detail,
                **{**base, "after": after},
            )
        )

    def _bandit_step(
        self,
        snap: Any,
        base: dict[str, Any],
        history: Sequence[Mapping[str, Any]],
        challenger: str,
        weight: float,
        canary_impressions: int,
        now: datetime,
        evidence: Mapping[str, Any] | None,
    ) -> Decision:
        """One step of a bandit-allocated canary: end it when too old, promote on non-inferiority
        (the same evidence rule and guards as the last stage, counted from the canary's start),
        else move the split to the bandit's share when it changed enough."""
        p, bp = self.policy, self.policy.bandit
        started = _last(history, {"CanaryStarted"}, challenger)
        last_move = _last(history, {"CanaryStarted", "CanaryAdvanced"}, challenger)
        minutes = (now - started).total_seconds() / 60.0 if started else 0.0
        detail: dict[str, Any] = {
            "allocation": "thompson",
            "canary_minutes": round(minutes, 1),
            "canary_impressions": canary_impressions,
            "weight": weight,
            "evidence": dict(evidence) if evidence else None,
        }
        gap = self._evidence_gap(evidence, challenger, promote=True)
        if minutes >= 60.0 * bp.max_canary_hours:
            reason = f"canary ran {minutes / 60:.1f} h (> {bp.max_canary_hours:g} h): {gap or 'not promoted'}"
            return self._end_canary(challenger, reason, detail, base)
        if gap is None and minutes >= p.min_stage_minutes and canary_impressions >= p.min_stage_impressions:
            try:
                after = _state(self.registry.promote(challenger, expected=snap))
            except AliasConflictError as exc:
                return self._record(Decision("hold", str(exc), detail=detail, **base))
            return self._record(
                Decision(
                    "promote",
                    f"{challenger} promoted to champion from a {weight:g} bandit split",
                    detail=detail,
                    **{**base, "after": after},
                )
            )
        since_move = (now - last_move).total_seconds() / 60.0 if last_move else minutes
        if since_move < bp.min_minutes_between:
            why = f"split stays {weight:g}: last move {since_move:.0f} < {bp.min_minutes_between:g} min ago"
            return self._record(
                Decision("hold", f"{why}; {gap or 'not yet promotable'}", detail=detail, **base)
            )
        alloc = allocate(
            evidence if not evidence or evidence.get("challenger") == challenger else None, bp, weight
        )
        if not isinstance(alloc, Allocation):
            return self._record(
                Decision("hold", f"{gap or 'not yet promotable'}; {alloc}", detail=detail, **base)
            )
        detail["bandit"] = alloc.to_json()
        if abs(alloc.weight - weight) < max(bp.min_change, 1e-9):
            why = (
                f"split stays {weight:g} (bandit {alloc.weight:g}, P(challenger better) "
                f"{alloc.p_challenger_better:.2f}); {gap or 'not yet promotable'}"
            )
            return self._record(Decision("hold", why, detail=detail, **base))
        try:
            after = _state(
                self.registry.set_canary_weight(
                    alloc.weight,
                    expected=snap,
                    detail={
                        "allocation": "thompson",
                        "bandit": alloc.to_json(),
                        "evidence": detail["evidence"],
                    },
                )
            )
        except AliasConflictError as exc:
            return self._record(Decision("hold", str(exc), detail=detail, **base))
        return self._record(
            Decision(
                "allocate",
                f"{challenger} split {weight:g} -> {alloc.weight:g} (P(challenger better) "
                f"{alloc.p_challenger_better:.2f})",
                detail=detail,
                **{**base, "after": after},
            )
        )

    def _evidence_gap(
        self, evidence: Mapping[str, Any] | None, challenger: str, promote: bool = False
    ) -> str | None:
        """Why the evidence does not (yet) allow the next stage (None: non-inferior); ``promote``: judged
        on the stricter ``promotion_lower`` (at ``promotion_confidence``) where stated."""
        p = self.policy
        if not evidence or evidence.get("challenger") != challenger:
            return "no evidence from the monitor for this challenger yet"
        windows = int(evidence.get("mature_windows") or 0)
        if windows < p.min_mature_windows:
            return f"insufficient evidence: {windows} < {p.min_mature_windows} matured windows"
        n = min(int(evidence.get("n_challenger") or 0), int(evidence.get("n_champion") or 0))
        if evidence.get("lower") is None or n < p.min_evidence_lists:
            return f"insufficient evidence: {n} < {p.min_evidence_lists} lists to compare"
        bound = 1.0 - float(evidence.get("margin") or 0.0)
        lower, confidence = evidence["lower"], evidence.get("confidence")
        if promote and evidence.get("promotion_lower") is not None:
            lower, confidence = evidence["promotion_lower"], evidence.get("promotion_confidence")
        if float(lower) < bound:
            return (
                f"not shown non-inferior: click ratio {float(evidence['estimate']):.3f}, lower bound "
                f"{float(lower):.3f} < {bound:.3f} at {float(confidence or 0):.0%}"
            )
        return None

    # ------------------------------------------------------------------ audit
    def _record(self, decision: Decision) -> Decision:
        if self.s3 is not None and self.bucket:
            stamp = datetime.fromisoformat(decision.at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            # Wall-clock nanoseconds order decisions taken at the same (possibly simulated) instant.
            seq = time.time_ns()
            key = f"{DECISIONS_PREFIX}{stamp}-{seq}-{decision.action}.json"
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(decision.to_json(), default=str).encode()
            )
        return decision


def gate_alarm_names(stack_name: str, suffixes: Sequence[str] = PROMOTION_GATE_SUFFIXES) -> list[str]:
    """Physical names of the alarms that must not be in ALARM for a stage to advance."""
    return [f"{stack_name}-{s}" for s in suffixes]


def alarm_states(cloudwatch: Any, names: Sequence[str]) -> dict[str, str]:
    """Current state of each named alarm; an alarm that does not exist reads INSUFFICIENT_DATA."""
    states = {n: "INSUFFICIENT_DATA" for n in names}
    for i in range(0, len(names), 100):
        resp = cloudwatch.describe_alarms(
            AlarmNames=list(names[i : i + 100]), AlarmTypes=["MetricAlarm", "CompositeAlarm"]
        )
        for a in resp.get("MetricAlarms", []) + resp.get("CompositeAlarms", []):
            states[a["AlarmName"]] = a["StateValue"]
    return states


def read_decisions(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Every recorded rollout decision (except idle ones, which are not written), oldest first."""
    out: list[tuple[str, dict[str, Any]]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=DECISIONS_PREFIX):
        for obj in page.get("Contents", []):
            if "/claims/" in obj["Key"]:
                continue
            record = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            out.append((obj["Key"].rsplit("/", 1)[1], record))
    # Keys are <at>-<seq>-<action>: sorting them orders by time, then by recording order.
    return [record for _key, record in sorted(out, key=lambda kr: kr[0])]


def promote_step(
    rollout: Rollout, *, cloudwatch: Any, alarm_names: Sequence[str], model_name: str, now: datetime
) -> Decision:
    """The promote_model function's one domain call: read alarms and stage traffic, then ``step``.

    Stage traffic comes from the monitor's state (``monitoring/state/<model>.json``), counted
    from the stage start the registry's audit trail records (the canary's start, for a bandit).
    """
    from shelfwise.monitoring.state import S3StateStore, stage_impressions

    if rollout.s3 is None or not rollout.bucket:
        raise InputError("promotion needs the monitoring bucket to read stage traffic")
    aliases = _state(rollout.registry.aliases())
    impressions = 0
    evidence = None
    if aliases.get("challenger"):
        state = S3StateStore(rollout.s3, rollout.bucket, model_name).load()
        # A bandit's split moves within one stage: its traffic counts from the canary's start.
        kinds = (
            {"CanaryStarted"}
            if rollout.policy.allocation == "thompson"
            else {"CanaryStarted", "CanaryAdvanced"}
        )
        started = _last(rollout.registry.history(), kinds, aliases["challenger"])
        if state.get("challenger") == aliases["challenger"]:
            impressions = stage_impressions(state, since=started)
            evidence = state.get("evidence")
    return rollout.step(alarm_states(cloudwatch, alarm_names), impressions, now, evidence)


def handle_alarm_event(rollout: Rollout, event: Mapping[str, Any], clock: list[datetime]) -> list[Decision]:
    """The rollback_model function's one domain call: every alarm notice in ``event``, in order.

    ``clock[0]`` is set to each notice's state-change time so audit records carry the time the
    alarm fired (which is also the simulated time in the local runtime).
    """
    decisions = []
    for notice in parse_alarm_notices(event):
        clock[0] = notice.changed_at
        decisions.append(rollout.on_alarm(notice, notice.changed_at))
    return decisions


def offer_registered(rollout: Rollout, event: Mapping[str, Any], now: datetime) -> Decision:
    """The promote_model function's answer to a ``ModelRegistered`` event: offer the version for canary.

    Whoever registered it (the train_model Lambda, the Batch job, an operator's ``shelfwise train
    --register``), the version meets the same gate and canary. The gate's outcome is read from the
    registry's ``registration.json``, not trusted from the event; a repeated delivery is a no-op.
    """
    detail = event.get("detail")
    version = detail.get("version") if isinstance(detail, Mapping) else None
    if not isinstance(version, str) or not version:
        raise InputError("a ModelRegistered event needs detail.version")
    registration = rollout.registry.registration(version)
    return rollout.offer(version, gate_passed=bool(registration.get("offered_for_canary")), now=now)
