"""The simulator's files: deterministic, well-formed in every format, realistic by default."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.cli.simulate import main
from shelfwise.events import EVENT_TYPES, NATIVE_COLUMNS, Event
from shelfwise.simulator import GROUND_TRUTH_FILE, Incident, ShopParams, SimulatorError, simulate_to_files
from shelfwise.simulator.export import iso_timestamps
from shelfwise.simulator.shop import ShopModel

SMALL = ShopParams(n_users=1500, n_items=400, n_days=3)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    params = SMALL.with_incidents(Incident.parse("corrupted_export@1"), Incident.parse("bot_traffic@2.5"))
    a = simulate_to_files(params, 7, tmp_path / "a")
    b = simulate_to_files(params, 7, tmp_path / "b", workers=2)
    simulate_to_files(params, 8, tmp_path / "c")
    assert a.events == b.events > 1000
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    da, dc = _digest(tmp_path / "a"), _digest(tmp_path / "c")
    assert all(da[k] != dc[k] for k in da if k.startswith("events/"))


def test_native_csv_rows_are_valid_events(tmp_path: Path) -> None:
    res = simulate_to_files(SMALL, 1, tmp_path)
    assert [Path(f).name for f in res.files] == [
        "events-2026-01-05.csv",
        "events-2026-01-06.csv",
        "events-2026-01-07.csv",
    ]
    total, ids = 0, set()
    for f in res.files:
        with open(f, newline="") as fh:
            assert next(csv.reader(fh)) == list(NATIVE_COLUMNS)
        rows = _rows(Path(f))
        total += len(rows)
        day = Path(f).stem.split("-", 1)[1]
        for row in rows:
            fields = {k: v for k, v in row.items() if v != "" and k in Event.model_fields}
            ev = Event.model_validate(fields)  # raises on anything the API would refuse
            assert ev.timestamp.date().isoformat() == day
            ids.add(row["event_id"])
        stamps = [r["timestamp"] for r in rows]
        assert stamps == sorted(stamps)
    assert total == res.events == len(ids)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["events"] == res.events and manifest["seed"] == 1


def test_jsonl_holds_the_same_events_as_csv(tmp_path: Path) -> None:
    a = simulate_to_files(SMALL, 3, tmp_path / "csv")
    b = simulate_to_files(SMALL, 3, tmp_path / "jsonl", fmt="jsonl")
    rows = _rows(Path(a.files[0]))
    lines = Path(b.files[0]).read_text().splitlines()
    assert len(rows) == len(lines)
    for row, line in zip(rows[:500], lines[:500], strict=True):
        obj = json.loads(line)
        assert obj["event_id"] == row["event_id"] and obj["timestamp"] == row["timestamp"]
        assert obj.get("item_id", "") == row["item_id"]
        if row["price"]:
            assert obj["price"] == pytest.approx(float(row["price"]))


def test_taobao_and_retailrocket_layouts(tmp_path: Path) -> None:
    tb = simulate_to_files(SMALL, 2, tmp_path / "tb", fmt="taobao")
    rr = simulate_to_files(SMALL, 2, tmp_path / "rr", fmt="retailrocket")
    t = pacsv.read_csv(tb.files[0])
    assert t.column_names == ["user", "item", "category", "behavior", "ts"]
    assert set(t["behavior"].to_pylist()) == {"pv", "cart", "fav", "buy"}
    assert pa.types.is_integer(t["ts"].type) and pa.types.is_integer(t["user"].type)
    keys = list(zip(*(t[c].to_pylist() for c in t.column_names), strict=True))
    assert len(keys) == len(set(keys)), "identical rows would be dropped as duplicates"
    r = pacsv.read_csv(rr.files[0])
    assert r.column_names == ["timestamp", "visitorid", "event", "itemid", "transactionid"]
    assert set(r["event"].to_pylist()) == {"view", "addtocart", "transaction"}
    tx = r.filter(pa.compute.equal(r["event"], "transaction"))
    assert tx["transactionid"].null_count == 0
    rest = r.filter(pa.compute.not_equal(r["event"], "transaction"))
    assert rest["transactionid"].null_count == rest.num_rows == r.num_rows - tx.num_rows
    ts = np.asarray(r["timestamp"])
    assert datetime.fromtimestamp(ts.min() / 1000, tz=UTC).date().isoformat() == "2026-01-05"


def test_hourly_split(tmp_path: Path) -> None:
    res = simulate_to_files(ShopParams(n_users=800, n_items=300, n_days=1), 4, tmp_path, split="hour")
    assert len(res.files) == 24
    for f in res.files:
        hour = Path(f).stem.split("T")[1]
        for row in _rows(Path(f)):
            assert row["timestamp"][11:13] == hour


def test_default_mix_resembles_taobao() -> None:
    model = ShopModel(ShopParams(n_users=6000, n_items=2000, n_days=2), seed=5)
    codes = np.concatenate([model.day(d).code for d in range(2)])
    c = np.bincount(codes, minlength=6).astype(float)
    view, cart, _remove, fav, buy, _search = c
    core = view + cart + fav + buy
    # Taobao UserBehavior: about 89% pv, 5.5% cart, 3% fav, 2.3% buy.
    assert view / core == pytest.approx(0.89, abs=0.02)
    assert cart / core == pytest.approx(0.055, abs=0.012)
    assert fav / core == pytest.approx(0.03, abs=0.01)
    assert buy / core == pytest.approx(0.023, abs=0.008)


def test_daily_cycle_and_growth() -> None:
    model = ShopModel(ShopParams(n_users=5000, n_items=1000, n_days=7), seed=2)
    block = model.day(0)
    hours = ((block.ts - model.start_ms) // 3_600_000) % 24
    per_hour = np.bincount(hours, minlength=24)
    assert per_hour[19:22].mean() > 5 * per_hour[2:5].mean()
    catalogue = model.catalogue
    assert (catalogue.launch_day >= 0).any(), "new items arrive over the period"
    assert (model.users.join_day >= 0).any(), "new users arrive over the period"
    assert len({c.split("/")[0] for c in catalogue.category}) == 8
    assert all(len(t.split()) >= 3 for t in catalogue.title[:50])


def _consecutive_session_leaves(params: ShopParams, seed: int) -> dict[str, float]:
    """Over each user's consecutive sessions: the share in one leaf (``same``) and the share whose
    second is the first's complement (``complement``) and the share whose first is the second's
    (``complement_back``); ``*_shuffled``: the same with each user's
    sessions in a random order (what independent sessions with that user's leaf mix give)."""
    model = ShopModel(params, seed=seed)
    blocks = [model.day(d) for d in range(params.n_days)]
    viewed = [b.item >= 0 for b in blocks]
    owner, session, ts, item = (
        np.concatenate([getattr(b, f)[v] for b, v in zip(blocks, viewed, strict=True)])
        for f in ("owner", "session", "ts", "item")
    )
    _, first = np.unique(session, return_index=True)  # one leaf per session: its first event's
    u, t, lf = owner[first], ts[first], model.catalogue.leaf[item[first]].astype(np.int64)
    out = {}
    for name, order in (
        ("", np.lexsort((t, u))),
        ("_shuffled", np.lexsort((np.random.default_rng(0).random(len(u)), u))),
    ):
        uu, ll = u[order], lf[order]
        pair = uu[1:] == uu[:-1]
        out["same" + name] = float((ll[1:] == ll[:-1])[pair].mean())
        out["complement" + name] = float((ll[1:] == model.complement_leaf[ll[:-1]])[pair].mean())
        out["complement_back" + name] = float((ll[:-1] == model.complement_leaf[ll[1:]])[pair].mean())
    return out


def test_shopping_missions_make_consecutive_sessions_share_a_category() -> None:
    params = ShopParams(n_users=3000, n_items=800, n_days=12)
    got = _consecutive_session_leaves(params, 4)
    assert got["same"] > got["same_shuffled"] + 0.05  # what a user browsed last says what they browse next
    # a follow-up mission goes to the last one's complement: the order, not the mix, says so
    assert got["complement"] > got["complement_back"] + 0.01
    plain = _consecutive_session_leaves(replace(params, mission_complement=0.0), 4)
    assert abs(plain["complement"] - plain["complement_back"]) < 0.01
    none = _consecutive_session_leaves(replace(params, mission_share=0.0), 4)
    assert abs(none["same"] - none["same_shuffled"]) < 0.02  # without missions sessions are independent
    assert abs(none["complement"] - none["complement_shuffled"]) < 0.01
    with pytest.raises(SimulatorError, match="mission_days"):
        ShopParams(mission_days=0.0)
    with pytest.raises(SimulatorError, match="mission_share"):
        ShopParams(mission_share=1.5)
    with pytest.raises(SimulatorError, match="mission_complement"):
        ShopParams(mission_complement=-0.1)


def test_iso_timestamps_exact() -> None:
    ts = np.array([0, 1_767_225_600_123, 951_782_400_000 - 1, 4_102_444_799_999])
    assert iso_timestamps(ts).to_pylist() == [
        "1970-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.123Z",
        "2000-02-28T23:59:59.999Z",
        "2099-12-31T23:59:59.999Z",
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4_102_444_799_999), min_size=1, max_size=30))
def test_iso_timestamps_match_datetime(values: list[int]) -> None:
    got = iso_timestamps(np.array(values, dtype=np.int64)).to_pylist()
    want = [
        datetime.fromtimestamp(v / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{v % 1000:03d}Z"
        for v in values
    ]
    assert got == want


def test_bad_parameters_are_clear_errors() -> None:
    with pytest.raises(SimulatorError, match="unknown incident"):
        Incident.parse("meteor@2")
    with pytest.raises(SimulatorError, match="NAME@DAY"):
        Incident.parse("taste_drift")
    with pytest.raises(SimulatorError, match="after the last simulated day"):
        ShopParams(n_days=3, incidents=(Incident.parse("taste_drift@5"),))
    with pytest.raises(SimulatorError, match="n_users"):
        ShopParams(n_users=0)


def test_cli_prints_one_json_line_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--users", "600", "--items", "200", "--days", "2", "--seed", "3", "--out", str(tmp_path)]
    assert main([*argv, "--incident", "data_outage@1.5"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["files"] == 2 and summary["events"] > 0
    assert set(summary) >= {"events", "files", "seconds", "events_per_s"}
    truth = [json.loads(x) for x in (tmp_path / GROUND_TRUTH_FILE).read_text().splitlines()]
    assert truth[0]["incident"] == "data_outage" and truth[0]["start"] == "2026-01-06T12:00:00.000Z"


def test_cli_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--incident", "meteor@1"]) == 2
    assert "unknown incident" in capsys.readouterr().err
    assert main(["--users", "10"]) == 2  # no --out
    assert not any(tmp_path.iterdir())


def test_event_types_are_contract_types(tmp_path: Path) -> None:
    res = simulate_to_files(SMALL, 9, tmp_path)
    seen = {r["event_type"] for f in res.files for r in _rows(Path(f))}
    assert seen <= set(EVENT_TYPES)
    assert seen == {"view", "add_to_cart", "remove_from_cart", "add_to_wishlist", "purchase", "search"}


def test_sessions_hold_together(tmp_path: Path) -> None:
    res = simulate_to_files(SMALL, 6, tmp_path)
    rows = _rows(Path(res.files[1]))
    by_session: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_session.setdefault(r["session_id"], []).append(r)
    # Purchases come after an add_to_cart of the same item in the session, from a known user.
    for events in by_session.values():
        carted = set()
        for e in events:
            if e["event_type"] == "add_to_cart":
                carted.add(e["item_id"])
            if e["event_type"] == "purchase":
                assert e["item_id"] in carted and e["user_id"]
        users = {e["user_id"] for e in events if e["user_id"]}
        assert len(users) <= 1
    # Searches carry a query made of title words of the catalogue.
    titles = pq.read_table(tmp_path / "catalogue.parquet")["title"].to_pylist()
    words = {w.lower() for t in titles for w in t.split()}
    queries = [r["query"] for r in rows if r["event_type"] == "search"]
    assert queries and all(set(q.split()) & words for q in queries)


def test_catalogue_table(tmp_path: Path) -> None:
    simulate_to_files(SMALL, 1, tmp_path)
    cat = pq.read_table(tmp_path / "catalogue.parquet")
    assert cat.num_rows == 400
    assert cat.column_names == [
        "item_id",
        "category",
        "title",
        "price",
        "launch_day",
        "in_stock",
        "popularity",
    ]
    assert float(pa.compute.sum(cat["popularity"]).as_py()) == pytest.approx(1.0)
