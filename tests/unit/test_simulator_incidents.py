"""Every incident is visible in the exported files exactly where the ground truth says."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from shelfwise.events import EVENT_TYPES, NATIVE_COLUMNS
from shelfwise.simulator import GROUND_TRUTH_FILE, Incident, ShopParams, SimulationResult, simulate_to_files

INCIDENTS = (
    "data_outage@1.5",
    "taste_drift@2",
    "price_shock@2.5",
    "new_category@3",
    "corrupted_export@3.2",
    "bot_traffic@4.5",
    "schema_change@5",
)
PARAMS = ShopParams(
    n_users=2500, n_items=600, n_days=6, incidents=tuple(Incident.parse(s) for s in INCIDENTS)
)


@dataclass
class Run:
    out: Path
    result: SimulationResult
    truth: dict[str, dict]
    rows: list[dict[str, str]]  # every parseable row of every file, in file order


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("incidents")
    result = simulate_to_files(PARAMS, 11, out)
    truth = {r["incident"]: r for r in result.ground_truth}
    rows: list[dict[str, str]] = []
    for f in result.files:
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("event_type") in EVENT_TYPES and None not in row:
                    rows.append(row)
    return Run(out, result, truth, rows)


def test_ground_truth_log_on_disk_matches_memory(run: Run) -> None:
    lines = (run.out / GROUND_TRUTH_FILE).read_text().splitlines()
    assert [json.loads(x) for x in lines] == run.result.ground_truth
    assert [r["incident"] for r in run.result.ground_truth] == [s.split("@")[0] for s in INCIDENTS]
    assert run.truth["taste_drift"]["start"] == "2026-01-07T00:00:00.000Z"
    assert run.truth["price_shock"]["start"] == "2026-01-07T12:00:00.000Z"


def test_data_outage_leaves_a_hole(run: Run) -> None:
    t0, t1 = _ts(run.truth["data_outage"]["start"]), _ts(run.truth["data_outage"]["end"])
    assert (t1 - t0).total_seconds() == 6 * 3600
    stamps = [_ts(r["timestamp"]) for r in run.rows]
    assert not [t for t in stamps if t0 <= t < t1]
    assert any(0 < (t0 - t).total_seconds() < 3600 for t in stamps)
    assert any(0 <= (t - t1).total_seconds() < 3600 for t in stamps)


def test_bot_traffic_is_one_user_with_thousands_of_views(run: Run) -> None:
    bot = run.truth["bot_traffic"]
    t0, t1 = _ts(bot["start"]), _ts(bot["end"])
    day = bot["start"][:10]
    per_user = Counter(r["user_id"] for r in run.rows if r["user_id"] and r["timestamp"].startswith(day))
    (top, n), (_, second) = per_user.most_common(2)
    assert top == bot["user_id"] and n == bot["views"] == 5000
    assert second * 20 < n
    bot_rows = [r for r in run.rows if r["user_id"] == bot["user_id"]]
    assert {r["event_type"] for r in bot_rows} == {"view"}
    assert all(t0 <= _ts(r["timestamp"]) <= t1 for r in bot_rows)


def test_new_category_appears_at_its_launch(run: Run) -> None:
    nc = run.truth["new_category"]
    start = _ts(nc["available_from"])
    mine = [r for r in run.rows if r["category"].startswith(nc["category"] + "/")]
    assert mine and all(_ts(r["timestamp"]) >= start for r in mine)
    after = [r for r in run.rows if r["category"] and _ts(r["timestamp"]) >= start]
    assert len(mine) / len(after) > 0.02
    assert {r["item_id"] for r in mine} <= set(nc["item_ids"])


def test_price_shock_moves_prices_of_one_category(run: Run) -> None:
    ps = run.truth["price_shock"]
    start = _ts(ps["start"])
    cat = pq.read_table(run.out / "catalogue.parquet").to_pydict()
    base = dict(zip(cat["item_id"], cat["price"], strict=True))
    schema_from = _ts(run.truth["schema_change"]["start"])
    checked = Counter()
    for r in run.rows:
        t = _ts(r["timestamp"])
        if not r["item_id"] or t >= schema_from:  # the price column is renamed from then on
            continue
        hit = r["category"].startswith(ps["category"] + "/") and t >= start
        want = round(base[r["item_id"]] * (ps["factor"] if hit else 1.0), 2)
        assert float(r["price"]) == pytest.approx(want, abs=0.006)
        checked[hit] += 1
    assert checked[True] > 100 and checked[False] > 1000


def test_taste_drift_changes_what_drifted_users_browse(run: Run) -> None:
    td = run.truth["taste_drift"]
    start = _ts(td["start"])
    drifted = set(td["user_ids"])
    assert abs(len(drifted) / PARAMS.n_users - td["share"]) < 0.05
    mix: dict[str, list[Counter]] = defaultdict(lambda: [Counter(), Counter()])
    for r in run.rows:
        if r["event_type"] == "view" and r["user_id"] and not r["category"].startswith("novelties"):
            mix[r["user_id"]][_ts(r["timestamp"]) >= start][r["category"]] += 1

    def kept(before: Counter, after: Counter) -> float:
        """Share of the views after the start in the three categories the user browsed most before.

        (Shopping missions move everyone's mix from day to day; a drifted user leaves their old
        favourites altogether.)
        """
        top = {c for c, _ in before.most_common(3)}
        return sum(n for c, n in after.items() if c in top) / sum(after.values())

    moved, stayed = [], []
    for user, (before, after) in mix.items():
        if sum(before.values()) >= 8 and sum(after.values()) >= 8:
            (moved if user in drifted else stayed).append(kept(before, after))
    assert len(moved) > 15 and len(stayed) > 40
    assert np.median(stayed) > np.median(moved) + 0.2
    assert np.mean(stayed) > 2 * np.mean(moved)


def test_schema_change_from_the_first_changed_file(run: Run) -> None:
    sc = run.truth["schema_change"]
    assert sc["first_file"] == "events-2026-01-10.csv"
    for f in run.result.files:
        with open(f, newline="") as fh:
            header = next(csv.reader(fh))
        if Path(f).name < sc["first_file"]:
            assert header == list(NATIVE_COLUMNS)
        else:
            want = [sc["renamed"].get(c, c) for c in NATIVE_COLUMNS] + sc["extra_columns"]
            assert header == want


def test_corrupted_export_garbles_exactly_the_listed_lines(run: Run, tmp_path: Path) -> None:
    ce = run.truth["corrupted_export"]
    clean = simulate_to_files(
        PARAMS.with_incidents(*(i for i in PARAMS.incidents if i.name != "corrupted_export")), 11, tmp_path
    )
    name = ce["file"]
    bad = (run.out / "events" / name).read_bytes().split(b"\n")
    good = (tmp_path / "events" / name).read_bytes().split(b"\n")
    assert len(bad) == len(good)
    differ = [i + 1 for i, (a, b) in enumerate(zip(bad, good, strict=True)) if a != b]
    assert differ == ce["garbled_lines"] and ce["n_garbled"] == len(differ) > 10
    assert clean.events == run.result.events
    for line in differ:
        fields = bad[line - 1].decode("ascii").split(",")
        # Either too few fields or an event type no reader accepts: never a valid row.
        assert len(fields) != len(NATIVE_COLUMNS) or fields[1] not in EVENT_TYPES
    # Every other file is identical to the clean run.
    for f in clean.files:
        if Path(f).name != name:
            assert Path(f).read_bytes() == (run.out / "events" / Path(f).name).read_bytes()
