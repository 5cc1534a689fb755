"""The catalogue feed: validation with reasons, hostile files, snapshots (latest per item, history kept)."""

from __future__ import annotations

import gzip
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from shelfwise.bundle import _load_npz as load_npz
from shelfwise.bundle import text_list
from shelfwise.errors import InputError
from shelfwise.ingest import ingest_file, ingest_object
from shelfwise.ingest.catalogue import LATEST_KEY, SERVING_KEY, DirStore, ingest_catalogue

UPLOADED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HEADER = "item_id,title,category,price,in_stock,brand,updated_at"


def _ingest(root: Path, text: str | bytes, name: str = "f1") -> Any:
    data = text.encode() if isinstance(text, str) else text
    return ingest_catalogue(
        data, DirStore(root), source_key=f"raw/catalogue/{name}", name=name, uploaded=UPLOADED
    )


def _latest(root: Path) -> list[dict[str, Any]]:
    pointer = json.loads((root / LATEST_KEY).read_text())
    return pq.read_table(root / pointer["key"]).to_pylist()


def _quarantine(root: Path, name: str) -> list[dict[str, Any]]:
    body = gzip.decompress((root / f"quarantine/catalogue/{name}.jsonl.gz").read_bytes())
    return [json.loads(line) for line in body.decode().splitlines()]


def test_hostile_csv_every_bad_row_has_its_reason_and_nothing_is_lost(tmp_path: Path) -> None:
    title = "x" * (10 * 1024 * 1024)  # a 10 MB title
    text = "\n".join(
        [
            HEADER + ",colour",
            "a,Red mug,kitchen,4.5,true,Acme,2026-11-30T10:00:00Z,red",
            "a,Red mug v2,kitchen,5.0,false,Acme,2026-11-30T11:00:00Z,red",  # newer row of a
            "a,Red mug old,kitchen,3.0,true,Acme,2026-11-29T11:00:00Z,red",  # older: superseded
            "b,Blue mug,kitchen,-1,true,Acme,,blue",  # negative price
            "c,Huge,kitchen,1,true,Acme,,",
            f"d,{title},kitchen,1,true,Acme,,",  # oversize
            ",No id,kitchen,1,true,,,",
            "e,Lamp,,1,true,,,",  # no category
            "f,Chair,home,cheap,true,,,",  # price not a number
            "g,Desk,home,100,maybe,,,",  # in_stock not a boolean
            "h,Bed,home,300,1,,yesterday,",  # bad time
            "i,Sofa,home,400,0,,2030-01-01T00:00:00Z,",  # far future
            "j,too,few",
        ]
    )
    got = _ingest(tmp_path, text)
    assert got.rows_read == 13 and got.rows_read == got.rows_valid + got.rows_quarantined + got.duplicates
    assert (got.rows_valid, got.duplicates) == (2, 2)
    assert got.reasons == {
        "negative_price": 1,
        "oversize_field": 1,
        "missing_item_id": 1,
        "missing_category": 1,
        "wrong_type": 2,
        "bad_timestamp": 1,
        "timestamp_out_of_range": 1,
        "malformed_row": 1,
    }
    q = _quarantine(tmp_path, "f1")
    oversize = next(r for r in q if r["reason"] == "oversize_field")
    assert (
        oversize["line"] == 7
        and oversize["raw_truncated_from"] > 10_000_000
        and len(oversize["raw"]) == 65536
    )
    rows = {r["item_id"]: r for r in _latest(tmp_path)}
    assert set(rows) == {"a", "c"}
    assert (rows["a"]["title"], rows["a"]["price"], rows["a"]["in_stock"]) == ("Red mug v2", 5.0, False)
    assert json.loads(rows["a"]["attributes"]) == {"colour": "red"}  # the unknown column is kept
    assert rows["c"]["updated_at"] == UPLOADED  # no updated_at: the upload time


