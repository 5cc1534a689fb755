"""The sequential model as a challenger (`shelfwise demo --fast --challenger-family sequential`, up
to the v2 decision): an operator override trains and registers it past the guard, the canary
serves it through the HTTP API, monitoring measures it, and the rollout promotes or rolls it back
on evidence, like any other version.

The first phases of the demo only (v1, stable traffic, the v2 canary): the broken-model and drift
legs are the demo test's. On the embedded moto server only: the path under test is the model's,
not the emulator's (tests/e2e/test_demo.py runs the loop on both), and a second LocalStack loop
would add minutes to CI.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shelfwise_local.demo.config import DemoConfig
from shelfwise_local.demo.run import Demo
from shelfwise_local.runtime.testing import backend_from_env


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~4 min quiet; the default 10 min is for hangs, and a loaded CI box is slower
def test_a_sequential_challenger_is_canaried_monitored_and_decided(tmp_path: Path) -> None:
    if backend_from_env() != "moto":
        pytest.skip("the model's path, not the emulator's: run on moto (the demo test covers LocalStack)")
    # looked up, not imported: PyTorch loads only in the run that trains with it
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the sequential family trains with PyTorch (make torch)")
    from shelfwise.monitoring.publish import read_history

    today = datetime.now(UTC).date()
    cfg = dataclasses.replace(
        DemoConfig.fast(),
        serving_day=today - timedelta(days=(today.weekday() - 5) % 7),
        challenger_family="sequential",
    )
    demo = Demo(cfg, backend="moto", out_dir=tmp_path, stream=None)
    try:
        demo.setup()
        # one configuration per family (at most 8 epochs for the sequential model): the search is
        # the training tests' subject, and its grid would double this test's time
        demo.rt.host.find("TrainModelFunction").environment["SEARCH_LEVEL"] = "none"
        demo.run_v1()
        assert demo.stages["v1_champion"]
        demo.run_stable(1, cfg.requests, "stable traffic on v1")
        demo.run_v2()
        registry = demo._registry()
        history = registry.history()
        metrics = read_history(demo.rt.s3, demo.rt.physical_name("MonitoringBucket"))
        manifest = registry.manifest(demo.v2)
        gate = registry.registration(demo.v2)["gate"]
    finally:
        demo.rt.close()
    assert demo.stages["v2_is_named_family"] and demo.stages["v2_canary_started"], demo.stages
    assert demo.stages["v2_decided"], demo.result
    # trained and registered by the override, with what the guard and the gate would have done
    assert manifest["algorithm"] == "sequential"
    override = manifest["evaluation"]["selection"]["override"]
    assert override["family"] == "sequential" and override["past_gate"]
    assert override["guard_would_serve"] in manifest["evaluation"]["models"]
    assert manifest["onnx_graph"]["graph"] in ("int8-candidates", "exact") and manifest["parity"]["ok"]
    assert gate["passed"] and gate["override"]["actor"] == "train_model"
    # served through the HTTP API as the challenger, and measured as one by monitoring
    served = [v for _, items in demo.counts for v in items]
    assert served.count(demo.v2) > 0 and demo.errors == 0
    assert any((m.get("dimensions") or {}).get("Variant") == "challenger" for m in metrics)
    # the rollout's decision, in the audit trail
    actions = {r["action"] for r in history if r.get("version") == demo.v2}
    assert {"ModelRegistered", "CanaryStarted"} <= actions  # one instant: the audit orders them by name
    decided = "ModelPromoted" if demo.result["v2_outcome"] == "promoted" else "ModelRolledBack"
    assert decided in actions
