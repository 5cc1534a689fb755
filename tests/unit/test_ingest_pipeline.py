"""The ingest pipeline on local files: accounting, quarantine, dedup, sessions, features, bad inputs."""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfwise.cli import main as cli
from shelfwise.ingest import CorruptInputError, UnknownFormatError, ingest_file, read_events
from shelfwise.ingest.schema import CURATED_SCHEMA

HEADER = "event_id,event_type,user_id,session_id,item_id,timestamp,price,quantity\n"


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _quarantine(summary_path: str | None) -> list[dict[str, object]]:
    if summary_path is None:
        return []
    with gzip.open(summary_path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _curated(out: Path):
    return read_events(out / "curated" / "events")


def test_every_row_is_accounted_for_with_its_reason_and_line(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "e.csv",
        HEADER
        + "e1,view,u1,,i1,2024-03-01T10:00:00Z,1.5,1\n"  # 2 valid
        + "e2,teleport,u1,,i1,2024-03-01T10:00:00Z,,\n"  # 3 unknown type
        + "e3,view,,,i1,2024-03-01T10:00:00Z,,\n"  # 4 no user, no session
        + "e4,purchase,u1,,,2024-03-01T10:00:00Z,,\n"  # 5 no item
        + "e5,view,u1,,i1,yesterday,,\n"  # 6 bad timestamp
        + "e6,view,u1,,i1,1969-12-31T23:59:59Z,,\n"  # 7 out of range (before the Unix epoch)
        + "e7,view,u1,,i1,2024-03-01T10:00:00Z,-3,\n"  # 8 negative price
        + "e8,view,u1,,i1,2024-03-01T10:00:00Z,abc,\n"  # 9 wrong type
        + "e1,view,u1,,i1,2024-03-01T10:00:00Z,1.5,1\n"  # 10 duplicate of e1
        + "e9,view,u1,i1,2024-03-01T10:00:00Z\n"  # 11 too few fields
        + "e10,search,,s1,,2024-03-01T10:01:00Z,,\n",  # 12 valid (search needs no item)
    )
    s = ingest_file(f, tmp_path / "out")
    assert (s.rows_read, s.rows_valid, s.rows_quarantined, s.duplicates) == (11, 2, 8, 1)
    assert s.reasons == {
        "unknown_event_type": 1,
        "missing_user_and_session": 1,
        "missing_item_id": 1,
        "bad_timestamp": 1,
        "timestamp_out_of_range": 1,
        "negative_price": 1,
        "wrong_type": 1,
        "malformed_row": 1,
    }
    bad = {r["line"]: r["reason"] for r in _quarantine(s.quarantine)}
    assert bad == {
        3: "unknown_event_type",
        4: "missing_user_and_session",
        5: "missing_item_id",
        6: "bad_timestamp",
        7: "timestamp_out_of_range",
        8: "negative_price",
        9: "wrong_type",
        11: "malformed_row",
    }
    t = _curated(tmp_path / "out")
    assert sorted(t.column("source_line").to_pylist()) == [2, 12]
    assert t.column("event_id").to_pylist() == ["e1", "e10"]


def test_features_weights_hours_days_and_partitions(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "e.csv",
        HEADER
        + "a,add_to_cart,u1,s1,i1,2024-03-03T23:30:00Z,,\n"  # Sunday
        + "b,purchase,u1,s1,i1,2024-03-04T00:10:00Z,,\n",  # Monday
    )
    s = ingest_file(f, tmp_path / "out")
    assert s.event_dates == ["2024-03-03", "2024-03-04"]
    assert all("event_date=2024-03-0" in o for o in s.outputs)
    t = _curated(tmp_path / "out").sort_by("event_id")
    assert t.column("weight").to_pylist() == [4.0, 8.0]
    assert t.column("hour").to_pylist() == [23, 0]
    assert t.column("dow").to_pylist() == [6, 0]
    meta = pq.ParquetFile(s.outputs[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_schema(s.outputs[0]).field("event_type").type == CURATED_SCHEMA.field("event_type").type


def test_sessions_split_on_a_30_minute_gap_across_blocks(tmp_path: Path) -> None:
    minutes = [0, 10, 39, 70, 71, 101, 140]  # gaps: 10, 29, 31 (new), 1, 30 (same), 39 (new)
    rows = "".join(
        f"e{i},view,u1,,i{i},2024-03-01T10:00:00Z,,\n".replace("10:00", f"{10 + m // 60:02d}:{m % 60:02d}")
        for i, m in enumerate(minutes)
    )
    rows += "x1,view,u2,,i1,2024-03-01T10:05:00Z,,\n"
    f = _write(tmp_path / "e.csv", HEADER + rows)
    s = ingest_file(f, tmp_path / "out", block_bytes=64)  # a block of a line or two
    assert s.sessions_derived == 8
    t = _curated(tmp_path / "out").sort_by("source_line")
    sessions = t.column("session_id").to_pylist()
    start = int(datetime(2024, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)
    assert sessions[:7] == [f"u1~{start + m * 60_000}" for m in (0, 0, 0, 70, 70, 70, 140)]
    assert sessions[7] == f"u2~{start + 5 * 60_000}"


def test_source_session_ids_are_kept(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.csv", HEADER + "e1,view,u1,web-123,i1,2024-03-01T10:00:00Z,,\n")
    ingest_file(f, tmp_path / "out")
    assert _curated(tmp_path / "out").column("session_id").to_pylist() == ["web-123"]


def test_duplicates_are_dropped_across_blocks_and_derived_ids_are_stable(tmp_path: Path) -> None:
    line = "view,u1,,i1,2024-03-01T10:00:00Z,2,1\n"
    f = _write(
        tmp_path / "e.csv", "event_type,user_id,session_id,item_id,timestamp,price,quantity\n" + line * 5
    )
    s = ingest_file(f, tmp_path / "out", block_bytes=80)
    assert (s.rows_valid, s.duplicates, s.event_ids_derived) == (1, 4, 5)
    again = read_events(f)
    assert again.column("event_id").to_pylist() == _curated(tmp_path / "out").column("event_id").to_pylist()


def test_pseudonymised_user_ids_never_reach_curated_data(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.csv", HEADER + "e1,view,alice@example.com,,i1,2024-03-01T10:00:00Z,,\n")
    s = ingest_file(f, tmp_path / "out", pseudonymisation_key=b"secret")
    data = b"".join(Path(o).read_bytes() for o in s.outputs)
    assert b"alice" not in data
    user = _curated(tmp_path / "out").column("user_id")[0].as_py()
    assert (
        user.startswith("p_")
        and user == read_events(f, pseudonymisation_key=b"secret").column("user_id")[0].as_py()
    )


def test_reprocessing_the_same_file_changes_nothing(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.csv", HEADER + "e1,view,u1,,i1,2024-03-01T10:00:00Z,,\n")
    first = ingest_file(f, tmp_path / "out")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    second = ingest_file(f, tmp_path / "out")
    assert second.skipped and second.outputs == first.outputs
    forced = ingest_file(f, tmp_path / "out", force=True)
    after = {
        p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file() and "_summaries" not in str(p)
    }
    assert forced.outputs == first.outputs
    assert after == {p: b for p, b in before.items() if "_summaries" not in str(p)}


@pytest.mark.parametrize("content", [b"", b"  \n\n", b"\xef\xbb\xbf"])
def test_empty_objects_are_a_clean_no_op(tmp_path: Path, content: bytes) -> None:
    s = ingest_file(_write(tmp_path / "e.csv", content), tmp_path / "out")
    assert (s.rows_read, s.outputs, s.quarantine) == (0, [], None)
    assert s.warnings


def test_header_only(tmp_path: Path) -> None:
    s = ingest_file(_write(tmp_path / "e.csv", HEADER), tmp_path / "out")
    assert (s.format, s.rows_read, s.outputs) == ("native", 0, [])


def test_non_utf8_bytes_quarantine_only_their_row(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "e.csv",
        HEADER.encode()
        + b"e1,view,u1,,i1,2024-03-01T10:00:00Z,,\n"
        + b"e2,view,u\xff\xfe1,,i1,2024-03-01T10:00:00Z,,\n"
        + b"e3,view,u1,,i2,2024-03-01T10:00:00Z,,\n",
    )
    s = ingest_file(f, tmp_path / "out")
    assert (s.rows_valid, s.reasons) == (2, {"invalid_utf8": 1})
    [bad] = _quarantine(s.quarantine)
    assert bad["line"] == 3 and "\\xff" in bad["raw"]


def test_non_utf8_header_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownFormatError, match="UTF-8"):
        ingest_file(_write(tmp_path / "e.csv", b"ev\xffent,b\n1,2\n"), tmp_path / "out")


def test_gzip_is_read_and_a_truncated_gzip_writes_nothing(tmp_path: Path) -> None:
    body = (
        HEADER + "".join(f"e{i},view,u{i % 7},,i{i},2024-03-01T10:00:00Z,,\n" for i in range(5000))
    ).encode()
    packed = gzip.compress(body)
    s = ingest_file(_write(tmp_path / "ok.csv.gz", packed), tmp_path / "out")
    assert s.rows_valid == 5000
    out = tmp_path / "out2"
    with pytest.raises(CorruptInputError):
        ingest_file(_write(tmp_path / "cut.csv.gz", packed[: len(packed) // 2]), out)
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_a_10_mb_line_is_quarantined_not_fatal(tmp_path: Path) -> None:
    huge = "q" * (10 * 1024 * 1024)
    f = _write(
        tmp_path / "e.csv",
        "event_type,session_id,item_id,timestamp,query\n"
        f"search,s1,,2024-03-01T10:00:00Z,{huge}\n"
        "search,s1,,2024-03-01T10:00:01Z,mug\n",
    )
    s = ingest_file(f, tmp_path / "out")
    assert (s.rows_valid, s.reasons) == (1, {"oversize_field": 1})
    [bad] = _quarantine(s.quarantine)
    assert bad["line"] == 2 and bad["raw_truncated_from"] > 10_000_000


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    from shelfwise.ingest import SourceGoneError

    with pytest.raises(SourceGoneError):
        ingest_file(tmp_path / "gone.csv", tmp_path / "out")


def test_cli_prints_one_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path / "e.csv", HEADER + "e1,view,u1,,i1,2024-03-01T10:00:00Z,,\n")
    assert cli(["ingest", str(f), "--format", "auto", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"rows_read", "rows_valid", "rows_quarantined", "duplicates", "reasons", "outputs"} <= set(summary)
    assert summary["rows_valid"] == 1
    # An undetectable format is bad input: exit 2, one line on stderr, a JSON error on stdout.
    assert cli(["ingest", str(_write(tmp_path / "x.csv", "a,b\n1,2\n")), "--out", str(tmp_path / "o")]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["error"] == "UnknownFormatError"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert cli(["ingest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2


# Row kinds for the property test, each with the reason it must be filed under.
_KINDS = {
    "valid": None,
    "dup": "duplicate",
    "unknown_type": "unknown_event_type",
    "bad_ts": "bad_timestamp",
    "neg_qty": "negative_quantity",
    "no_item": "missing_item_id",
    "short": "malformed_row",
    "bad_utf8": "invalid_utf8",
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=60),
    block=st.sampled_from([64, 256, 1 << 20]),
    seed=st.integers(0, 1000),
)
def test_row_accounting_invariant_holds_for_any_mix(
    tmp_path: Path, kinds: list[str], block: int, seed: int
) -> None:
    rnd = random.Random(seed)
    lines: list[bytes] = []
    expected: dict[str, int] = {}
    emitted: list[bytes] = []
    valid = 0
    for i, kind in enumerate(kinds):
        ts = f"2024-03-01T{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:00Z"
        row = f"id{i},view,u{rnd.randrange(5)},,i{rnd.randrange(9)},{ts},1.0,1"
        if kind == "dup":
            if not emitted:
                kind = "valid"
            else:
                row = rnd.choice(emitted).decode()
        elif kind == "unknown_type":
            row = row.replace(",view,", ",fly,")
        elif kind == "bad_ts":
            row = row.replace(ts, "31/02/2024 25:61")
        elif kind == "neg_qty":
            row = row[: -len(",1")] + ",-1"
        elif kind == "no_item":
            row = row.replace(f",{row.split(',')[4]},", ",,")
        elif kind == "short":
            row = ",".join(row.split(",")[:4])
        data = row.encode()
        if kind == "bad_utf8":
            data = data.replace(b",u", b",\xc3\x28u", 1)
        reason = _KINDS[kind]
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
        if kind == "valid":
            emitted.append(data)
            valid += 1
        lines.append(data)
    path = tmp_path / f"p{seed}-{len(kinds)}-{block}.csv"
    path.write_bytes(HEADER.encode() + b"\n".join(lines) + b"\n")
    s = ingest_file(path, tmp_path / f"out-{seed}-{len(kinds)}-{block}", block_bytes=block, force=True)
    assert s.rows_read == len(kinds)
    assert s.rows_valid + s.rows_quarantined + s.duplicates == s.rows_read
    dups = expected.pop("duplicate", 0)
    assert s.duplicates == dups
    assert s.reasons == expected
    assert s.rows_valid == valid


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(0, 300), max_size=80), min_size=1, max_size=25),
    max_run=st.sampled_from([16, 1 << 21]),
)
def test_dedup_matches_a_python_set(batches: list[list[int]], max_run: int) -> None:
    import pyarrow as pa

    from shelfwise.ingest.pipeline import SeenIds

    seen_ids = SeenIds()
    seen_ids.MAX_RUN = max_run
    oracle: set[str] = set()
    for batch in batches:
        ids = [f"id-{v}" for v in batch]
        expected = []
        for i in ids:
            expected.append(i not in oracle)
            oracle.add(i)
        assert seen_ids.first_seen(pa.array(ids, pa.string())).tolist() == expected