def test_snapshots_keep_the_latest_state_per_item_and_every_earlier_snapshot(tmp_path: Path) -> None:
    _ingest(
        tmp_path,
        f"{HEADER}\na,Mug,kitchen,4,true,,2026-11-30T10:00:00Z\nb,Pan,kitchen,9,true,,2026-11-30T10:00:00Z\n",
    )
    # the second file: b sells out, c arrives, a's row is older than what we have (ignored)
    jsonl = "\n".join(
        json.dumps(d)
        for d in [
            {"item_id": "b", "title": "Pan", "category": "kitchen", "price": 9, "in_stock": False,
             "updated_at": "2026-12-01T09:00:00Z"},
            {"item_id": "c", "title": "Pot", "category": "kitchen", "price": 12.5, "in_stock": True,
             "attributes": {"size": "L"}},
            {"item_id": "a", "title": "Mug (old)", "category": "kitchen", "price": 3, "in_stock": True,
             "updated_at": "2026-11-01T00:00:00Z"},
            ["not", "an", "object"],
        ]
    )  # fmt: skip
    got = _ingest(tmp_path, jsonl, "f2")
    assert got.reasons == {"malformed_row": 1}
    latest = {r["item_id"]: r for r in _latest(tmp_path)}
    assert latest["a"]["title"] == "Mug" and latest["b"]["in_stock"] is False and latest["c"]["price"] == 12.5
    snapshots = sorted((tmp_path / "curated/catalogue/snapshots").rglob("*.parquet"))
    assert len(snapshots) == 2  # history kept
    assert {r["item_id"] for r in pq.read_table(snapshots[0]).to_pylist()} == {"a", "b"}
    stock = load_npz(tmp_path / SERVING_KEY)
    assert text_list(stock["item_id"]) == ["a", "b", "c"]
    assert stock["in_stock"].tolist() == [True, False, True] and stock["active"].all()


