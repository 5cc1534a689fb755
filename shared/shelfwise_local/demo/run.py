"""One run of the demo and its result: the phases in order, the alarms that must stay quiet, the
HTML report, the result's keys (the final JSON line) and the checks on them."""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from typing import Any

import numpy as np

from shelfwise_local.demo.config import WINDOW_S, DemoConfig
from shelfwise_local.demo.phases import Phases


class Demo(Phases):
    """One run of the whole loop. ``run()`` returns the result dict (the final JSON line)."""

    def startup_alarms(self) -> list[dict[str, Any]]:
        """ALARM transitions before the first monitoring pass (the stack was just created)."""
        return [
            {"alarm": h["AlarmName"], "at": h["Timestamp"]}
            for h in self.rt.alarm_history()
            if h["NewState"] == "ALARM"
            and datetime.fromisoformat(h["Timestamp"]).timestamp() < self.t0 + WINDOW_S
        ]

    def false_alarms(self) -> list[dict[str, Any]]:
        """ALARM transitions inside the stable periods (before/without a bad model or incident)."""
        out = []
        for h in self.rt.alarm_history():
            if h["NewState"] != "ALARM":
                continue
            t = datetime.fromisoformat(h["Timestamp"]).timestamp()
            if any(a <= t <= b for a, b in self.stable):
                out.append({"alarm": h["AlarmName"], "at": h["Timestamp"]})
        return out

    def write_report(self) -> None:
        from shelfwise.monitoring.publish import read_history
        from shelfwise.monitoring.report import render_report
        from shelfwise.rollout import read_decisions

        s3 = self.rt.s3
        mon = self.rt.physical_name("MonitoringBucket")
        html = render_report(
            read_history(s3, mon),
            audit=self._registry().history(),
            decisions=read_decisions(s3, mon),
            alarm_changes=self.rt.alarm_history(),
            title="Shelfwise demo: the whole loop",
        )
        self.report_path.write_text(html)
        self.log(f"HTML report: {self.report_path}")
        # What promotion decided on, and how far the champion's served scores sat from the reference.
        promotes = [
            d for d in read_decisions(s3, mon) if d.get("action") in ("promote", "advance", "allocate")
        ]
        self.result["promotion_evidence"] = [
            {
                "action": d["action"],
                "at": d["at"],
                "from_weight": (d.get("detail") or {}).get("weight"),
                "evidence": (d.get("detail") or {}).get("evidence"),
                **({"bandit": d["detail"]["bandit"]} if "bandit" in (d.get("detail") or {}) else {}),
                "weight": (d.get("after") or {}).get("canary_weight"),
            }
            for d in promotes
        ]
        psi = sorted(
            r["value"]
            for r in read_history(s3, mon)
            if r["name"] == "ScorePSI" and (r.get("dimensions") or {}).get("Variant") == "champion"
        )
        if psi:
            self.result["champion_score_psi"] = {
                "windows": len(psi),
                "p50": round(float(np.quantile(psi, 0.5)), 4),
                "p95": round(float(np.quantile(psi, 0.95)), 4),
            }

    def _expected(self, stage: str) -> bool:
        if self.cfg.challenger_family:
            # a forced challenger may be promoted or rolled back; the later phases need it promoted
            # v3 inherits v2's override, which waives the off-policy comparison: the alarms decide
            if stage in ("v2_promoted", "v3_refused_offline"):
                return False
            if stage.startswith("v3_") or stage == "taste_drift_detected":
                return bool(self.stages.get("v2_promoted")) and (
                    stage != "taste_drift_detected" or self.cfg.taste_drift
                )
            return True
        return stage not in ("v2_is_named_family", "v2_decided") and (
            stage != "taste_drift_detected" or self.cfg.taste_drift
        )

    def tidy(self) -> None:
        """Remove the run's working files from its own temporary directory, keeping the report."""
        for entry in self.out_dir.iterdir():
            if entry == self.report_path:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def run(self) -> dict[str, Any]:
        t = time.perf_counter()
        false: list[dict[str, Any]] = []
        startup: list[dict[str, Any]] = []
        try:
            self.setup()
            self.run_v1()
            if self.stages["v1_champion"]:
                self.run_stock()
                self.run_stable(self.cfg.stable_windows, self.cfg.requests, "stable traffic on v1")
                self.run_v2()
            if self.stages.get("v2_promoted"):
                self.run_broken()
            if self.stages.get("v3_rolled_back") and self.cfg.taste_drift:
                self.run_drift()
            false = self.false_alarms()
            startup = self.startup_alarms()
            for f in startup:
                self.log(f"start-up alarm (informational, before the first monitoring pass): {f['alarm']}")
            for f in false:
                self.log(f"false alarm: {f['alarm']} at {f['at']}")
            self.write_report()
        finally:
            if self.rt is not None:
                self.rt.close()
            if self.own_out_dir:
                self.tidy()
        # Where the wall time went: seconds inside each function (the rest is the runtime, the
        # emulator, HTTP and the shop), for whoever tunes the demo next.
        function_s: dict[str, float] = {}
        for inv in self.rt.invocations if self.rt is not None else []:
            function_s[inv.function] = function_s.get(inv.function, 0.0) + inv.duration_ms / 1000
        expected = (
            "v1_champion",
            "stock_out_left_lists",
            "v2_is_named_family",
            "v2_canary_started",
            "v2_promoted",
            "v2_decided",
            "v3_refused_offline",
            "v3_canary_started",
            "v3_rolled_back",
            "taste_drift_detected",
        )
        self.result = {
            "stages_ok": all(self.stages.get(s, False) for s in expected if self._expected(s)),
            "stages": {s: self.stages.get(s, False) for s in expected if self._expected(s)},
            "good_model_promoted": self.stages.get("v2_promoted", False),
            # with a challenger family: its algorithm, and whether the canary promoted or rolled it back
            "challenger_family": self.cfg.challenger_family or None,
            "v2_algorithm": self.result.get("v2_algorithm"),
            "v2_outcome": self.result.get("v2_outcome"),
            "v2_canary_windows": self.result.get("v2_canary_windows"),
            "broken_model_rolled_back": self.stages.get("v3_rolled_back", False),
            "detection_windows": self.result.get("detection_windows"),
            "exposed_share": self.result.get("exposed_share"),
            # the gate's off-policy half on the broken model, before any traffic
            "broken_model_refused_offline": self.stages.get("v3_refused_offline", False),
            "broken_model_offline_exposure": self.result.get("v3_offline_exposure"),
            "broken_model_off_policy": self.result.get("v3_off_policy"),
            "false_alarms": len(false),
            "false_alarm_list": false,
            "startup_alarms": startup,
            "taste_drift_detected": self.result.get("taste_drift_detected", False),
            "promotion_evidence": self.result.get("promotion_evidence"),
            "champion_score_psi": self.result.get("champion_score_psi"),
            "taste_drift_detection_minutes": self.result.get("taste_drift_detection_minutes"),
            "requests": self.requests,
            "http_errors": self.errors,
            "platform_hours": round((self.rt.clock.now() - self.t0) / 3600, 2) if self.rt else None,
            "report": str(self.report_path),
            "overrides": getattr(self, "overrides", {}),
            "parameters": getattr(self, "parameters", {}),
            "requests_per_window": self.cfg.requests,
            "backend": self.backend,
            "wall_s": round(time.perf_counter() - t, 1),
            "function_s": {k: round(v, 1) for k, v in sorted(function_s.items())},
        }
        return self.result


def expectations_met(result: dict[str, Any], cfg: DemoConfig) -> list[str]:
    """What failed, in words (empty when the run met every expectation)."""
    failed = [f"stage {s} failed" for s, ok in result["stages"].items() if not ok]
    interleaved = cfg.canary_mode == "interleave"
    windows = cfg.interleaved_detection_windows_max if interleaved else cfg.detection_windows_max
    if result["detection_windows"] is not None and result["detection_windows"] > windows:
        failed.append(f"broken model rolled back after {result['detection_windows']} windows (> {windows})")
    share = cfg.interleaved_exposed_share_max if interleaved else cfg.exposed_share_max
    if result["exposed_share"] is not None and result["exposed_share"] > share:
        failed.append(f"broken model placed {result['exposed_share']:.1%} of the items shown (> {share:.0%})")
    if result["false_alarms"]:
        failed.append(f"{result['false_alarms']} false alarms in stable periods")
    return failed
