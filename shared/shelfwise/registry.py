"""The model registry: immutable bundles in S3, aliases in SSM, every change an event and an audit record.

Layout (docs/contracts.md):

- ``s3://<models>/models/<model_name>/<version>/`` holds the bundle. ``manifest.json`` is written
  last with ``IfNoneMatch='*'``: it is the commit marker, so a job killed half-way leaves no
  visible version. Registering a committed version again with the same manifest (a retried
  scheduled run) returns its registration and completes what an interrupted attempt left
  undone; with a different manifest it fails loudly and changes nothing.
- SSM ``String`` parameters ``/shelfwise/<env>/models/<model_name>/{champion,challenger,previous,
  canary_weight}`` are what serving reads (a version, or ``none``; a weight in ``[0, 1]``).
- Every alias change is a conditional write: ``models/<model_name>/_aliases.json`` holds the state
  the last change decided on and its generation, and a change claims the next generation with
  ``IfMatch`` on the ETag of the state it read (``IfNoneMatch='*'`` for the first), before it
  writes SSM. A change decided on a state that someone else changed since (a promotion that read
  the aliases before a rollback) fails with :class:`AliasConflictError` instead of undoing it.
- Each change emits an EventBridge event (source ``shelfwise.registry``) and writes
  ``s3://<models>/audit/<model_name>/<iso-time>-<action>.json`` holding the alias state before and
  after, which is how :meth:`Registry.version_for` answers "which version served user U at time T"
  long after SSM's 100-version parameter history has rolled over.

The registry receives its boto3 clients (domain code never builds them), so the same code runs
against AWS, moto or LocalStack.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shelfwise.bundle_files import checksummed_put_args
from shelfwise.errors import ConflictError, InputError, NotFoundError, ShelfwiseError
from shelfwise.gate import GateError, GateResult, evaluate_gate

ALIAS_NAMES: tuple[str, ...] = ("champion", "challenger", "previous", "canary_weight")
NONE = "none"
EVENT_SOURCE = "shelfwise.registry"
MANIFEST = "manifest.json"
REGISTRATION = "registration.json"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class BundleIntegrityError(InputError):
    """A bundle's files do not match the checksums its manifest records."""


class AliasConflictError(ConflictError):
    """The aliases changed between the read a change was decided on and its write; re-read, re-decide."""


ALIAS_STATE = "_aliases.json"
_PRECONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def challenger_share(user_key: str) -> float:
    """The user's sticky position in ``[0, 1)``; the challenger serves it when below the canary weight."""
    digest = hashlib.blake2b(user_key.encode("utf-8"), digest_size=8).hexdigest()
    return int(digest, 16) / 2**64


def routes_to_challenger(user_key: str, canary_weight: float) -> bool:
    """The routing rule of docs/contracts.md, shared by serving and :meth:`Registry.version_for`."""
    return challenger_share(user_key) < canary_weight


@dataclass(frozen=True)
class Aliases:
    """The alias state of one model: versions (``None`` for ``none``) and the challenger's traffic share."""

    champion: str | None = None
    challenger: str | None = None
    previous: str | None = None
    canary_weight: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Aliases:
        return cls(
            champion=data.get("champion"),
            challenger=data.get("challenger"),
            previous=data.get("previous"),
            canary_weight=float(data.get("canary_weight", 0.0)),
        )

    def route(self, user_key: str) -> tuple[str | None, str]:
        """``(version, variant)`` that serves ``user_key`` under this state (``fallback`` when no model)."""
        if self.challenger and self.canary_weight > 0 and routes_to_challenger(user_key, self.canary_weight):
            return self.challenger, "challenger"
        if self.champion:
            return self.champion, "champion"
        return None, "fallback"


