"""The demo's phases, in order: v1 champion, an item sells out, stable traffic, v2 canary to
promotion, a broken v3 refused offline and then rolled back by the alarms, taste drift detected.

Each phase records whether it did what it should in ``stages`` (and its figures in ``result``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shelfwise_local.demo.broken import build_broken_bundle
from shelfwise_local.demo.config import DEMO_OPE_MIN_ESS, DEMO_OPE_MIN_LISTS, WINDOW_S
from shelfwise_local.demo.scenario import Scenario


class Phases(Scenario):
    """The phases of the loop, one method each, run in order by :meth:`shelfwise_local.demo.run.Demo.run`."""

    def run_v1(self) -> None:
        hist = self.files[: self.cfg.v1_days]
        self.upload(hist)
        self.log(f"ingested {len(hist)} exports through RawBucket -> SQS -> IngestEventsFunction")
        catalogue = self.out_dir / "shop" / "catalogue" / "catalogue.csv"
        self.upload_catalogue(catalogue.read_bytes(), "catalogue.csv")
        self.log(
            "ingested the shop's catalogue through raw/catalogue/ (titles, prices, stock for the bundles)"
        )
        p = self.train("v1")
        self.v1 = p["training"]["version"]
        ok = self.aliases().champion == self.v1
        self.stages["v1_champion"] = ok
        self.log(f"v1 {self.v1} is champion: {ok}")

    def run_stock(self) -> None:
        """An item sells out: a stock change goes through raw/catalogue/ and the item leaves the
        served lists at serving's next stock refresh, with no retraining; then it is restocked."""
        from shelfwise.simulator.catalogue_feed import catalogue_csv

        catalogue = self.shop.catalogue
        user = next(ctx.user_id for ctx in self._contexts() if ctx.user_id)
        before = self._user_list(user)
        if not before:
            self.stages["stock_out_left_lists"] = False
            return
        top = before[0]
        index = int(np.flatnonzero(catalogue.item_id == top)[0])
        self.upload_catalogue(catalogue_csv(catalogue, self.now(), [index], [False]), "stock-out.csv")
        self._sync_stock()
        after = self._user_list(user)
        left = top not in after
        self.stages["stock_out_left_lists"] = left
        self.log(
            f"item {top} sold out (raw/catalogue/stock-out.csv): user {user}'s list {before[:3]}... "
            f"-> {after[:3]}...; left the list without retraining: {left}"
        )
        # a later state of the item (the clock is not moved: windows stay aligned with the schedules)
        later = self.now() + timedelta(seconds=1)
        self.upload_catalogue(catalogue_csv(catalogue, later, [index], [True]), "restock.csv")
        self._sync_stock()
        back = top in self._user_list(user)
        self.log(f"item {top} restocked: back in the list: {back}")

    def run_stable(self, windows: int, n: int, label: str) -> None:
        # Stable from the first monitoring pass on: before it, data-freshness has no datapoint and
        # (TreatMissingData breaching, on purpose: a silent monitor is an incident) alarms.
        start = max(self.rt.clock.now(), self.t0 + WINDOW_S)
        for _ in range(windows):
            self.window(n)
        self.stable.append((start, self.rt.clock.now()))
        self.log(f"{label}: {windows} windows x {n} requests, champion {self.aliases().champion}")

    def run_v2(self) -> None:
        c = self.cfg
        later = self.files[c.v1_days : c.history_days]
        self.upload(later)
        self.log(
            f"{len(later)} more daily exports arrived (v2 learns from more data); curated also holds the served feedback"
        )
        family = c.challenger_family
        override = (
            {
                "family": family,
                "reason": f"demo: canary the {family} model, whose use of the session the offline test does not measure",
                "past_gate": True,
            }
            if family
            else None
        )
        p = self.train("v2", override)
        self.v2 = p["training"]["version"]
        self.result["v2_algorithm"] = p["training"]["algorithm"]
        if family:
            self.stages["v2_is_named_family"] = p["training"]["algorithm"] == family
        a = self.aliases()
        started = a.challenger == self.v2 and a.canary_weight > 0
        self.stages["v2_canary_started"] = started
        if not started:
            return
        start = self.rt.clock.now()
        weight, promoted = a.canary_weight, False
        for _ in range(c.max_canary_windows):
            a = self.aliases()
            if a.champion == self.v2:
                promoted = True
                break
            if a.challenger != self.v2 or a.canary_weight == 0:
                self.log(f"v2 canary stopped: {a}")
                break
            if a.canary_weight != weight:
                self.log(f"v2 canary advanced {weight:.0%} -> {a.canary_weight:.0%}")
                weight = a.canary_weight
            self._window_line(self.window(c.requests))
        if not family:
            self.stable.append((start, self.rt.clock.now()))  # a good canary must raise no alarm
        self.stages["v2_promoted"] = promoted
        self.log(f"v2 {self.v2} promoted to champion: {promoted} (previous: {self.aliases().previous})")
        self.promoted_at = self.rt.clock.now()
        if family:
            # a challenger the operator forced is judged online: promoted or rolled back, both decide
            rolled_back = self._rollback_time(self.v2) is not None
            self.stages["v2_decided"] = promoted or rolled_back
            self.result["v2_outcome"] = (
                "promoted" if promoted else "rolled back" if rolled_back else "undecided"
            )
            self.result["v2_canary_windows"] = len(
                {i.started for i in self.rt.invocations_of("ComputeMetricsFunction") if start < i.started}
            )

    def run_broken(self) -> None:
        from shelfwise.rollout import Rollout

        c = self.cfg
        registry = self._registry()
        version = f"{self.v2}-broken"
        bundle = build_broken_bundle(registry, self.v2, version, self.out_dir / "v3", c.seed)
        # registered the way v2 was: a forced challenger's override goes with its re-export (and
        # waives the off-policy half's comparison with the champion, so the alarms must act)
        override = (registry.registration(self.v2)["gate"] or {}).get("override")
        override = None if override is None else {k: v for k, v in override.items() if k != "actor"}
        reg = registry.register(
            bundle, version, off_policy=self._off_policy_check(registry), gate_override=override
        )
        ope = reg.gate.off_policy or {}
        self.result["v3_off_policy"] = ope
        # refused when the registry did not offer it (an override waives the off-policy verdict)
        self.stages["v3_refused_offline"] = (
            bool(ope.get("applied")) and not ope.get("passed") and not reg.offered_for_canary
        )
        self.v3 = version
        if self.stages["v3_refused_offline"]:
            self.result["v3_offline_exposure"] = 0.0
            self.log(
                f"v3 {version} (shuffled item scores) refused by the gate's off-policy half before any traffic "
                f"(0% exposure): {'; '.join(ope.get('reasons') or [])[:300]}"
            )
            # To show the alarms still act without this gate: the same bundle registered again as
            # another version with the metric gate only, and offered like any version.
            version = f"{version}-nogate"
            again = registry.register(bundle, version, gate_override=override)
            offer = Rollout(registry).offer(version, gate_passed=again.offered_for_canary, now=self.now())
            self.v3 = version
            started = offer.action == "start"
            self.log(
                f"the same broken bundle registered as {version} without the off-policy gate: {offer.reason}"
            )
        else:
            self.log(f"off-policy gate on v3: {json.dumps(ope)[:400]}")
            offer = Rollout(registry).offer(version, gate_passed=reg.offered_for_canary, now=self.now())
            started = offer.action == "start"
            self.log(
                f"v3 {version} (shuffled item scores) registered, offline gate passed: {reg.gate.passed}; {offer.reason}"
            )
        self.stages["v3_canary_started"] = started
        if not started:
            return
        start = self.rt.clock.now()
        self.broken_start = start
        rolled_back_at = None
        for w in range(c.max_broken_windows):
            self._window_line(self.window(c.requests, stop=lambda a: a.challenger != version))
            a = self.aliases()
            if a.challenger != version:
                rolled_back_at = self._rollback_time(version)
                self.log(f"v3 taken out of traffic after {w + 1} windows (challenger: {a.challenger})")
                break
        rolled = rolled_back_at is not None and self.aliases().champion == self.v2
        self.stages["v3_rolled_back"] = rolled
        if rolled:
            assert rolled_back_at is not None
            served = [v for t, items in self.counts if start <= t < rolled_back_at for v in items]
            # Evaluation windows = monitoring passes between the canary start and the rollback.
            # (distinct scheduled instants: an async retry of a failed pass is the same window)
            self.result["detection_windows"] = len(
                {
                    i.started
                    for i in self.rt.invocations_of("ComputeMetricsFunction")
                    # strictly after: the pass at the canary's own instant ran before it started
                    if start < i.started <= rolled_back_at
                }
            )
            failed = [i for i in self.rt.invocations_of("ComputeMetricsFunction") if not i.ok]
            if failed:
                self.log(f"monitoring pass failures: {len(failed)}; last: {str(failed[-1].error)[:300]}")
            self.result["exposed_share"] = round(served.count(version) / max(len(served), 1), 4)
            self.result["broken_items"] = len(served)
            self.log(
                f"rollback at {datetime.fromtimestamp(rolled_back_at, UTC):%H:%M:%S}: "
                f"{self.result['detection_windows']} evaluation windows after canary start; the broken model placed "
                f"{served.count(version)} of {len(served)} items shown ({self.result['exposed_share']:.1%})"
            )
        self.broken_end = self.rt.clock.now()

    def _off_policy_check(self, registry: Any) -> Any:
        """The gate's off-policy half on what the champion served so far (curated impressions)."""
        from shelfwise.monitoring.data import COLUMNS, S3EventSource
        from shelfwise.offpolicy import OpeConfig
        from shelfwise.offpolicy_gate import off_policy_check
        from shelfwise.offpolicy_log import bundle_scorer, logged_lists
        from shelfwise.serving.model import LoadedModel

        source = S3EventSource(self.rt.s3, self.rt.physical_name("CuratedBucket"), COLUMNS)
        now = datetime.fromtimestamp(self.rt.clock.now(), UTC)
        events = source.read(now - timedelta(days=2), now)
        data = logged_lists(events)
        champion_lists = data.subset(data.model_versions == self.v2)
        champion_dir = registry.download(self.v2, self.out_dir / "ope-champion")
        champion = bundle_scorer(LoadedModel.from_directory(champion_dir, self.v2))
        self.log(f"off-policy gate: {champion_lists.lists.n} lists served by {self.v2} in the curated log")
        return off_policy_check(
            champion_lists,
            champion,
            registry.gate_tolerance,
            OpeConfig(min_lists=DEMO_OPE_MIN_LISTS, min_ess=DEMO_OPE_MIN_ESS),
        )

    def _rollback_time(self, version: str) -> float | None:
        for rec in self._registry().history():
            if rec.get("action") == "ModelRolledBack" and rec.get("version") == version:
                return datetime.fromisoformat(rec["time"]).timestamp()
        return None

    def _baseline_frozen(self) -> bool:
        key = f"monitoring/state/{self.model_name}-champion-baseline.json"
        try:
            body = self.rt.s3.get_object(Bucket=self.rt.physical_name("MonitoringBucket"), Key=key)["Body"]
        except Exception:
            return False
        state = json.loads(body.read())
        return bool(state.get("frozen")) and state.get("champion") == self.v2

    def run_drift(self) -> None:
        from shelfwise.simulator import Incident

        c = self.cfg
        # Quiet traffic until the champion's CTR baseline is complete, then the incident.
        start = self.rt.clock.now()
        for _ in range(c.max_drift_windows):
            if self._baseline_frozen():
                break
            self._window_line(self.window(c.requests))
        self.stable.append((start, self.rt.clock.now()))
        if not self._baseline_frozen():
            self.stages["taste_drift_detected"] = False
            self.log("champion CTR baseline never completed; taste drift not run")
            return
        drift_at = self.rt.clock.now()
        day0 = self.shop.model.start_ms / 1000
        incident = Incident("taste_drift", (drift_at - day0) / 86400, {"share": c.drift_share})
        from shelfwise.simulator import Shop

        self.shop = Shop(self._shop_params((incident,)), seed=c.seed)
        self.log(f"taste drift: {c.drift_share:.0%} of users get new favourite categories")
        alarm = self.rt.physical_name("ChampionCtrDriftAlarm")
        detected = None
        for _ in range(c.max_drift_windows):
            self._window_line(self.window(c.requests))
            hit = [h for h in self.rt.alarm_history(alarm) if h["NewState"] == "ALARM"]
            if hit:
                detected = datetime.fromisoformat(hit[0]["Timestamp"]).timestamp()
                break
        self.stages["taste_drift_detected"] = detected is not None
        self.result["taste_drift_detected"] = detected is not None
        self.result["taste_drift_detection_minutes"] = (
            round((detected - drift_at) / 60, 1) if detected is not None else None
        )
        self.log(
            f"{alarm}: "
            + (
                f"ALARM {self.result['taste_drift_detection_minutes']} min after the drift"
                if detected
                else "never fired"
            )
        )
        self.drift_at = drift_at
