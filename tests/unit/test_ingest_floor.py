"""The ingest's floor as a setting: parsed once at cold start, named when wrong, stated in quarantine."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfwise.errors import ConfigurationError, InputError
from shelfwise.events import MIN_TS_MS
from shelfwise.ingest import ingest_file
from shelfwise.ingest.catalogue import DirStore, ingest_catalogue
from shelfwise.settings import load_settings
from shelfwise.time_floor import floor_ms
from shelfwise_local.runtime.template import TemplateError, load_template, parameter_values
from tests.unit.test_ingest_s3 import CURATED, QUARANTINE, _load_handler

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MS_2000 = 946_684_800_000
BUCKETS = {"CURATED_BUCKET": CURATED, "QUARANTINE_BUCKET": QUARANTINE}


def _handler(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """The ingest handler module, cold-started with ``env`` on top of the buckets."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return _load_handler(monkeypatch)


@pytest.fixture
def settings_model(monkeypatch: pytest.MonkeyPatch) -> type:
    return _handler(monkeypatch).IngestSettings  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2000-01-01", MS_2000),  # a date: its midnight, UTC
        ("2000-01-01T00:00:00Z", MS_2000),
        ("2000-01-01T01:30:00+01:30", MS_2000),  # a zone is honoured
        ("2000-01-01T00:00:00.250", MS_2000 + 250),  # no zone: UTC
        (" 2000-01-01 ", MS_2000),
        ("", MIN_TS_MS),  # empty: only what is before 1970 is refused
        ("   ", MIN_TS_MS),
    ],
)
def test_the_function_reads_its_floor_from_ingest_min_time(settings_model: type, value: str, ms: int) -> None:
    settings = load_settings(settings_model, {**BUCKETS, "INGEST_MIN_TIME": value})
    assert settings.min_ts_ms == ms  # type: ignore[attr-defined]


def test_no_variable_means_the_unix_epoch(settings_model: type) -> None:
    assert load_settings(settings_model, BUCKETS).min_ts_ms == MIN_TS_MS == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["garbage", "2000-13-01", "01/02/2000", "946684800000", "2000-01-01T25:00"])
def test_a_floor_that_is_not_a_date_fails_the_cold_start_naming_the_variable(
    settings_model: type, value: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"INGEST_MIN_TIME.*ISO 8601 date or time") as err:
        load_settings(settings_model, {**BUCKETS, "INGEST_MIN_TIME": value})
    assert repr(value) in str(err.value)


def test_the_handler_module_refuses_to_start_with_a_bad_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _handler(monkeypatch, INGEST_MIN_TIME="2000-01-01").settings.min_ts_ms == MS_2000
    with pytest.raises(ConfigurationError, match="INGEST_MIN_TIME"):
        _handler(monkeypatch, INGEST_MIN_TIME="last tuesday")


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_any_iso_time_reads_as_its_epoch_milliseconds(when: datetime) -> None:
    exact = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert floor_ms(when.isoformat(), "X") == exact
    assert floor_ms(when.isoformat().replace("+00:00", "Z"), "X") == exact


def test_the_parser_names_where_the_value_came_from() -> None:
    with pytest.raises(InputError, match=r"^--min-time must be an ISO 8601 date or time"):
        floor_ms("soon", "--min-time")


def test_the_template_parameter_reaches_the_function_and_refuses_what_is_not_a_date() -> None:
    template = load_template(ROOT / "template.yaml")
    param = template["Parameters"]["IngestMinTime"]
    assert param["Default"] == ""
    for function in ("IngestEventsFunction", "CollectEventsFunction"):  # uploads and the events API
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["INGEST_MIN_TIME"] == {"Ref": "IngestMinTime"}, function
    good = ["", "2000-01-01", "2000-01-01T00:00:00Z", "2000-01-01T00:00", "2000-01-01T02:00:00.5+02:00"]
    for value in good:  # what the deploy admits, the function reads
        assert re.fullmatch(param["AllowedPattern"], value), value
        floor_ms(value, "INGEST_MIN_TIME")
    for value in ["garbage", "946684800", "2000-01-01Z", "01/02/2000"]:
        assert not re.fullmatch(param["AllowedPattern"], value), value
    with pytest.raises(TemplateError, match=r"IngestMinTime.*ISO 8601 date or time"):
        parameter_values(template, {"IngestMinTime": "garbage"})  # the local runtime refuses it too


def _quarantine(out: Path, prefix: str = "quarantine") -> list[dict[str, object]]:
    [path] = (out / prefix).glob("*.jsonl.gz")
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


@pytest.mark.parametrize("key", [None, b"k3y"])
def test_a_json_lines_row_before_the_floor_says_which_floor(tmp_path: Path, key: bytes | None) -> None:
    src = tmp_path / "events.jsonl"
    src.write_text(
        '{"event_type": "view", "user_id": "u1", "item_id": "i1", "timestamp": "1999-12-31T23:59:59Z"}\n'
        '{"event_type": "view", "user_id": "u1", "item_id": "i1", "timestamp": "2000-01-01T00:00:00Z"}\n'
        '{"event_type": "view", "user_id": "u1", "timestamp": "2000-01-02T00:00:00Z"}\n'
    )
    s = ingest_file(src, tmp_path / "out", min_ts_ms=MS_2000, pseudonymisation_key=key)
    assert (s.rows_valid, s.reasons) == (1, {"missing_item_id": 1, "timestamp_out_of_range": 1})
    assert s.time_range["valid_from"] == "2000-01-01T00:00:00Z"
    early, no_item = _quarantine(tmp_path / "out")
    assert early["reason"] == "timestamp_out_of_range"
    assert (early["valid_from"], early["valid_until"]) == (
        s.time_range["valid_from"],
        s.time_range["valid_until"],
    )
    assert "valid_from" not in no_item


def test_a_catalogue_row_before_the_floor_says_which_floor(tmp_path: Path) -> None:
    data = b"item_id,title,category,price,in_stock,updated_at\ni1,Lamp,home,1.0,true,1999-06-01\n"
    uploaded = datetime(2026, 12, 1, tzinfo=UTC)
    s = ingest_catalogue(
        data, DirStore(tmp_path), source_key="c.csv", name="c", uploaded=uploaded, min_ts_ms=MS_2000
    )
    assert s.time_range == {"valid_from": "2000-01-01T00:00:00Z", "valid_until": "2026-12-02T00:00:00Z"}
    [record] = _quarantine(tmp_path, "quarantine/catalogue")
    assert record == {
        "line": 2,
        "reason": "timestamp_out_of_range",
        "valid_from": "2000-01-01T00:00:00Z",
        "valid_until": "2026-12-02T00:00:00Z",
        "raw": "i1,Lamp,home,1.0,true,1999-06-01",
    }