@dataclass(frozen=True)
class AliasSnapshot:
    """Aliases as read for a change, with the token the change's conditional write checks."""

    aliases: Aliases
    # ETag of the state object read (None: there was none yet); generation counts changes.
    etag: str | None
    generation: int
    # The change that produced this state: action, version, time, aliases before. Known as soon
    # as the change is claimed, before its audit record exists.
    last_change: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    """What :meth:`Registry.register` did."""

    model_name: str
    version: str
    uri: str
    gate: GateResult
    offered_for_canary: bool
    became_champion: bool
    registered_at: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["gate"] = self.gate.to_json()
        return data


@dataclass(frozen=True)
class ServedVersion:
    """Answer of :meth:`Registry.version_for`: the version and variant, and the state it came from."""

    version: str | None
    variant: str
    aliases: Aliases
    since: str | None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_local_manifest(bundle_dir: Path) -> dict[str, Any]:
    """The manifest of a local bundle, after checking every listed file against its sha256."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{bundle_dir} is not a bundle: {MANIFEST} is missing")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from exc
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(f"{path}: 'files' (name -> sha256) is missing or empty")
    for name, digest in files.items():
        fp = Path(bundle_dir) / name
        if Path(name).name != name or not fp.is_file():
            raise BundleIntegrityError(f"bundle file {name!r} listed in the manifest is missing")
        if sha256_file(fp) != digest:
            raise BundleIntegrityError(f"bundle file {name!r} does not match its manifest checksum")
    return manifest


def _verify_bundle(bundle: Path) -> None:
    """What serving will check (tables, graph I/O vs item count), checked before anything is uploaded."""
    from shelfwise import bundle as bundle_io  # training side only: needs onnx

    try:
        bundle_io.verify_bundle(bundle)
    except bundle_io.BundleError as exc:
        raise BundleIntegrityError(f"bundle {bundle} cannot be served: {exc}") from exc


class Registry:
    """The one registry API (docs/contracts.md). Alias changes are conditional (see the module doc):
    of two changes decided on the same state, the second fails with AliasConflictError."""

    def __init__(
        self,
        s3: Any,
        ssm: Any,
        events: Any,
        models_bucket: str,
        env: str,
        model_name: str,
        *,
        gate_tolerance: float = 0.02,
        actor: str = "shelfwise",
        event_bus: str = "default",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not 0 <= gate_tolerance < 1:
            raise InputError("gate_tolerance must be in [0, 1)")
        self.s3, self.ssm, self.events = s3, ssm, events
        self.bucket, self.env, self.model_name = models_bucket, env, model_name
        self.gate_tolerance = gate_tolerance
        self.actor = actor
        self.event_bus = event_bus
        self._clock = clock or (lambda: datetime.now(UTC))
        self._last_audit: datetime | None = None

    # ------------------------------------------------------------------ names
    def parameter_name(self, alias: str) -> str:
        return f"/shelfwise/{self.env}/models/{self.model_name}/{alias}"

    def version_prefix(self, version: str) -> str:
        return f"models/{self.model_name}/{version}/"

    @property
    def audit_prefix(self) -> str:
        return f"audit/{self.model_name}/"

    @property
    def alias_state_key(self) -> str:
        return f"models/{self.model_name}/{ALIAS_STATE}"

    # ------------------------------------------------------------------ register
    def register(
        self,
        bundle_dir: str | Path,
        version: str,
        *,
        promote_if_first: bool = True,
        off_policy: Callable[[Path], Any] | None = None,
        gate_override: dict[str, Any] | None = None,
    ) -> Registration:
        """Upload a verified local bundle as an immutable ``version`` and run the offline gate.

        Data files go first (conditional writes; an identical file left by a killed attempt is
        accepted), ``registration.json`` (the gate outcome) next, ``manifest.json`` last as the
        commit marker. When no champion exists yet and the gate passes, the version becomes
        champion (``promote_if_first``), so a fresh stack serves something.

        ``off_policy``: the gate's off-policy half (``shelfwise.offpolicy_gate.off_policy_check``),
        called with the bundle directory when a champion exists; a candidate it finds worse online
        is registered but not offered for canary.

        ``gate_override``: an operator's override past the gate's comparisons (see
        :func:`evaluate_gate`); recorded with this registry's actor in the registration and the
        ``ModelRegistered`` audit record, with the reasons it waived.
        """
        if not _VERSION_RE.match(version):
            raise InputError(f"invalid version {version!r}: letters, digits, '.', '_', '-' (max 80)")
        bundle = Path(bundle_dir)
        manifest = read_local_manifest(bundle)
        prefix = self.version_prefix(version)
        if self._exists(prefix + MANIFEST):
            return self._register_again(version, manifest)
        _verify_bundle(bundle)
        snap = self.snapshot()
        before = snap.aliases
        override = None if gate_override is None else {**gate_override, "actor": self.actor}
        gate = evaluate_gate(manifest, before.champion, self.gate_tolerance, override)
        if off_policy is not None and before.champion is not None:
            verdict = off_policy(bundle)
            # the off-policy half compares with the champion's logged lists: an override waives it
            waive = override is not None and not verdict.passed
            gate = dataclasses.replace(
                gate,
                passed=gate.passed and (verdict.passed or waive),
                reasons=[*gate.reasons, *verdict.reasons] if not (verdict.passed or waive) else gate.reasons,
                waived=[*gate.waived, *verdict.reasons] if waive else gate.waived,
                off_policy=verdict.to_json(),
            )
        now = self._now()
        uploads = sorted(p for p in bundle.iterdir() if p.is_file() and p.name != MANIFEST)
        for path in uploads:
            self._put_immutable(prefix + path.name, path.read_bytes())
        became_champion = promote_if_first and gate.passed and before.champion is None
        registration = Registration(
            model_name=self.model_name,
            version=version,
            uri=f"s3://{self.bucket}/{prefix}",
            gate=gate,
            offered_for_canary=gate.passed,
            became_champion=became_champion,
            registered_at=now.isoformat(),
        )
        # Not part of the content: an uncommitted attempt's record is replaced (the gate and time
        # are this attempt's); the manifest's conditional write below decides between attempts.
        self._put_immutable(prefix + REGISTRATION, _dumps(registration.to_json()), replace=True)
        self._put_immutable(prefix + MANIFEST, (bundle / MANIFEST).read_bytes())
        self._record(
            "ModelRegistered", version, before, before, {"gate": gate.to_json(), "uri": registration.uri}
        )
        if became_champion:
            self._promote_first(snap, version)
        return registration

    def _register_again(self, version: str, manifest: dict[str, Any]) -> Registration:
        """A registration of a committed version: the same content is the same version (its
        registration, completed); different content is refused, nothing written."""
        stored = self.manifest(version)
        if stored != manifest:
            differ = sorted(k for k in set(stored) | set(manifest) if stored.get(k) != manifest.get(k))
            raise ConflictError(
                f"model {self.model_name} version {version} is already registered with different content "
                f"(differs in {', '.join(differ[:6])}); versions are immutable: register under a new version"
            )
        return self.resume_registration(version)

    def resume_registration(self, version: str) -> Registration:
        """The registration of committed ``version``, after completing what its registering attempt
        may have been stopped before: the ``ModelRegistered`` record and event (once per version),
        and the first-version promotion it decided on while no champion has been set since."""
        reg = self.registration(version)
        known = {f.name for f in dataclasses.fields(GateResult)}
        gate = GateResult(**{k: v for k, v in (reg.get("gate") or {}).items() if k in known})
        registration = Registration(
            model_name=self.model_name,
            version=version,
            uri=reg.get("uri") or f"s3://{self.bucket}/{self.version_prefix(version)}",
            gate=gate,
            offered_for_canary=bool(reg.get("offered_for_canary")),
            became_champion=bool(reg.get("became_champion")),
            registered_at=str(reg.get("registered_at") or ""),
        )
        if not self._has_record("ModelRegistered", version, registration.registered_at):
            before = self.snapshot().aliases
            self._record(
                "ModelRegistered", version, before, before, {"gate": gate.to_json(), "uri": registration.uri}
            )
        snap = self.snapshot()
        if registration.became_champion and snap.aliases.champion is None:
            self._promote_first(snap, version)
        return registration

    def _promote_first(self, snap: AliasSnapshot, version: str) -> None:
        """Make ``version`` the champion of a registry that has none (its first registered version)."""
        after = Aliases(champion=version)
        self._change(snap, after, "ModelPromoted", version)
        self._record("ModelPromoted", version, snap.aliases, after, {"reason": "first registered version"})

    def _has_record(self, action: str, version: str, since: str) -> bool:
        """Whether the audit trail holds an ``action`` record of ``version`` from ``since`` on."""
        try:
            start = self.audit_prefix + _stamp(datetime.fromisoformat(since))
        except ValueError:
            start = self.audit_prefix
        for key in self._keys(self.audit_prefix, start_after=start):
            if f"-{action}-" in key and json.loads(self._get(key, key)).get("version") == version:
                return True
        return False

    def _put_immutable(self, key: str, body: bytes, *, replace: bool = False) -> None:
        """Write ``key`` once: the same content already there is fine; different content is a
        ``ConflictError``, or with ``replace`` overwritten (conditional on what is there)."""
        digest = hashlib.sha256(body).hexdigest()
        checksum = checksummed_put_args(digest)
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", **checksum)
        except self.s3.exceptions.ClientError as exc:
            if _code(exc) not in _PRECONDITION_FAILED:
                raise
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            if head.get("Metadata", {}).get("sha256") == digest:
                return
            if replace:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfMatch=head["ETag"], **checksum)
                return
            raise ConflictError(
                f"s3://{self.bucket}/{key} exists with different content (an earlier, unfinished "
                "attempt of this version, or another writer); nothing is overwritten: register under "
                "a new version, or delete the version's uncommitted files"
            ) from exc

    # ------------------------------------------------------------------ read
    def aliases(self) -> Aliases:
        """The current alias state (``none`` and missing parameters read as ``None`` / weight 0)."""
        names = [self.parameter_name(a) for a in ALIAS_NAMES]
        resp = self.ssm.get_parameters(Names=names)
        values = {p["Name"].rsplit("/", 1)[1]: p["Value"] for p in resp.get("Parameters", [])}

        def version(alias: str) -> str | None:
            v = values.get(alias, NONE)
            return None if v in {NONE, ""} else v

        return Aliases(
            champion=version("champion"),
            challenger=version("challenger"),
            previous=version("previous"),
            canary_weight=float(values.get("canary_weight", "0") or 0),
        )

    def snapshot(self) -> AliasSnapshot:
        """The aliases a change decides on, with the token its conditional write checks.

        The state object holds what the last change decided; it is the truth for changes (SSM may
        lag it by the writes of a change in flight). Before any change it does not exist, and the
        aliases come from SSM (the template's initial values).
        """
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.alias_state_key)
        except self.s3.exceptions.ClientError as exc:
            if _code(exc) not in {"404", "NoSuchKey", "NotFound"}:
                raise
            return AliasSnapshot(self.aliases(), None, 0)
        state = json.loads(obj["Body"].read())
        snap = AliasSnapshot(
            Aliases.from_json(state["aliases"]),
            obj["ETag"],
            int(state["generation"]),
            state.get("change") or {},
        )
        live = self.aliases()
        if live != snap.aliases:
            # A change claimed this state but its SSM writes did not all land (it failed half-way,
            # or is still writing): complete it, so what serves is what was decided.
            self._write_aliases(live, snap.aliases)
        return snap

    def exists(self, version: str) -> bool:
        return self._exists(self.version_prefix(version) + MANIFEST)

    def manifest(self, version: str) -> dict[str, Any]:
        """The committed manifest of ``version`` (NotFoundError when it was never committed)."""
        return json.loads(self._get(self.version_prefix(version) + MANIFEST, version))

    def registration(self, version: str) -> dict[str, Any]:
        """The registration record of ``version``: gate outcome and whether it is offered for canary."""
        if not self.exists(version):
            raise NotFoundError(f"model {self.model_name} has no version {version}")
        return json.loads(self._get(self.version_prefix(version) + REGISTRATION, version))

    def versions(self) -> list[dict[str, Any]]:
        """Committed versions, oldest first, each with its gate outcome and current role."""
        aliases = self.aliases()
        roles = {
            aliases.champion: "champion",
            aliases.challenger: "challenger",
            aliases.previous: "previous",
        }
        out = []
        for key in self._keys(f"models/{self.model_name}/"):
            parts = key.split("/")
            if len(parts) != 4 or parts[3] != MANIFEST:
                continue
            version = parts[2]
            reg = json.loads(self._get(self.version_prefix(version) + REGISTRATION, version))
            out.append(
                {
                    "version": version,
                    "registered_at": reg.get("registered_at"),
                    "offered_for_canary": reg.get("offered_for_canary"),
                    "gate": reg.get("gate"),
                    "role": roles.get(version),
                }
            )
        out.sort(key=lambda r: r["registered_at"] or "")
        return out

    def download(self, version: str, dest_dir: str | Path) -> Path:
        """Copy a committed version to ``dest_dir`` and verify it against its manifest checksums."""
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        manifest_bytes = self._get(self.version_prefix(version) + MANIFEST, version)
        manifest = json.loads(manifest_bytes)
        for name in manifest.get("files", {}):
            (dest / name).write_bytes(self._get(self.version_prefix(version) + name, version))
        (dest / MANIFEST).write_bytes(manifest_bytes)
        read_local_manifest(dest)
        return dest

    # ------------------------------------------------------------------ alias changes
    def start_canary(
        self, version: str, weight: float = 0.1, *, force: bool = False, expected: AliasSnapshot | None = None
    ) -> Aliases:
        """Make ``version`` the challenger with ``weight`` of traffic (it must have passed the gate).

        ``expected``: the snapshot the caller decided on (every change method takes it); without
        it the change is conditional on the method's own read.
        """
        _check_weight(weight, allow_zero=False)
        snap = expected or self.snapshot()
        before = snap.aliases
        self._require_offerable(version, force)
        if version == before.champion:
            raise ConflictError(f"{version} is already the champion")
        after = Aliases(before.champion, version, before.previous, weight)
        self._change(snap, after, "CanaryStarted", version)
        self._record("CanaryStarted", version, before, after, {"weight": weight, "forced": force})
        return after

    def set_canary_weight(
        self,
        weight: float,
        *,
        expected: AliasSnapshot | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Aliases:
        """Move the challenger's share of traffic (0 pauses the canary, 1 sends everyone).

        ``detail``: what the change rests on (the bandit's posterior and evidence), kept in the
        audit record and the event beside the weights.
        """
        _check_weight(weight, allow_zero=True)
        snap = expected or self.snapshot()
        before = snap.aliases
        if before.challenger is None:
            raise ConflictError("there is no challenger to set a canary weight for")
        after = Aliases(before.champion, before.challenger, before.previous, weight)
        self._change(snap, after, "CanaryAdvanced", before.challenger)
        self._record(
            "CanaryAdvanced",
            before.challenger,
            before,
            after,
            {**(detail or {}), "weight": weight, "from": before.canary_weight},
        )
        return after

    def promote(
        self, version: str | None = None, *, force: bool = False, expected: AliasSnapshot | None = None
    ) -> Aliases:
        """Make the challenger (or an explicit gated ``version``) champion; the old champion becomes previous."""
        snap = expected or self.snapshot()
        before = snap.aliases
        target = version or before.challenger
        if target is None:
            raise ConflictError("there is no challenger to promote; name a version")
        if target == before.champion:
            raise ConflictError(f"{target} is already the champion")
        self._require_offerable(target, force)
        challenger = None if target == before.challenger else before.challenger
        weight = 0.0 if challenger is None else before.canary_weight
        after = Aliases(target, challenger, before.champion, weight)
        self._change(snap, after, "ModelPromoted", target)
        self._record("ModelPromoted", target, before, after, {"previous": before.champion, "forced": force})
        return after

    def rollback(self, reason: str, scope: str = "auto", *, expected: AliasSnapshot | None = None) -> Aliases:
        """Undo the last risky change: stop a running canary, else put ``previous`` back as champion.

        ``scope`` ``canary`` or ``champion`` forces one of the two (an alarm on the champion while
        a canary runs must restore ``previous``, not just stop the canary).
        """
        if not reason:
            raise InputError("a rollback needs a reason")
        if scope not in {"auto", "canary", "champion"}:
            raise InputError("rollback scope must be auto, canary or champion")
        snap = expected or self.snapshot()
        before = snap.aliases
        rolled: str | None
        if scope == "canary" and before.challenger is None:
            raise ConflictError("no canary is running")
        if scope == "champion" and before.previous is None:
            raise ConflictError("no previous champion to restore")
        if before.challenger is not None and scope != "champion":
            after = Aliases(before.champion, None, before.previous, 0.0)
            rolled, restored, scope = before.challenger, before.champion, "canary"
        elif before.previous is not None:
            # A running canary is stopped too: it was compared against the champion being removed.
            after = Aliases(before.previous, None, None, 0.0)
            rolled, restored, scope = before.champion, before.previous, "champion"
        else:
            raise ConflictError("nothing to roll back: no challenger and no previous champion")
        self._change(snap, after, "ModelRolledBack", rolled or NONE)
        self._record(
            "ModelRolledBack",
            rolled or NONE,
            before,
            after,
            {"reason": reason, "restored": restored, "scope": scope},
        )
        return after

    def _require_offerable(self, version: str, force: bool) -> None:
        reg = self.registration(version)
        if not reg.get("offered_for_canary") and not force:
            reasons = "; ".join((reg.get("gate") or {}).get("reasons") or ["gate not passed"])
            raise GateError(f"version {version} did not pass the offline gate: {reasons}")

    def _change(self, snap: AliasSnapshot, after: Aliases, action: str, version: str) -> None:
        """Claim the next generation of the alias state (conditional on ``snap``), then write SSM.

        After its SSM writes a change reads the state object again: when a later change claimed
        meanwhile, its writes may have interleaved with ours, so SSM is set to that latest state
        (each change does the same, so SSM ends at the state of the last claim).
        """
        change = {
            "action": action,
            "version": version,
            "time": self._now().isoformat(),
            "actor": self.actor,
            "before": snap.aliases.to_json(),
        }
        body = _dumps({"aliases": after.to_json(), "generation": snap.generation + 1, "change": change})
        condition = {"IfMatch": snap.etag} if snap.etag else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.alias_state_key, Body=body, **condition)
        except self.s3.exceptions.ClientError as exc:
            if _code(exc) in _PRECONDITION_FAILED:
                raise AliasConflictError(
                    f"the aliases of {self.model_name} changed since they were read (generation "
                    f"{snap.generation}); nothing was written: re-read and decide again"
                ) from exc
            raise
        self._write_aliases(self.aliases(), after)
        self.snapshot()  # a later claim meanwhile: its state is written over ours

    def _write_aliases(self, before: Aliases, after: Aliases) -> None:
        # Order matters because serving may read between writes: the weight drops first when it
        # drops, and rises last when it rises, so no request reaches a challenger it should not.
        order: list[tuple[str, str]] = []
        if after.canary_weight < before.canary_weight or after.challenger != before.challenger:
            order.append(("canary_weight", "0"))
        order += [
            ("previous", after.previous or NONE),
            ("champion", after.champion or NONE),
            ("challenger", after.challenger or NONE),
            ("canary_weight", _fmt_weight(after.canary_weight)),
        ]
        current = {
            "previous": before.previous or NONE,
            "champion": before.champion or NONE,
            "challenger": before.challenger or NONE,
            "canary_weight": _fmt_weight(before.canary_weight),
        }
        for alias, value in order:
            if current.get(alias) == value:
                continue
            self.ssm.put_parameter(
                Name=self.parameter_name(alias),
                Value=value,
                Type="String",
                Overwrite=True,
                Description=f"shelfwise model alias {alias} of {self.model_name}",
            )
            current[alias] = value

    # ------------------------------------------------------------------ audit
    def _record(
        self, action: str, version: str, before: Aliases, after: Aliases, detail: dict[str, Any]
    ) -> dict[str, Any]:
        now = self._now()
        if self._last_audit is not None and now <= self._last_audit:
            # Audit keys sort by time; keep this process's records strictly increasing.
            now = self._last_audit + timedelta(microseconds=1)
        self._last_audit = now
        record = {
            "time": now.isoformat(),
            "action": action,
            "model_name": self.model_name,
            "env": self.env,
            "version": version,
            "actor": self.actor,
            "before": before.to_json(),
            "after": after.to_json(),
            **detail,
        }
        body = _dumps(record)
        # Keys sort by time; the content digest keeps two writers of the same instant (two
        # functions on one clock tick) apart, while a retry of the same record stays idempotent.
        key = f"{self.audit_prefix}{_stamp(now)}-{action}-{hashlib.sha256(body).hexdigest()[:12]}.json"
        self._put_immutable(key, body)
        event_detail = {"model_name": self.model_name, "env": self.env, **record}
        resp = self.events.put_events(
            Entries=[
                {
                    "Time": now,
                    "Source": EVENT_SOURCE,
                    "DetailType": action,
                    "Detail": json.dumps(event_detail, default=str),
                    "EventBusName": self.event_bus,
                }
            ]
        )
        if resp.get("FailedEntryCount"):
            # The alias change and the audit record stand; the event is best-effort but must be visible.
            raise ShelfwiseError(f"EventBridge rejected the {action} event: {resp.get('Entries')}")
        return record

    def history(self) -> list[dict[str, Any]]:
        """Every audit record of this model, oldest first."""
        return [json.loads(self._get(k, k)) for k in self._audit_keys()]

    def version_for(self, user_key: str, at: datetime) -> ServedVersion:
        """Which version (and variant) served ``user_key`` at time ``at``, from the audit trail."""
        if at.tzinfo is None:
            raise InputError("version_for needs a timezone-aware time")
        keys = self._audit_keys()
        stamp = _stamp(at)
        # Records of the same instant are ordered by action name; "~" sorts after every action,
        # so a change made exactly at ``at`` counts as in effect.
        idx = bisect.bisect_right([k[len(self.audit_prefix) :] for k in keys], stamp + "~")
        if idx == 0:
            state = Aliases()
            return ServedVersion(None, "fallback", state, None)
        record = json.loads(self._get(keys[idx - 1], keys[idx - 1]))
        state = Aliases.from_json(record["after"])
        version, variant = state.route(user_key)
        return ServedVersion(version, variant, state, record["time"])

    def _audit_keys(self) -> list[str]:
        return sorted(k for k in self._keys(self.audit_prefix) if k.endswith(".json"))

    # ------------------------------------------------------------------ S3 helpers
    def _keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        after = {"StartAfter": start_after} if start_after else {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **after):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def _get(self, key: str, what: str) -> bytes:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                raise NotFoundError(f"model {self.model_name}: {what} not found") from exc
            raise
        return body

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_weight(weight: float, *, allow_zero: bool) -> None:
    if not isinstance(weight, int | float) or weight != weight or not 0 <= weight <= 1:
        raise InputError(f"canary weight must be a number in [0, 1], got {weight!r}")
    if weight == 0 and not allow_zero:
        raise InputError("a canary needs a weight above 0")


def _fmt_weight(weight: float) -> str:
    return format(float(weight), "g")


def _code(exc: Exception) -> str:
    """The error code of a ClientError (botocore's, or shelfwise.aws_lite's of the same shape)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode("utf-8")
