"""compute_metrics: MONITORING_CONFIG overrides MonitoringConfig's scalar fields, and nothing else."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from shelfwise.errors import InputError
from shelfwise.monitoring.config import MonitoringConfig

ROOT = Path(__file__).resolve().parents[2]


def _app(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for k in ("CURATED_BUCKET", "MODELS_BUCKET", "MONITORING_BUCKET", "MODEL_NAME", "SHELFWISE_ENV"):
        monkeypatch.setenv(k, "x")
    spec = importlib.util.spec_from_file_location(
        "compute_metrics_cfg_app", ROOT / "functions/compute_metrics/app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_empty_means_the_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(monkeypatch)
    assert app.monitoring_config("") == MonitoringConfig()
    assert app.monitoring_config("  ") == MonitoringConfig()


def test_scalar_fields_are_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(monkeypatch)
    cfg = app.monitoring_config('{"champion_baseline_lists": 3000, "drift_margin": 0.1}')
    assert cfg.champion_baseline_lists == 3000 and cfg.drift_margin == 0.1
    assert cfg.champion_lookback_windows == MonitoringConfig().champion_lookback_windows


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1]", '{"no_such_field": 1}', '{"attribution": 1}', '{"alpha": "high"}', '{"tau": true}'],
)
def test_bad_overrides_are_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    app = _app(monkeypatch)
    with pytest.raises(InputError, match="MONITORING_CONFIG"):
        app.monitoring_config(raw)
