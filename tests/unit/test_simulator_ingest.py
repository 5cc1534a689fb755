"""Simulated files are what the ingest expects: zero quarantined rows, except the garbled lines of a
corrupted export, which must all be quarantined (and nothing else). Also ``--stats`` end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from shelfwise.cli.simulate import main
from shelfwise.simulator import Incident, ShopParams, simulate_to_files

ingest = pytest.importorskip("shelfwise.ingest")

PARAMS = ShopParams(n_users=1200, n_items=300, n_days=2)


@pytest.mark.parametrize("fmt", ["native", "jsonl", "taobao", "retailrocket"])
def test_every_format_ingests_without_quarantine(fmt: str, tmp_path: Path) -> None:
    params = PARAMS.with_incidents(Incident.parse("bot_traffic@1.5"), Incident.parse("new_category@1"))
    res = simulate_to_files(params, 5, tmp_path / "raw", fmt=fmt)
    total = 0
    for f in res.files:
        s = ingest.ingest_file(f, tmp_path / "bucket")
        assert (s.rows_read, s.rows_quarantined, s.duplicates) == (res.events_per_file[Path(f).name], 0, 0), (
            s.reasons
        )
        assert s.rows_valid == s.rows_read
        total += s.rows_valid
    assert total == res.events
    table = ingest.read_events(tmp_path / "raw" / "events", fmt="auto")
    assert table.num_rows == res.events


def test_schema_change_is_kept_not_quarantined(tmp_path: Path) -> None:
    res = simulate_to_files(PARAMS.with_incidents(Incident.parse("schema_change@1")), 5, tmp_path / "raw")
    after = ingest.read_events(res.files[1])
    assert after.num_rows == res.events_per_file[Path(res.files[1]).name]
    props = [json.loads(p) for p in after["properties"].to_pylist()]
    items = after["item_id"].to_pylist()
    assert all(p["channel"] == "app" for p in props)
    assert all("unit_price" in p for p, item in zip(props, items, strict=True) if item is not None)
    assert after["price"].null_count == after.num_rows  # the silent part of the incident
    before = ingest.read_events(res.files[0])
    assert before["price"].null_count < before.num_rows


@pytest.mark.parametrize("fmt", ["native", "jsonl", "taobao"])
def test_corrupted_export_lines_are_exactly_the_quarantined_ones(fmt: str, tmp_path: Path) -> None:
    res = simulate_to_files(
        PARAMS.with_incidents(Incident.parse("corrupted_export@1")), 8, tmp_path / "raw", fmt=fmt
    )
    truth = res.ground_truth[0]
    for f in res.files:
        s = ingest.ingest_file(f, tmp_path / "bucket")
        assert s.duplicates == 0
        if Path(f).name != truth["file"]:
            assert s.rows_quarantined == 0
            continue
        assert s.rows_quarantined == truth["n_garbled"] > 0
        assert s.rows_valid + s.rows_quarantined == s.rows_read
        quarantine = (
            Path(s.quarantine) if Path(s.quarantine).is_absolute() else tmp_path / "bucket" / s.quarantine
        )
        with gzip.open(quarantine, "rt") as fh:
            lines = sorted(json.loads(x)["line"] for x in fh)
        assert lines == truth["garbled_lines"]


def test_stats_cli_on_a_simulated_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    simulate_to_files(PARAMS, 3, tmp_path)
    assert main(["--stats", str(tmp_path / "events")]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mix = figures["taobao_mix"]
    assert mix["view"] > 0.8 and 0 < mix["purchase"] < 0.06
    assert figures["events_per_user"]["p99"] >= figures["events_per_user"]["median"] >= 1
    assert 0.3 < figures["item_gini"] < 1
    assert figures["days"] == 2


@pytest.mark.slow
def test_stats_cli_on_the_real_retail_log(retail_parquet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stats", str(retail_parquet)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["event_types"]["purchase"] > 0.9
    assert figures["repeat_customer_rate"] > 0.2
