"""What the monitoring pass remembers and reads besides the events: the deployment it measures
(from the registry's aliases), the bundles' manifests, and the small JSON state of per-window
counts since the current canary started, with the helpers that sum it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.monitoring.publish import MetricDatum
from shelfwise.monitoring.quality import (
    InterleavingCounts,
)


def _none(v: Any) -> str | None:
    return None if v in (None, "", "none", "None") else str(v)


@dataclass(frozen=True)
class Deployment:
    """What the registry says is serving now."""

    champion: str | None
    challenger: str | None = None
    canary_weight: float = 0.0
    previous: str | None = None

    @classmethod
    def from_aliases(cls, aliases: Any) -> Deployment:
        """From the registry's ``Aliases`` (or a mapping with the same keys)."""
        if not isinstance(aliases, Mapping):
            aliases = aliases.to_json() if hasattr(aliases, "to_json") else vars(aliases)
        return cls(
            champion=_none(aliases.get("champion")),
            challenger=_none(aliases.get("challenger")),
            canary_weight=float(aliases.get("canary_weight") or 0.0),
            previous=_none(aliases.get("previous")),
        )

    def version_of(self, variant: str) -> str | None:
        return {"champion": self.champion, "challenger": self.challenger}.get(variant)


class ManifestSource(Protocol):
    def manifest(self, version: str) -> Mapping[str, Any] | None: ...


class S3Manifests:
    """Bundle manifests from the models bucket, cached per version (bundles are immutable)."""

    def __init__(self, s3: Any, bucket: str, model_name: str) -> None:
        self.s3, self.bucket, self.model_name = s3, bucket, model_name
        self._cache: dict[str, Mapping[str, Any] | None] = {}

    def manifest(self, version: str) -> Mapping[str, Any] | None:
        if version not in self._cache:
            key = f"models/{self.model_name}/{version}/manifest.json"
            try:
                body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                self._cache[version] = json.loads(body)
            except self.s3.exceptions.NoSuchKey:
                self._cache[version] = None
        return self._cache[version]


class StateStore(Protocol):
    def load(self) -> dict[str, Any]: ...
    def save(self, state: dict[str, Any]) -> None: ...


class S3StateStore:
    """The monitor's memory between passes: ``monitoring/state/<model_name>.json``."""

    def __init__(self, s3: Any, bucket: str, model_name: str) -> None:
        self.s3, self.bucket, self.key = s3, bucket, f"monitoring/state/{model_name}.json"

    def load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()))
        except self.s3.exceptions.NoSuchKey:
            return {}

    def save(self, state: dict[str, Any]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(state, sort_keys=True).encode())


class MemoryStateStore:
    """State in memory (tests, benchmarks, the simulator loop)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.state))

    def save(self, state: dict[str, Any]) -> None:
        self.state = json.loads(json.dumps(state))


@dataclass
class PassResult:
    """What one pass computed: the datums to publish and a summary for logs and the history."""

    kind: str
    window_start: datetime
    data: list[MetricDatum] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        """``{"Name" or "Name/Variant": value}`` of the datums stamped at this pass's window."""
        out = {}
        for d in self.data:
            if d.timestamp == self.window_start:
                key = d.name + (f"/{d.dimensions['Variant']}" if "Variant" in d.dimensions else "")
                out[key] = d.value
        return out


def floor_time(when: datetime, seconds: int) -> datetime:
    ts = int(when.astimezone(UTC).timestamp())
    return datetime.fromtimestamp(ts - ts % seconds, tz=UTC)


def _key(variant: str, version: str) -> str:
    return f"{variant}|{version}"


def sync_state(state: dict[str, Any], deployment: Deployment, now: datetime) -> dict[str, Any]:
    """Reset the per-canary memory when the challenger changes; note stage starts."""
    if state.get("challenger") != deployment.challenger or state.get("champion") != deployment.champion:
        state = {
            "challenger": deployment.challenger,
            "champion": deployment.champion,
            "canary_started_at": now.isoformat() if deployment.challenger else None,
            "stage_weight": deployment.canary_weight,
            "stage_started_at": now.isoformat(),
            "windows": {},
        }
    elif float(state.get("stage_weight", -1)) != deployment.canary_weight:
        state["stage_weight"] = deployment.canary_weight
        state["stage_started_at"] = now.isoformat()
    state.setdefault("windows", {})
    return state


def _sum(state: Mapping[str, Any], kind: str, key: str, since: str | None = None) -> tuple[int, int]:
    n = x = 0
    for wstart, entry in state["windows"].items():
        if since is not None and wstart < since:
            continue
        pair = entry.get(kind, {}).get(key)
        if pair:
            n += int(pair[0])
            x += int(pair[1])
    return n, x


def _between(events: pa.Table, start: datetime, end: datetime) -> pa.Table:
    ts = events["timestamp"]
    lo = pa.scalar(start, pa.timestamp("ms", tz="UTC"))
    hi = pa.scalar(end, pa.timestamp("ms", tz="UTC"))
    return events.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


def _ilv_entry(counts: InterleavingCounts, early: bool = False) -> dict[str, Any]:
    return {"lists": counts.lists, "wins": dict(counts.early_wins if early else counts.wins)}


def _ilv_sum(
    state: Mapping[str, Any], kind: str, deployment: Deployment, since: str | None
) -> tuple[int, int, int]:
    """(challenger wins, champion wins, interleaved lists) summed over the windows since ``since``."""
    w_c = w_b = lists = 0
    for wstart, entry in state.get("windows", {}).items():
        if since is not None and wstart < since:
            continue
        e = entry.get(kind)
        if e:
            lists += int(e.get("lists", 0))
            w_c += int(e["wins"].get(deployment.challenger or "", 0))
            w_b += int(e["wins"].get(deployment.champion or "", 0))
    return w_c, w_b, lists


def canary_first_window(state: Mapping[str, Any], window_seconds: int = 300) -> datetime | None:
    """Start of the first evaluation window of the current canary (None without one).

    The monitor notices a canary at the pass after it started, which evaluates the window that
    just closed: that window is the canary's first.
    """
    started = state.get("canary_started_at")
    if not state.get("challenger") or not started:
        return None
    return floor_time(datetime.fromisoformat(started), window_seconds) - timedelta(seconds=window_seconds)


def stage_impressions(
    state: Mapping[str, Any], since: datetime | None = None, window_seconds: int = 300
) -> int:
    """Challenger impressions since ``since`` (default: the stage start the monitor noticed).

    A window counts when it ends after ``since`` (the window in which the weight changed counts:
    it is partly the new stage, and the promoter's guard is a minimum, not a measurement).
    """
    if not state.get("challenger"):
        return 0
    if since is None:
        if not state.get("stage_started_at"):
            return 0
        since = datetime.fromisoformat(state["stage_started_at"])
    key = _key("challenger", str(state["challenger"]))
    total = 0
    for wstart, entry in state.get("windows", {}).items():
        if datetime.fromisoformat(wstart) + timedelta(seconds=window_seconds) > since:
            total += int(entry.get("impressions", {}).get(key, 0))
    return total
