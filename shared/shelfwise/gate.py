"""The offline gate: whether a registered version is offered for canary, and the reasons why not.

A candidate must beat the baselines on the test window and, when a champion exists, not lose to
the champion's recipe scored on the same window (the training job writes both into the
manifest's ``evaluation``). :meth:`shelfwise.registry.Registry.register` runs it on every
registration; an operator's family override waives the comparisons with other models only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shelfwise.errors import ShelfwiseError

DEFAULT_PRIMARY_METRIC = "ndcg@10"
# Which names in a manifest's evaluation are the baselines every candidate must beat.
BASELINES: tuple[str, ...] = ("popularity", "itemknn")


class GateError(ShelfwiseError):
    """A version did not pass the offline gate, so it is not offered for canary (the message says why)."""


@dataclass(frozen=True)
class GateResult:
    """Outcome of the offline gate: passed or not, and the reasons a person can read."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    metric: str = DEFAULT_PRIMARY_METRIC
    candidate: float | None = None
    champion: float | None = None
    champion_version: str | None = None
    tolerance: float = 0.0
    # The off-policy half (shelfwise.offpolicy_gate), when the registration ran one.
    off_policy: dict[str, Any] | None = None
    # An operator's override past the comparisons (evaluate_gate): the override as given and
    # the reasons the gate would have refused the version for without it.
    override: dict[str, Any] | None = None
    waived: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_gate(
    manifest: dict[str, Any],
    champion_version: str | None,
    tolerance: float,
    override: dict[str, Any] | None = None,
) -> GateResult:
    """The offline gate on a manifest's ``evaluation`` section.

    A candidate passes when (a) its primary metric on the test window beats every other baseline
    (an honest ItemKNN winner is offered; a popularity winner never is), and
    (b) when a champion exists, the manifest holds the champion's metrics *on the same window*
    (the training job scores the champion's bundle on it) and the candidate is not worse than
    ``champion * (1 - tolerance)``. Anything missing fails closed, with the reason.

    ``override`` (an operator's :class:`shelfwise.training.job.FamilyOverride` past the gate,
    as JSON): the comparisons with other models (baselines other than popularity, the
    champion) no longer refuse the version; they are kept in ``waived``. What it never waives:
    a missing test metric, a popularity winner, or a candidate that does not beat popularity on
    the test window (the platform never offers a model below its own fallback).
    """
    ev = manifest.get("evaluation") or {}
    metric = str(ev.get("primary_metric") or DEFAULT_PRIMARY_METRIC)
    models = ev.get("models") or {}
    best = ev.get("best")
    reasons: list[str] = []
    compared: list[str] = []  # comparisons with other models: an operator's override waives them
    cand: float | None = None
    if not best or best not in models or metric not in (models.get(best) or {}):
        reasons.append(f"manifest has no test-window {metric} for its best model")
        return GateResult(False, reasons, metric, tolerance=tolerance, champion_version=champion_version)
    cand = float(models[best][metric])
    for base in BASELINES:
        # A variant of a baseline's family (itemknn_recent) winning is that baseline winning: on a
        # short log it can tie plain ItemKNN exactly, which must not fail the gate.
        if base == best or best.startswith(base + "_"):
            # ItemKNN winning honestly is served (it is a real model and beats popularity);
            # popularity winning means there is nothing better than the fallback to offer.
            if base == "popularity":
                reasons.append("the best model is the popularity baseline, which the fallback already serves")
            continue
        if base not in models:
            reasons.append(f"baseline {base} was not evaluated")
            continue
        other = float(models[base][metric])
        if not cand > other:
            reason = f"{best} {metric}={cand:.4f} does not beat baseline {base} ({other:.4f})"
            (reasons if base == "popularity" else compared).append(reason)
    champ_value: float | None = None
    if champion_version:
        comparison = ev.get("champion") or {}
        if comparison.get("version") != champion_version or metric not in (comparison.get("metrics") or {}):
            compared.append(f"no same-window comparison against champion {champion_version}")
        else:
            champ_value = float(comparison["metrics"][metric])
            if cand < champ_value * (1.0 - tolerance):
                compared.append(
                    f"{metric}={cand:.4f} loses to champion {champion_version} ({champ_value:.4f}) "
                    f"beyond tolerance {tolerance:.0%}"
                )
    if override is not None and override.get("family") not in (None, best):
        reasons.append(f"the override names family {override.get('family')!r}, the bundle serves {best!r}")
    if override is None or override.get("family") not in (None, best):
        reasons += compared
        compared = []
    return GateResult(
        not reasons,
        reasons,
        metric,
        cand,
        champ_value,
        champion_version,
        tolerance,
        override=override,
        waived=compared,
    )
