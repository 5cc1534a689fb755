"""Format detection and adapters: each source format maps to the native columns as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.ingest import UnknownFormatError, ingest_file, read_events
from shelfwise.ingest.formats import json_object
from shelfwise.ingest.hashing import Pseudonymiser, hash64
from shelfwise.ingest.schema import CURATED_SCHEMA


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_retailrocket_maps_events_and_keeps_the_transaction(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "events.csv",
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433221999827,111016,addtocart,11,\n"
        "1433222999827,111016,transaction,11,4000\n",
    )
    t = read_events(f)
    assert t.schema == CURATED_SCHEMA
    assert t.column("event_type").to_pylist() == ["view", "add_to_cart", "purchase"]
    assert t.column("user_id").to_pylist() == ["257597", "111016", "111016"]
    assert t.column("timestamp")[0].value == 1433221332117
    assert [json.loads(p) if p else None for p in t.column("properties").to_pylist()] == [
        None,
        None,
        {"transaction_id": "4000"},
    ]
    assert set(t.column("source_format").to_pylist()) == {"retailrocket"}


def test_taobao_without_header_is_recognised(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n1,2576651,149192,fav,1511572885\n"
    )
    t = read_events(f)
    assert t.column("event_type").to_pylist() == ["view", "add_to_wishlist"]
    assert t.column("category").to_pylist() == ["2520377", "149192"]
    assert t.column("timestamp")[0].value == 1511544070 * 1000
    assert t.column("source_line").to_pylist() == [1, 2]


def test_movielens_ratings_become_rating_events(tmp_path: Path) -> None:
    f = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    row = read_events(f).to_pylist()[0]
    assert row["event_type"] == "rating"
    assert row["weight"] == 3.0
    assert json.loads(row["properties"]) == {"rating": 2.5}


def test_online_retail_cancellations_are_returns_and_invoices_are_sessions(tmp_path: Path) -> None:
    table = pa.table(
        {
            "Invoice": ["489434", "C489449", "489450"],
            "StockCode": ["85048", "22087", "21232"],
            "Description": ['RECORD FRAME 7" SINGLE', "PAPER BUNTING", None],
            "Quantity": [12, -12, 3],
            "InvoiceDate": ["2009-12-01 07:45:00", "2009-12-01 10:33:00", "2009-12-01 10:40:00"],
            "Price": [6.95, 2.95, 1.25],
            "Customer ID": [13085.0, 16321.0, None],
            "Country": ["United Kingdom", "Australia", "France"],
        }
    )
    pq.write_table(table, tmp_path / "retail.parquet")
    t = read_events(tmp_path / "retail.parquet")
    assert t.column("event_type").to_pylist() == ["purchase", "return", "purchase"]
    assert t.column("quantity").to_pylist() == [12.0, 12.0, 3.0]
    assert t.column("user_id").to_pylist() == ["13085", "16321", None]
    assert t.column("session_id").to_pylist() == ["invoice:489434", "invoice:C489449", "invoice:489450"]
    assert json.loads(t.column("properties")[0].as_py()) == {
        "description": 'RECORD FRAME 7" SINGLE',
        "country": "United Kingdom",
    }


def test_real_online_retail_log(retail_parquet: Path) -> None:
    t = read_events(retail_parquet)
    rows = pq.ParquetFile(retail_parquet).metadata.num_rows
    assert 0 < t.num_rows <= rows
    counts = dict(zip(*pc.value_counts(t.column("event_type")).flatten(), strict=True))
    counts = {k.as_py(): v.as_py() for k, v in counts.items()}
    assert set(counts) == {"purchase", "return"}
    # Every row whose invoice starts with C is a return.
    sessions = t.column("session_id")
    is_c = pc.starts_with(sessions, "invoice:C")
    assert pc.all(pc.equal(pc.cast(t.column("event_type"), pa.string()), "return").filter(is_c)).as_py()
    assert t.column("event_id").null_count == 0
    assert len(pc.unique(t.column("event_id"))) == t.num_rows


def test_native_semicolon_file_with_bom_and_crlf(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "e.csv",
        b"\xef\xbb\xbfevent_type;user_id;item_id;timestamp\r\nview;u1;i1;2024-01-01T10:00:00Z\r\n",
    )
    row = read_events(f).to_pylist()[0]
    assert (row["event_type"], row["user_id"], row["item_id"]) == ("view", "u1", "i1")


def test_unknown_format_is_an_error_naming_the_columns(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.csv", "foo,bar,baz\n1,2,3\n")
    with pytest.raises(UnknownFormatError, match="'foo', 'bar', 'baz'"):
        read_events(f)


def test_wrong_delimiter_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.csv", "event_type:user_id:item_id:timestamp\nview:u:i:2024-01-01T00:00:00Z\n")
    with pytest.raises(UnknownFormatError):
        read_events(f)


def test_explicit_format_is_checked_against_the_header(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(UnknownFormatError, match="needs columns"):
        ingest_file(f, tmp_path / "out", fmt="retailrocket")


def test_jsonl_from_the_api_keeps_unknown_keys_in_properties(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "api.jsonl",
        '{"event_type":"click","session_id":"s1","item_id":"i","timestamp":"2024-01-01T10:00:00+01:00",'
        '"recommendation_id":"r1","position":2,"utm":"mail","properties":{"k":1}}\n',
    )
    row = read_events(f).to_pylist()[0]
    assert row["position"] == 2
    assert row["timestamp"].hour == 9  # converted to UTC
    assert json.loads(row["properties"]) == {"k": 1, "utm": "mail"}


def test_curated_output_reads_back_unchanged(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "e.csv",
        "event_type,user_id,item_id,timestamp,shelf\nview,u1,i1,2024-01-01T10:00:00Z,top\n",
    )
    ingest_file(f, tmp_path / "out")
    raw = read_events(f)
    curated = read_events(tmp_path / "out" / "curated" / "events")
    assert curated.schema == CURATED_SCHEMA
    assert curated.to_pylist() == raw.to_pylist()
    assert json.loads(curated.column("properties")[0].as_py()) == {"shelf": "top"}


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_text, st.one_of(st.none(), _text)), min_size=1, max_size=5, unique_by=lambda kv: kv[0]
    )
)
def test_json_object_round_trips_any_text(pairs: list[tuple[str, str | None]]) -> None:
    cols = [(k, pa.array([v], pa.string())) for k, v in pairs]
    out = json_object(cols, 1)
    expected = {k: v for k, v in pairs if v is not None}
    value = out[0].as_py() if out is not None else None
    assert (json.loads(value) if value is not None else {}) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=600)), min_size=1, max_size=40))
def test_hash64_is_a_function_of_the_value(values: list[bytes | None]) -> None:
    arr = pa.array(values, pa.binary())
    h = hash64(arr)
    again = hash64(pa.array(list(reversed(values)), pa.binary()))[::-1]
    assert (h == again).all()
    by_value: dict[bytes | None, int] = {}
    for v, x in zip(values, h.tolist(), strict=True):
        assert by_value.setdefault(v, x) == x
    distinct = {v for v in values}
    assert len(set(h.tolist())) == len(distinct)


def test_pseudonyms_are_keyed_and_stable() -> None:
    users = pa.array(["alice", "bob", "alice", None])
    a = Pseudonymiser(b"k1")(users).to_pylist()
    b = Pseudonymiser(b"k2")(users).to_pylist()
    assert a[0] == a[2] != a[1] and a[3] is None
    assert a[0] != b[0] and "alice" not in a[0]


def test_jsonl_with_an_explicit_native_format(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "api.jsonl",
        '{"event_type":"view","user_id":"u","item_id":"i","timestamp":"2024-01-01T00:00:00Z"}\n',
    )
    assert ingest_file(f, tmp_path / "out", fmt="native").rows_valid == 1
    with pytest.raises(UnknownFormatError):
        ingest_file(f, tmp_path / "out2", fmt="movielens")
