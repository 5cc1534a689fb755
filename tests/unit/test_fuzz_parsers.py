"""Hostile input to every parser: hypothesis-generated rows for each source format, JSON Lines,
the Event model, plus oversized and malicious values (docs/hardening.md).

The properties: a parser never crashes (only the ingest's typed ``InputError`` subclasses are
allowed, for a file it refuses as a whole), and every row read is accounted for exactly once
(valid + quarantined + duplicates = read). Example counts are recorded in docs/hardening.md.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shelfwise.events import Event
from shelfwise.ingest import ingest_file

# Header of each format and a generator of plausible-or-garbage values per column.
HEADERS = {
    "native": "event_id,event_type,user_id,session_id,item_id,timestamp,price,quantity,query",
    "retailrocket": "timestamp,visitorid,event,itemid,transactionid",
    "taobao": "user,item,category,behavior,ts",
    "online_retail": "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country",
    "movielens": "userId,movieId,rating,timestamp",
}

# No quote, CR or LF: one generated line is exactly one CSV row, so rows_read is known.
_CELL_ALPHABET = st.characters(blacklist_characters='"\r\n', blacklist_categories=("Cs",))
_GARBAGE = st.text(_CELL_ALPHABET, max_size=12)
_CELLS = st.one_of(
    _GARBAGE,
    st.sampled_from(
        [
            "",
            "view",
            "purchase",
            "addtocart",
            "pv",
            "buy",
            "cart",
            "fav",
            "2024-03-01T10:00:00Z",
            "1709287200",
            "1709287200000",
            "2010-12-01 08:26:00",
            "-1",
            "0",
            "3.5",
            "1e308",
            "NaN",
            "inf",
            "=HYPERLINK(\u2018x\u2019)",
            "../../etc/passwd",
            "u\u200b1",
            "\u202eevil",
            "\U0001f600",
            "\x00",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def _rows(n_cols: int) -> st.SearchStrategy[list[str]]:
    row = st.lists(_CELLS, min_size=max(1, n_cols - 2), max_size=n_cols + 2).map(
        lambda cells: ",".join(cells)
    )
    # An empty line is skipped by CSV readers (not a row), so no row may be blank.
    return st.lists(row.filter(lambda r: r.strip(",") != "" and r.strip() != ""), min_size=1, max_size=25)


_RUN = 0


def _fresh(tmp_path: Path, name: str) -> tuple[Path, Path]:
    global _RUN
    _RUN += 1
    return tmp_path / f"{_RUN}-{name}", tmp_path / f"out-{_RUN}"


def _check(summary: object, expected_rows: int | None) -> None:
    s = summary
    assert s.rows_valid + s.rows_quarantined + s.duplicates == s.rows_read  # type: ignore[attr-defined]
    if expected_rows is not None:
        assert s.rows_read == expected_rows  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", sorted(HEADERS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_csv_adapter_accounts_for_every_row_of_garbage(
    tmp_path: Path, fmt: str, data: st.DataObject
) -> None:
    header = HEADERS[fmt]
    rows = data.draw(_rows(header.count(",") + 1), label="rows")
    src, out = _fresh(tmp_path, f"{fmt}.csv")
    src.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8", errors="surrogatepass")
    # The header is right, so the file is never refused as a whole: each row is judged alone.
    summary = ingest_file(src, out, fmt=fmt, force=True)
    _check(summary, len(rows))


_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20)),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
_EVENT_KEYS = st.sampled_from(
    [
        "event_type",
        "user_id",
        "session_id",
        "item_id",
        "timestamp",
        "price",
        "quantity",
        "query",
        "position",
        "x",
    ]
)
_JSON_LINES = st.one_of(
    st.dictionaries(_EVENT_KEYS, _JSON_VALUES, max_size=9).map(json.dumps),
    st.fixed_dictionaries(
        {
            "event_type": st.sampled_from(["view", "click", "purchase", "search", "bogus"]),
            "session_id": st.text(max_size=6),
            "item_id": st.one_of(st.none(), st.text(max_size=6)),
            "timestamp": st.sampled_from(["2024-03-01T10:00:00Z", "yesterday", 1709287200, None]),
        }
    ).map(json.dumps),
    _JSON_VALUES.map(json.dumps),  # valid JSON that is not an object
    st.text(_CELL_ALPHABET, min_size=1, max_size=30),  # not JSON at all
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_JSON_LINES.filter(lambda s: s.strip() != ""), min_size=1, max_size=25))
def test_json_lines_accounts_for_every_line(tmp_path: Path, lines: list[str]) -> None:
    # The first line must look like the API's JSON Lines so format detection picks it.
    first = json.dumps(
        {"event_type": "view", "session_id": "s", "item_id": "i", "timestamp": "2024-03-01T10:00:00Z"}
    )
    src, out = _fresh(tmp_path, "events.jsonl")
    src.write_text("\n".join([first, *lines]) + "\n", encoding="utf-8", errors="surrogatepass")
    summary = ingest_file(src, out, fmt="auto", force=True)
    _check(summary, len(lines) + 1)


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(_EVENT_KEYS, _JSON_VALUES, max_size=10))
def test_event_model_validates_or_says_why(payload: dict[str, object]) -> None:
    try:
        event = Event.model_validate(payload)
    except ValidationError as exc:
        assert exc.error_count() >= 1
        return
    # Whatever passes validation round-trips through JSON unchanged.
    assert Event.model_validate_json(event.model_dump_json()) == event


def test_deeply_nested_json_line_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    deep_object = '{"a":' * 50_000 + "1" + "}" * 50_000
    good = '{"event_type":"view","session_id":"s","item_id":"i","timestamp":"2024-03-01T10:00:00Z"}'
    src = tmp_path / "deep.jsonl"
    src.write_text("\n".join([good, nested, deep_object, good.replace('"i"', '"j"')]) + "\n")
    s = ingest_file(src, tmp_path / "out")
    _check(s, 4)
    assert s.rows_valid == 2 and s.rows_quarantined == 2
    with gzip.open(s.quarantine, "rt") as f:  # type: ignore[arg-type]
        bad = [json.loads(line) for line in f]
    assert sorted(b["line"] for b in bad) == [2, 3]
    assert all(len(b["raw"]) <= 70_000 for b in bad)  # raw text is capped in the quarantine


_BIG_LINE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from shelfwise.errors import InputError
    from shelfwise.ingest import ingest_file
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        s = ingest_file(sys.argv[1], sys.argv[2])
        out = {"rows_read": s.rows_read, "valid": s.rows_valid, "quarantined": s.rows_quarantined,
               "reasons": s.reasons}
    except InputError as exc:
        out = {"error": type(exc).__name__, "message": str(exc)[:200]}
    out["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_a_100_mb_object_of_one_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """Generated by streaming (never held in memory here); ingested in a fresh interpreter so its
    peak RSS growth is measurable. The reader must not buffer the whole line."""
    src = tmp_path / "one-line.csv"
    chunk = b"x" * (1 << 20)
    with open(src, "wb") as f:
        f.write(b"event_type,session_id,item_id,timestamp,query\n")
        f.write(b"search,s1,,2024-03-01T10:00:00Z,")
        for _ in range(100):
            f.write(chunk)
        # no newline: the line ends with the object
    proc = subprocess.run(
        [sys.executable, "-c", _BIG_LINE_SCRIPT, str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("100 MB one-line object:", result)
    # Over the 64 MiB line limit: refused as a whole (nothing written), like a truncated gzip.
    assert result.get("error") == "CorruptInputError", result
    assert result["rss_growth_mb"] < 400, result


# Found by the fuzzing above (fixed in shelfwise.ingest.formats / validate): numbers spelled
# right but beyond int64 / float64's exact range crashed the adapters with ArrowInvalid.
@pytest.mark.parametrize(
    ("fmt", "row"),
    [
        ("online_retail", ",,,,,,1E20,"),  # a customer id beyond int64
        ("taobao", ",,,,9223372036854775808"),  # 2**63 as an epoch
        ("taobao", ",,,,9007199254740993"),  # 2**53 + 1: not exact in float64
        ("taobao", "u,i,99999999999999999999999,pv,1709287200"),
        ("movielens", "1,2,3.5,-9223372036854775809"),
    ],
)
def test_out_of_range_numbers_are_bad_rows_not_crashes(tmp_path: Path, fmt: str, row: str) -> None:
    src = tmp_path / "big.csv"
    src.write_text(f"{HEADERS[fmt]}\n{row}\n")
    s = ingest_file(src, tmp_path / "out", fmt=fmt)
    _check(s, 1)


# The API's bounds (shelfwise.events) hold for files that did not come through the API: what the
# API refuses, the ingest quarantines, so a 202 means the event is used and a file is held to the
# same rules.
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '{"event_type":"purchase","user_id":"u","item_id":"i","timestamp":"2024-03-01T10:00:00Z","price":1e308}',
            "number_out_of_range",
        ),
        (
            '{"event_type":"purchase","user_id":"u","item_id":"i","timestamp":"2024-03-01T10:00:00Z","quantity":2000000}',
            "number_out_of_range",
        ),
        (
            '{"event_type":"view","user_id":"u","item_id":["a","b"],"timestamp":"2024-03-01T10:00:00Z"}',
            "wrong_type",
        ),
        (
            '{"event_type":"view","user_id":{"id":"u"},"item_id":"i","timestamp":"2024-03-01T10:00:00Z"}',
            "wrong_type",
        ),
        (
            '{"event_type":"view","user_id":"u","item_id":"i","timestamp":"2024-03-01T10:00:00Z","properties":{"x":NaN}}',
            "wrong_type",
        ),
        (
            '{"event_type":"view","user_id":"u","item_id":"i","timestamp":"1969-12-31T23:59:59Z"}',
            "timestamp_out_of_range",
        ),
        (
            '{"event_type":"view","user_id":"u","item_id":"i","timestamp":"2024-03-01T10:00:00Z","properties":{"x":"'
            + "y" * 17000
            + '"}}',
            "oversize_field",
        ),
    ],
)
def test_ingest_quarantines_what_the_api_refuses(tmp_path: Path, line: str, reason: str) -> None:
    from shelfwise.serving.collect import EventIn

    good = '{"event_type":"view","session_id":"s","item_id":"i","timestamp":"2024-03-01T10:00:00Z"}'
    src = tmp_path / "bounds.jsonl"
    src.write_text(good + "\n" + line + "\n")
    s = ingest_file(src, tmp_path / "out")
    _check(s, 2)
    assert s.rows_quarantined == 1 and s.reasons == {reason: 1}, s.reasons
    # The API refuses the same event (422), whatever the reason's name there.
    with pytest.raises((ValidationError, ValueError)):
        EventIn.model_validate(json.loads(line))
