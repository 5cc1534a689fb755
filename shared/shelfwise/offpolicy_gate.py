"""The offline gate's off-policy half: a candidate estimated worse online than the champion is
registered but never offered for canary, so a broken model reaches no shopper at all.

Both models are estimated on the same logged lists with the same estimator (doubly robust,
position level, clicks per list): the candidate fails when its estimate is below
``champion * (1 - tolerance)``. When the log is too small for an estimate, the gate does not apply
(the metric gate alone decides, as before). When the log does not cover the candidate (its lists
hold items the logging policy never showed, beyond the refusal's threshold), the gate fails
closed by default: such a model's online behaviour is unknown, and a broken export looks exactly
like that; ``on_unsupported="pass"`` lets it through to the canary and its alarms instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shelfwise.offpolicy import OpeConfig, OpeReport, evaluate
from shelfwise.offpolicy_log import (
    LoggedData,
    Scorer,
    bundle_scorer,
    candidate_lists,
    logged_lists,
    two_rank_direct_model,
)

ESTIMATOR = ("dr", "position", "ctr")


@dataclass(frozen=True)
class OffPolicyVerdict:
    applied: bool
    passed: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "passed": self.passed, "reasons": self.reasons, **self.details}


def off_policy_verdict(
    candidate: OpeReport, champion: OpeReport, tolerance: float, on_unsupported: str = "refuse"
) -> OffPolicyVerdict:
    """Compare two reports on the same lists (doubly robust clicks per list)."""
    c, ch = candidate.get(*ESTIMATOR), champion.get(*ESTIMATOR)
    details: dict[str, Any] = {
        "estimator": "/".join(ESTIMATOR),
        "lists": candidate.n_lists,
        "coverage": round(candidate.coverage, 4),
        "candidate": None
        if c.value is None
        else [round(c.value, 5), round(c.lower or 0, 5), round(c.upper or 0, 5)],
        "champion": None
        if ch.value is None
        else [round(ch.value, 5), round(ch.lower or 0, 5), round(ch.upper or 0, 5)],
        "tolerance": tolerance,
    }
    if ch.value is None:
        return OffPolicyVerdict(False, True, [f"off-policy: not applied, champion {ch.refused}"], details)
    if c.value is None:
        why = c.refused or "no estimate"
        if why.startswith("support") and on_unsupported == "refuse":
            return OffPolicyVerdict(
                True, False, [f"off-policy: the logged lists do not cover the candidate ({why})"], details
            )
        return OffPolicyVerdict(False, True, [f"off-policy: not applied ({why})"], details)
    if c.value < ch.value * (1.0 - tolerance):
        return OffPolicyVerdict(
            True,
            False,
            [
                f"off-policy: estimated {c.value:.4f} clicks per list [{c.lower:.4f}, {c.upper:.4f}] against the "
                f"champion's {ch.value:.4f}, worse beyond tolerance {tolerance:.0%}"
            ],
            details,
        )
    return OffPolicyVerdict(True, True, [], details)


def off_policy_check(
    data: LoggedData,
    champion: Scorer,
    tolerance: float,
    config: OpeConfig | None = None,
    on_unsupported: str = "refuse",
) -> Callable[[Path], OffPolicyVerdict]:
    """What :meth:`shelfwise.registry.Registry.register` calls with the candidate's bundle directory."""

    def check(bundle_dir: Path) -> OffPolicyVerdict:
        from shelfwise.serving.model import LoadedModel

        model = LoadedModel.from_directory(bundle_dir, Path(bundle_dir).name)
        cand = bundle_scorer(model)

        def both(ref: str, k: int, /) -> list[str] | None:
            return cand(ref, k) if champion(ref, k) is not None else None

        usable, target, _ = candidate_lists(data, both)
        with_champion, champ_target, n_items = candidate_lists(usable, champion)
        cfg = config or OpeConfig()
        # The direct model: click rates by the champion's rank of an item for that shopper (the
        # logs were served by the champion, so those rates are what they measure) and by the
        # model's own rank, so a model's picks the champion ranks low are rated by both.
        n_ranked = int(model.catalog.n_items)
        c_dm = two_rank_direct_model(with_champion, target, champion, cand, n_ranked)
        ch_dm = two_rank_direct_model(with_champion, champ_target, champion, champion, n_ranked)
        c_report = evaluate(usable.lists, target, config=cfg, n_items=n_items, direct=c_dm)
        ch_report = evaluate(usable.lists, champ_target, config=cfg, n_items=n_items, direct=ch_dm)
        return off_policy_verdict(c_report, ch_report, tolerance, on_unsupported)

    return check


def registry_off_policy_check(
    events: Any,
    registry: Any,
    work_dir: str | Path,
    config: OpeConfig | None = None,
    on_unsupported: str = "refuse",
) -> Callable[[Path], OffPolicyVerdict] | None:
    """The off-policy check for a registration, from curated events and the registry's champion.

    None (the metric gate alone decides) when there is no champion, the events hold no lists the
    champion served, or none of them explored: without exploration the log covers only what the
    champion itself shows, so every different candidate would look unsupported.
    """
    from shelfwise.errors import InputError
    from shelfwise.serving.model import LoadedModel

    champion = registry.aliases().champion
    if champion is None:
        return None
    try:
        data = logged_lists(events)
    except InputError:
        return None
    served = data.subset(data.model_versions == champion)
    if served.lists.n == 0 or not served.lists.spread.any():
        return None
    bundle = registry.download(champion, Path(work_dir) / f"ope-{champion}")
    scorer = bundle_scorer(LoadedModel.from_directory(bundle, champion))
    return off_policy_check(served, scorer, registry.gate_tolerance, config, on_unsupported)


def registration_off_policy_check(
    events: Any,
    registry: Any,
    work_dir: str | Path,
    config: OpeConfig | None = None,
    warn: Callable[[str], None] | None = None,
) -> Callable[[Path], OffPolicyVerdict] | None:
    """``registry_off_policy_check`` for whoever registers a trained version (the scheduled job, the
    Batch job, ``shelfwise train --register``): when it cannot be built (the champion's bundle
    unreadable, say), ``warn`` hears why and the metric gate decides alone."""
    try:
        return registry_off_policy_check(events, registry, work_dir, config)
    except Exception as exc:
        if warn is not None:
            warn(f"off-policy gate unavailable: {type(exc).__name__}: {exc}"[:500])
        return None
