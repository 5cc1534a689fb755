"""The build check's serving sizing: memory and /tmp derived from the bundle size."""

from __future__ import annotations

from pathlib import Path

import yaml

from shelfwise_local import buildcheck as bc

ROOT = Path(__file__).resolve().parents[2]


def test_requirements_grow_with_the_bundle() -> None:
    assert bc.serving_requirements(200) == {"memory_mb": 856, "ephemeral_mb": 664}
    small, large = bc.serving_requirements(56), bc.serving_requirements(1800)
    assert small["memory_mb"] < large["memory_mb"] and small["ephemeral_mb"] < large["ephemeral_mb"]


def test_short_memory_or_tmp_fails() -> None:
    ok = bc.check_serving_sizing({"MemorySize": 1769, "EphemeralStorage": {"Size": 1024}}, 200)
    assert ok["ok"] and "problems" not in ok
    default_tmp = bc.check_serving_sizing({"MemorySize": 1769}, 200)
    assert not default_tmp["ok"] and "EphemeralStorage 512 < 664 MB" in default_tmp["problems"]
    small = bc.check_serving_sizing({"MemorySize": 512, "EphemeralStorage": {"Size": 1024}}, 200)
    assert not small["ok"] and any(p.startswith("MemorySize 512") for p in small["problems"])
    huge = bc.check_serving_sizing({"MemorySize": 10240, "EphemeralStorage": {"Size": 10240}}, 5000)
    assert not huge["ok"] and any("shards" in p for p in huge["problems"])


def test_bundle_size_skips_parquet(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x" * bc.MB)
    (tmp_path / "items.parquet").write_bytes(b"x" * bc.MB)
    assert bc.bundle_size_mb(tmp_path) == 1.0


def test_template_serving_function_fits_its_declared_bundle() -> None:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=bc._Loader)
    fn = template["Resources"]["ServeRecommendationsFunction"]
    check = bc.check_serving_sizing(fn["Properties"], float(fn["Metadata"]["BundleMaxMB"]))
    assert check["ok"], check
