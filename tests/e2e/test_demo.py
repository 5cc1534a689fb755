"""The whole loop (`shelfwise demo --fast`): a smaller run of exactly what `make demo` runs.

On the selected emulator (SHELFWISE_BACKEND): raw exports -> ingest -> v1 champion -> traffic
through the HTTP API -> v2 canary -> promoted -> broken v3 -> alarm -> rolled back, with no false
alarm in the stable periods. (The taste-drift leg runs in the full demo only: at this scale it
needs more traffic than an e2e test should spend.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shelfwise_local.demo import Demo, DemoConfig, expectations_met
from shelfwise_local.runtime.testing import backend_from_env


@pytest.mark.slow
def test_the_whole_loop_runs_end_to_end(tmp_path: Path) -> None:
    cfg = DemoConfig.fast()
    result = Demo(cfg, backend=backend_from_env(), out_dir=tmp_path, stream=None).run()
    assert expectations_met(result, cfg) == [], json.dumps(result, indent=1)
    assert result["good_model_promoted"] and result["broken_model_rolled_back"]
    assert 1 <= result["detection_windows"] <= 2
    assert 0 < result["exposed_share"] <= 0.13  # the 10% canary, honoured (hash routing noise)
    assert result["false_alarms"] == 0
    assert "taste_drift_detected" not in result["stages"]  # not part of the fast run
    assert result["http_errors"] == 0
    report = Path(result["report"]).read_text()
    assert "<svg" in report and "ModelRolledBack" in report
