"""Served-list lines (serving's impression log lines) in the ingest: expanded, or quarantined whole."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.compute as pc

from shelfwise.ingest import ingest_file, read_events
from shelfwise.ingest.readers import read_jsonl_chunks
from shelfwise.served_lists import Served, impression_rows, served_list_line

T0 = 1_709_287_200.0  # 2024-03-01T10:00:00Z


def _served(n: int, k: int = 5) -> list[Served]:
    return [
        (
            f"rec{i:04d}",
            "challenger" if i % 2 else "champion",
            f"v{i % 3}",
            "user_recommendations",
            k,
            T0 + 61.25 * i,
            [f"sku-{(i * 7 + j) % 50:05d}" for j in range(k)],
            [1.0 / (j + 1.37) + i * 1e-7 for j in range(k)],
        )
        for i in range(n)
    ]


def _previous_format(served: list[Served]) -> str:
    """The row-per-impression alternative: one native JSON row per impression in raw/events/."""
    return "".join(json.dumps(row) + "\n" for s in served for row in impression_rows(s))


def test_served_list_lines_read_as_exactly_the_impression_rows(tmp_path: Path) -> None:
    served = _served(40)
    (tmp_path / "rows.jsonl").write_text(_previous_format(served))
    # Firehose's delimiter after Lambda's own newline leaves blank lines between the messages.
    (tmp_path / "lists.jsonl").write_text("\n".join(served_list_line(s) for s in served))
    rows = [c.batch.to_pylist() for c in read_jsonl_chunks(tmp_path / "rows.jsonl")]
    lists = list(read_jsonl_chunks(tmp_path / "lists.jsonl"))
    assert [c.batch.to_pylist() for c in lists] == rows
    assert lists[0].lines.tolist()[:6] == [1, 1, 1, 1, 1, 2]  # each row keeps its list's line


def test_served_lists_curate_like_the_rows_they_replace(tmp_path: Path) -> None:
    served = _served(25)
    a = tmp_path / "rows.jsonl"
    b = tmp_path / "lists.jsonl"
    a.write_text(_previous_format(served))
    b.write_text("".join(served_list_line(s) + "\n" for s in served))
    sa = ingest_file(a, tmp_path / "out-a")
    sb = ingest_file(b, tmp_path / "out-b")
    assert (sb.rows_read, sb.rows_valid, sb.rows_quarantined, sb.duplicates) == (125, 125, 0, 0)
    assert (sa.rows_valid, sa.format) == (sb.rows_valid, sb.format)
    drop = ["source_key", "source_line"]
    ta = read_events(tmp_path / "out-a" / "curated" / "events").drop_columns(drop).sort_by("event_id")
    tb = read_events(tmp_path / "out-b" / "curated" / "events").drop_columns(drop).sort_by("event_id")
    assert ta.equals(tb)
    assert pc.all(pc.equal(tb["session_id"], tb["recommendation_id"])).as_py()
    assert tb["user_id"].null_count == len(tb)  # no personal data


def test_broken_served_lists_are_quarantined_whole_and_the_file_goes_on(tmp_path: Path) -> None:
    good, short, long_, text_items, bad_time = (json.loads(served_list_line(s)) for s in _served(5, k=3))
    short["scores"] = short["scores"][:2]
    long_["items"], long_["scores"] = ["x"] * 501, [0.5] * 501
    text_items["items"] = "sku-1,sku-2,sku-3"
    bad_time["timestamp"] = "yesterday"
    click = {
        "event_type": "click",
        "session_id": "s1",
        "item_id": "sku-00001",
        "timestamp": "2024-03-01T10:05:00Z",
        "recommendation_id": good["recommendation_id"],
        "position": 0,
    }
    lines = [json.dumps(d) for d in (good, short, long_, text_items, bad_time, click)]
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(lines) + "\n")
    s = ingest_file(f, tmp_path / "out")
    # 3 impressions + the click; 3 broken lists (one row each); the bad timestamp fails per row.
    assert (s.rows_read, s.rows_valid, s.rows_quarantined, s.duplicates) == (10, 4, 6, 0)
    assert s.reasons == {"malformed_served_list": 3, "bad_timestamp": 3}
    assert s.quarantine is not None
    with gzip.open(s.quarantine, "rt", encoding="utf-8") as q:
        bad = [json.loads(line) for line in q]
    whole = [b for b in bad if b["reason"] == "malformed_served_list"]
    assert [b["line"] for b in whole] == [2, 3, 4]
    assert [b["raw"] for b in whole] == lines[1:4]  # the line as it came, nothing lost
    assert {b["line"] for b in bad if b["reason"] == "bad_timestamp"} == {5}
