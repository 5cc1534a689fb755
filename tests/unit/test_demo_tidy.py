"""A demo run in a temporary directory of its own leaves only its report behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from shelfwise_local.demo.config import DemoConfig
from shelfwise_local.demo.run import Demo

pytestmark = pytest.mark.unit


def _work(out: Path) -> None:
    (out / "shop" / "events").mkdir(parents=True)
    (out / "shop" / "events" / "day-1.jsonl").write_text("{}\n")
    (out / "v3").mkdir()
    (out / "notes.txt").write_text("scratch")
    (out / "report.html").write_text("<html></html>")


def test_its_own_directory_keeps_only_the_report() -> None:
    demo = Demo(DemoConfig.fast(), stream=None)
    assert demo.own_out_dir
    _work(demo.out_dir)
    demo.tidy()
    assert sorted(p.name for p in demo.out_dir.iterdir()) == ["report.html"]
    demo.report_path.unlink()
    demo.out_dir.rmdir()


def test_a_directory_given_is_the_callers_and_is_not_tidied(tmp_path: Path) -> None:
    assert not Demo(DemoConfig.fast(), out_dir=tmp_path, stream=None).own_out_dir
