"""compute_metrics: MONITORING_CONFIG overrides MonitoringConfig's scalar fields, and nothing else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shelfwise.errors import InputError
from shelfwise.monitoring.config import MonitoringConfig, config_with_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_empty_means_the_documented_defaults() -> None:
    assert config_with_overrides("") == MonitoringConfig()
    assert config_with_overrides("  ") == MonitoringConfig()


def test_scalar_fields_are_overridden() -> None:
    cfg = config_with_overrides('{"champion_baseline_lists": 3000, "drift_margin": 0.1}')
    assert cfg.champion_baseline_lists == 3000 and cfg.drift_margin == 0.1
    assert cfg.champion_lookback_windows == MonitoringConfig().champion_lookback_windows


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1]", '{"no_such_field": 1}', '{"attribution": 1}', '{"alpha": "high"}', '{"tau": true}'],
)
def test_bad_overrides_are_refused_with_a_clear_error(raw: str) -> None:
    with pytest.raises(InputError, match="MONITORING_CONFIG"):
        config_with_overrides(raw)


def test_the_function_reads_its_overrides_at_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("CURATED_BUCKET", "MODELS_BUCKET", "MONITORING_BUCKET", "MODEL_NAME", "SHELFWISE_ENV"):
        monkeypatch.setenv(k, "x")
    monkeypatch.setenv("MONITORING_CONFIG", '{"champion_baseline_lists": 3000}')
    spec = importlib.util.spec_from_file_location(
        "compute_metrics_cfg_app", ROOT / "functions/compute_metrics/app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.config.champion_baseline_lists == 3000
    monkeypatch.setenv("MONITORING_CONFIG", "not json")
    with pytest.raises(InputError, match="MONITORING_CONFIG"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
