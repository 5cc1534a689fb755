"""The composition root: the platform's adapters built from settings, in one place.

Handlers and commands parse their settings (``shelfwise.settings.load_settings`` for functions,
flags and environment for commands) and build what they need here: the model registry and the
rollout, with the AWS clients of :mod:`shelfwise.aws`. Domain code receives the built objects; it
never reads the environment or creates clients itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field

from shelfwise.aws import client, light_client

if TYPE_CHECKING:
    from shelfwise.registry import Registry
    from shelfwise.rollout import Rollout, RolloutPolicy


class ModelLocation(Protocol):
    """Where a model's registry lives: any settings object with these three fields."""

    models_bucket: str
    shelfwise_env: str
    model_name: str


class RegistrySettings(BaseModel):
    """The registry's coordinates, as every function that touches the registry receives them."""

    models_bucket: str = Field(min_length=1)
    shelfwise_env: str = Field(min_length=1)
    model_name: str = Field(min_length=1)


def registry(
    where: ModelLocation,
    *,
    actor: str = "shelfwise",
    clock: Callable[[], datetime] | None = None,
    gate_tolerance: float = 0.02,
    read_only: bool = False,
) -> Registry:
    """The model registry of ``where``.

    ``read_only`` (serving): only alias reads, through the SDK-free clients (no EventBridge
    client, since a reader never announces changes).
    """
    from shelfwise.registry import Registry

    if read_only:
        return Registry(
            light_client("s3"),
            light_client("ssm"),
            None,
            where.models_bucket,
            where.shelfwise_env,
            where.model_name,
            actor=actor,
            clock=clock,
            gate_tolerance=gate_tolerance,
        )
    return Registry(
        client("s3"),
        client("ssm"),
        client("events"),
        where.models_bucket,
        where.shelfwise_env,
        where.model_name,
        actor=actor,
        clock=clock,
        gate_tolerance=gate_tolerance,
    )


def rollout(
    reg: Registry,
    *,
    monitoring_bucket: str | None = None,
    notifications_topic_arn: str | None = None,
    policy: RolloutPolicy | None = None,
) -> Rollout:
    """The rollout over ``reg``: decisions recorded in the monitoring bucket, notices to the topic."""
    from shelfwise.rollout import Rollout

    return Rollout(
        reg,
        s3=client("s3") if monitoring_bucket else None,
        bucket=monitoring_bucket,
        sns=client("sns") if notifications_topic_arn else None,
        topic_arn=notifications_topic_arn,
        policy=policy,
    )


class CanaryAllocationSettings(BaseModel):
    """How the canary's split is decided (template parameters CanaryAllocation and the bandit's bounds)."""

    canary_allocation: Literal["stages", "thompson"]
    bandit_champion_floor: float = Field(ge=0, le=1)
    bandit_challenger_cap: float = Field(ge=0, le=1)


def rollout_policy(settings: CanaryAllocationSettings) -> RolloutPolicy:
    """The rollout policy with the configured allocation (the other guards at their defaults)."""
    from shelfwise.canary_bandit import BanditPolicy
    from shelfwise.rollout import RolloutPolicy

    return RolloutPolicy(
        allocation=settings.canary_allocation,
        bandit=BanditPolicy(
            champion_floor=settings.bandit_champion_floor, challenger_cap=settings.bandit_challenger_cap
        ),
    )
