"""The documented Athena queries (infra/athena/*.sql) run with DuckDB over the layout the ingest writes.

The `served_lists` view is taken from template.yaml (the Presto view Glue stores), so the SQL a
shop runs in Athena, the Glue definitions and the curated layout cannot drift apart. DuckDB
stands in for Athena with two shims: `json_extract_scalar` (Athena's name for
`json_extract_string`) and the Hive partition column read as a string, as Glue declares it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from moto import mock_aws

from shelfwise.ingest import ingest_file
from shelfwise.served_lists import served_list_line, user_hash
from shelfwise.served_query import served_to
from shelfwise_local.runtime.template import load_template

REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "infra" / "athena"
DAY1 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def view_sql(name: str) -> str:
    """The SQL of a Glue view in template.yaml (the ``originalSql`` inside its base64'd JSON)."""
    resources = load_template(REPO / "template.yaml")["Resources"]
    table = next(
        r["Properties"]["TableInput"]
        for r in resources.values()
        if r["Type"] == "AWS::Glue::Table" and r["Properties"]["TableInput"]["Name"] == name
    )
    encoded = table["ViewOriginalText"]["Fn::Join"][1][1]["Fn::Base64"]["Fn::Sub"][0]
    return str(json.loads(encoded)["originalSql"])


def connect(root: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with the Glue tables of template.yaml over a bucket-shaped directory."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE MACRO json_extract_scalar(j, p) AS json_extract_string(j, p)")
    events = root / "curated" / "events" / "*" / "*.parquet"
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet('{events}', hive_partitioning = true, "
        "hive_types = {'event_date': VARCHAR})"
    )
    con.execute(f"CREATE VIEW served_lists AS {view_sql('served_lists')}")
    return con


def query(con: duckdb.DuckDBPyConnection, name: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute((QUERIES / f"{name}.sql").read_text(), params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of a tiny shop: served lists (with users), views, clicks, carts, purchases."""
    raw = tmp_path_factory.mktemp("raw")
    out = tmp_path_factory.mktemp("curated")
    lists = [
        # (rec id, variant, version, user, time, items)
        ("r1", "champion", "v1", "alice", DAY1, ["a", "b", "c"]),
        ("r2", "challenger", "v2", "bob", DAY1 + timedelta(minutes=5), ["c", "d"]),
        ("r3", "champion", "v1", "alice", DAY2, ["d", "a"]),
        ("r4", "fallback", "popularity@v1", "carol", DAY2 + timedelta(minutes=1), ["a"]),
        ("r5", "challenger", "v2", "alice", DAY2 + timedelta(hours=3), ["e"]),
    ]
    (raw / "lists.jsonl").write_text(
        "".join(
            served_list_line(
                (
                    rid,
                    var,
                    ver,
                    "user_recommendations",
                    3,
                    t.timestamp(),
                    items,
                    [1.0 / (i + 1) for i in range(len(items))],
                    user_hash(user),
                )
            )
            for rid, var, ver, user, t, items in lists
        )
    )
    rows = ["event_type,user_id,item_id,timestamp,recommendation_id,price"]
    t = DAY1 + timedelta(minutes=1)
    for user in ("alice", "bob", "carol", "dave"):
        rows.append(f"view,{user},a,{_stamp(t)},,")
    rows += [
        f"click,alice,a,{_stamp(t)},r1,",
        f"add_to_cart,alice,a,{_stamp(t)},,",
        f"purchase,alice,a,{_stamp(t)},,9.5",
        f"add_to_cart,bob,c,{_stamp(t)},,",
        f"view,alice,d,{_stamp(DAY2)},,",
        f"view,erin,d,{_stamp(DAY2)},,",
        f"click,carol,a,{_stamp(DAY2 + timedelta(minutes=2))},r4,",
        f"click,carol,a,{_stamp(DAY2 + timedelta(minutes=3))},r4,",  # a second click on one list
    ]
    (raw / "events.csv").write_text("\n".join(rows) + "\n")
    for f in ("lists.jsonl", "events.csv"):
        summary = ingest_file(raw / f, out)
        assert summary.rows_quarantined == 0, summary.reasons
    return out


def test_funnel_per_day(curated: Path) -> None:
    got = query(connect(curated), "funnel_per_day", ["2026-11-27", "2026-11-28"])
    assert [r["event_date"] for r in got] == ["2026-11-27", "2026-11-28"]
    d1, d2 = got
    assert (d1["visitors"], d1["views"], d1["clicks"], d1["carts"], d1["purchases"]) == (4, 4, 1, 2, 1)
    assert d1["cart_rate"] == pytest.approx(2 / 4) and d1["purchase_rate"] == pytest.approx(1 / 4)
    assert (d2["visitors"], d2["views"], d2["clicks"], d2["purchases"]) == (3, 2, 2, 0)
    # the partition filter is a filter: one day asked, one day answered
    assert len(query(connect(curated), "funnel_per_day", ["2026-11-28", "2026-11-28"])) == 1


def test_ctr_per_variant(curated: Path) -> None:
    got = query(connect(curated), "ctr_per_variant", ["2026-11-27", "2026-11-28", "2026-11-27", "2026-11-29"])
    by = {r["variant"]: r for r in got}
    assert {v: (r["lists"], r["clicked_lists"]) for v, r in by.items()} == {
        "champion": (2, 1),
        "challenger": (2, 0),
        "fallback": (1, 1),
    }
    assert by["champion"]["ctr"] == pytest.approx(0.5)


def test_what_user_u_was_served_at_t(curated: Path) -> None:
    at = DAY2 + timedelta(hours=1)
    got = query(connect(curated), "served_to_user", [user_hash("alice"), "2026-11-27", "2026-11-28", at])
    assert [(r["recommendation_id"], r["variant"], r["items"]) for r in got] == [
        ("r3", "champion", ["d", "a"]),
        ("r1", "champion", ["a", "b", "c"]),
    ]  # r5 came later than T
    carol = query(connect(curated), "served_to_user", [user_hash("carol"), "2026-11-27", "2026-11-28", at])
    assert [(r["variant"], r["model_version"]) for r in carol] == [("fallback", "popularity@v1")]


def test_models_served_answers_from_the_recorded_lists(
    curated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI reads the same curated rows from S3 and gives what the SQL gives."""
    from shelfwise.cli import models as registry_cli

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="cur", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for f in (curated / "curated").rglob("*.parquet"):
            s3.put_object(Bucket="cur", Key=str(f.relative_to(curated)), Body=f.read_bytes())
        at = DAY2 + timedelta(hours=1)
        lists = served_to(s3, "cur", "alice", at)
        assert [(x["recommendation_id"], x["items"]) for x in lists] == [
            ("r3", ["d", "a"]),
            ("r1", ["a", "b", "c"]),
        ]
        assert served_to(s3, "cur", "alice", at, days=1)[0]["recommendation_id"] == "r3"
        assert served_to(s3, "cur", "nobody", at) == []
        argv = [
            "--bucket",
            "models",
            "served",
            "--user",
            "bob",
            "--at",
            _stamp(at),
            "--curated-bucket",
            "cur",
        ]
        assert registry_cli.main(argv) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [(x["variant"], x["model_version"], x["items"]) for x in out["lists"]] == [
            ("challenger", "v2", ["c", "d"])
        ]


def test_catalogue_as_a_days_latest_snapshot(tmp_path: Path) -> None:
    header = "item_id,title,category,price,in_stock"
    first, second = tmp_path / "c1.csv", tmp_path / "c2.csv"
    first.write_text(f"{header}\na,Mug,kitchen,4,true\nb,Pan,kitchen,9,true\n")
    second.write_text(f"{header}\nb,Pan,kitchen,8,false\n")
    out = tmp_path / "out"
    for f in (first, second):
        assert ingest_file(f, out, "catalogue").rows_valid >= 1
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    snaps = out / "curated" / "catalogue" / "snapshots" / "*" / "*.parquet"
    con.execute(
        f"CREATE VIEW catalogue_snapshots AS SELECT * FROM read_parquet('{snaps}', hive_partitioning = true, "
        "hive_types = {'snapshot_date': VARCHAR})"
    )
    pointer = json.loads((out / "curated/catalogue/latest.json").read_text())
    day = pointer["key"].split("snapshot_date=")[1][:10]
    got = query(con, "catalogue_latest", [day, day])
    assert [(r["item_id"], r["price"], r["in_stock"]) for r in got] == [("a", 4.0, True), ("b", 8.0, False)]