def test_parquet_and_gzip_files_and_empty_ones(tmp_path: Path) -> None:
    table = pa.table(
        {
            "item_id": ["p1", "p1", "p2"],
            "title": ["T", "T", "U"],
            "category": ["c", "c", "c"],
            "price": [1.0, 1.0, float("nan")],
            "in_stock": [True, True, False],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    got = _ingest(tmp_path, gzip.compress(buf.getvalue()))
    assert (got.rows_valid, got.duplicates, got.reasons) == (1, 1, {"wrong_type": 1})  # NaN price
    assert _ingest(tmp_path, b"", "empty").rows_read == 0
    with pytest.raises(InputError, match="gzip"):
        _ingest(tmp_path, gzip.compress(b"item_id\n")[:10], "trunc")
    with pytest.raises(InputError, match="UTF-8"):
        _ingest(tmp_path, b"item_id,title\n\xff\xfe,x\n", "latin")


def test_raw_catalogue_objects_take_the_catalogue_path_and_are_idempotent(tmp_path: Path) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        for b in ("raw", "cur", "quar"):
            s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(
            Bucket="raw",
            Key="raw/catalogue/2026-12-01.csv",
            Body=f"{HEADER}\na,Mug,k,-2,true,,\nb,Pan,k,3,yes,,\nc,Jug,k,5,no,,1998-03-01T10:00:00Z\n",
        )
        kw = {"curated_bucket": "cur", "quarantine_bucket": "quar"}
        first = ingest_object(s3, "raw", "raw/catalogue/2026-12-01.csv", **kw)
        assert first.format == "catalogue" and (first.rows_valid, first.rows_quarantined) == (2, 1)
        again = ingest_object(s3, "raw", "raw/catalogue/2026-12-01.csv", **kw)
        assert again.skipped
        stock = s3.get_object(Bucket="cur", Key=SERVING_KEY)["Body"].read()
        (tmp_path / "stock.npz").write_bytes(stock)
        assert text_list(load_npz(tmp_path / "stock.npz")["item_id"]) == ["b", "c"]  # a 1998 row too
        q = s3.list_objects_v2(Bucket="quar", Prefix="quarantine/catalogue/")["Contents"]
        assert len(q) == 1


def test_the_local_cli_path(tmp_path: Path) -> None:
    src = tmp_path / "cat.csv"
    src.write_text(f"{HEADER}\na,Mug,k,2,true,,\n")
    out = tmp_path / "out"
    summary = ingest_file(src, out, "catalogue")
    assert summary.format == "catalogue" and summary.rows_valid == 1
    assert ingest_file(src, out, "catalogue").skipped
    assert np.asarray(load_npz(out / SERVING_KEY)["in_stock"]).tolist() == [True]


def test_the_simulator_exports_its_catalogue_and_stock_changes_through_the_same_path(tmp_path: Path) -> None:
    from shelfwise.simulator.catalogue_feed import catalogue_csv
    from shelfwise.simulator.generate import simulate_to_files
    from shelfwise.simulator.params import ShopParams
    from shelfwise.simulator.shop import ShopModel

    params = ShopParams(n_users=50, n_items=60, n_days=1)
    simulate_to_files(params, seed=3, out_dir=tmp_path / "shop")
    out = tmp_path / "out"
    full = ingest_file(tmp_path / "shop" / "catalogue" / "catalogue.csv", out, "catalogue")
    assert (full.rows_valid, full.rows_quarantined) == (60, 0)
    catalogue = ShopModel(params, 3).catalogue
    change = tmp_path / "change.csv"
    change.write_bytes(
        catalogue_csv(catalogue, datetime(2026, 12, 1, tzinfo=UTC), items=[4], in_stock=[False])
    )
    assert ingest_file(change, out, "catalogue").rows_valid == 1
    rows = {r["item_id"]: r for r in _latest(out)}
    assert len(rows) == 60 and rows["5"]["in_stock"] is False and rows["5"]["title"] == catalogue.title[4]


# ------------------------------------------------------------------ updated_at: any period, only the impossible refused

T1998 = "1998-03-01T10:00:00Z"
S1998 = int(datetime(1998, 3, 1, 10, tzinfo=UTC).timestamp())  # the same instant, epoch seconds
MS_2000 = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)


def _catalogue_csv(times: dict[str, str]) -> str:
    return "\n".join([HEADER, *(f"{item},T,c,1,true,,{t}" for item, t in times.items())]) + "\n"


def test_a_1998_catalogue_is_read_whole_and_only_impossible_times_refused(tmp_path: Path) -> None:
    got = _ingest(
        tmp_path,
        _catalogue_csv(
            {
                "iso": T1998,
                "secs": str(S1998),
                "millis": str(S1998 * 1000),
                "date": "1998-03-01",
                "late": "2026-12-02T11:59:00Z",  # within a day of the upload: clock skew
                "pre1970": "1969-12-31T23:59:59Z",
                "future": "2026-12-02T12:00:01Z",  # more than a day after the upload
                "ms1972": "5000000000",  # milliseconds of 1970, read as seconds: the year 2128
                "bad": "yesterday",
            }
        ),
    )
    assert (got.rows_valid, got.reasons) == (5, {"bad_timestamp": 1, "timestamp_out_of_range": 3})
    refused = {r["raw"].split(",")[0]: r["reason"] for r in _quarantine(tmp_path, "f1")}
    assert refused == {
        "pre1970": "timestamp_out_of_range",
        "future": "timestamp_out_of_range",
        "ms1972": "timestamp_out_of_range",
        "bad": "bad_timestamp",
    }
    rows = {r["item_id"]: r["updated_at"] for r in _latest(tmp_path)}
    assert rows["iso"] == rows["secs"] == rows["millis"] == datetime(1998, 3, 1, 10, tzinfo=UTC)
    assert rows["date"] == datetime(1998, 3, 1, tzinfo=UTC)


def test_epoch_units_in_json_lines_and_typed_parquet_are_read_per_value(tmp_path: Path) -> None:
    """JSON numbers and text mixed in one column; Parquet's own timestamps, naive meaning UTC."""
    base = {"title": "T", "category": "c", "price": 1, "in_stock": True}
    stamps = {"s": S1998, "ms": S1998 * 1000, "text": str(S1998), "neg": -86_400, "flag": True}
    jsonl = "\n".join(json.dumps({"item_id": k, **base, "updated_at": v}) for k, v in stamps.items())
    got = _ingest(tmp_path / "j", jsonl)
    assert (got.rows_valid, got.reasons) == (3, {"bad_timestamp": 1, "timestamp_out_of_range": 1})
    assert {r["updated_at"] for r in _latest(tmp_path / "j")} == {datetime(1998, 3, 1, 10, tzinfo=UTC)}
    table = pa.table(
        {
            "item_id": ["a", "b"],
            "title": ["T", "T"],
            "category": ["c", "c"],
            "price": [1.0, 1.0],
            "in_stock": [True, True],
            "updated_at": [datetime(1998, 3, 1, 10), datetime(1969, 7, 20, 20, 17)],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    got = _ingest(tmp_path / "p", buf.getvalue())
    assert (got.rows_valid, got.reasons) == (1, {"timestamp_out_of_range": 1})
    assert _latest(tmp_path / "p")[0]["updated_at"] == datetime(1998, 3, 1, 10, tzinfo=UTC)


def test_the_catalogue_reads_updated_at_as_the_events_read_a_timestamp(tmp_path: Path) -> None:
    from shelfwise.ingest import read_events

    times = ["1998-03-01 10:00:00", str(S1998), str(S1998 * 1000 + 7), "-5", "5000000000", "03/01/1998 10:00"]
    times += ["2026-12-02T11:59:59.999Z", "2026-12-02T12:00:00.001Z", "1999-12-31T23:00:00-02:00", "soon"]
    events = tmp_path / "events.csv"
    events.write_text(
        "event_id,event_type,user_id,item_id,timestamp\n"
        + "".join(f"e{i},view,u,i{i},{t}\n" for i, t in enumerate(times))
    )
    curated = read_events(events, reference_time=UPLOADED)
    as_events = dict(zip(curated["item_id"].to_pylist(), curated["timestamp"].to_pylist(), strict=True))
    got = _ingest(tmp_path, _catalogue_csv({f"i{i}": t for i, t in enumerate(times)}))
    as_catalogue = {r["item_id"]: r["updated_at"] for r in _latest(tmp_path)}
    assert as_catalogue == as_events and len(as_events) == 6
    os.utime(events, (UPLOADED.timestamp(), UPLOADED.timestamp()))  # the events' upload time
    # refused alike: "-5" and "soon" unreadable; ms of 1970 (read as seconds: 2128) and a day and
    # a millisecond after the upload out of range
    refused = {"bad_timestamp": 2, "timestamp_out_of_range": 2}
    assert got.reasons == ingest_file(events, tmp_path / "ev").reasons == refused


def test_the_floor_is_configurable_in_the_library_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shelfwise.cli import main

    text = _catalogue_csv({"old": T1998, "new": "2005-06-01T00:00:00Z"})
    got = ingest_catalogue(
        text.encode(),
        DirStore(tmp_path / "lib"),
        source_key="k",
        name="n",
        uploaded=UPLOADED,
        min_ts_ms=MS_2000,
    )
    assert (got.rows_valid, got.reasons) == (1, {"timestamp_out_of_range": 1})
    assert [r["item_id"] for r in _latest(tmp_path / "lib")] == ["new"]
    src = tmp_path / "cat.csv"
    src.write_text(text)
    out = str(tmp_path / "cli")
    assert main(["ingest", str(src), "--format", "catalogue", "--out", out, "--min-time", "2000-01-01"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["rows_valid"], summary["reasons"]) == (1, {"timestamp_out_of_range": 1})
    assert main(["ingest", str(src), "--format", "catalogue", "--out", out, "--min-time", "last year"]) == 2
    assert "--min-time" in capsys.readouterr().err
