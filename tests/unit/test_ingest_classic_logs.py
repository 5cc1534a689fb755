"""Logs from any period and MovieLens' classic files: u.data, ratings.dat (``::``), ratings.csv."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from shelfwise.ingest import read_events

T1998 = int(datetime(1998, 3, 1, tzinfo=UTC).timestamp())  # MovieLens 100K was collected 1997-98
MS_2000 = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)


def _ratings(n_users: int = 30, n_items: int = 25, seed: int = 0) -> list[tuple[int, int, float, int]]:
    """(user, item, rating, epoch s) in 1998: users of two tastes rate mostly their half of the items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        half = u % 2
        for j, i in enumerate(rng.choice(np.arange(half, n_items, 2), size=10, replace=False).tolist()):
            rows.append((u, i + 1, float(rng.integers(1, 6)), T1998 + u * 3600 + j * 86_400))
    return rows


def _write(path: Path, rows: list[tuple[int, int, float, int]], sep: str, header: str | None = None) -> Path:
    lines = [header] if header else []
    lines += [sep.join((str(u), str(i), f"{r:g}", str(t))) for u, i, r, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("name", "sep", "header"),
    [
        ("u.data", "\t", None),
        ("ratings.dat", "::", None),
        ("ratings.csv", ",", "userId,movieId,rating,timestamp"),
    ],
)
def test_movielens_classic_files_from_1998_are_read_whole(
    tmp_path: Path, name: str, sep: str, header: str | None
) -> None:
    rows = _ratings()
    t = read_events(_write(tmp_path / name, rows, sep, header))
    assert t.num_rows == len(rows)  # nothing quarantined: a 1998 log is a valid log
    assert set(t.column("event_type").to_pylist()) == {"rating"}
    assert sorted(
        zip(t.column("user_id").to_pylist(), t.column("item_id").to_pylist(), strict=True)
    ) == sorted((str(u), str(i)) for u, i, _, _ in rows)
    ts = t.column("timestamp").cast("int64").to_numpy() // 1000
    assert sorted(ts.tolist()) == sorted(r[3] for r in rows)
    ratings = sorted(json.loads(p)["rating"] for p in t.column("properties").to_pylist())
    assert ratings == sorted(r[2] for r in rows)


def test_time_floor_is_configurable(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.data", _ratings(), "\t")
    assert read_events(path, min_ts_ms=MS_2000).num_rows == 0  # a deployment may insist on 2000+
    assert read_events(path).num_rows == len(_ratings())


def test_epoch_units_are_decided_per_value_and_impossible_times_refused(tmp_path: Path) -> None:
    """Seconds and milliseconds mixed in one file both land in 2024; before 1970 and ms-before-1973
    (read as seconds: the far future) are refused."""
    s = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,event_type,user_id,item_id,timestamp\n"
        f"e1,view,u1,i1,{s}\n"
        f"e2,view,u1,i2,{s * 1000 + 5}\n"
        "e3,view,u1,i3,-86400\n"
        "e4,view,u1,i4,90000000000\n"
    )
    t = read_events(path, reference_time=datetime(2026, 1, 1, tzinfo=UTC))
    assert t.column("event_id").to_pylist() == ["e1", "e2"]
    got = t.column("timestamp").cast("int64").to_pylist()
    assert got == [s * 1000, s * 1000 + 5]


def test_evaluate_runs_the_protocol_on_a_1998_movielens_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shelfwise.cli.train import evaluate_main

    path = _write(tmp_path / "u.data", _ratings(n_users=60, n_items=40), "\t")
    rc = evaluate_main(["--events", str(path), "--search", "none", "--threads", "1", "--k", "5"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["protocol"]["start"].startswith("1998")
    assert out["best"] in out["models"] and out["selection"]["served"] == out["best"]
    rc = evaluate_main(["--events", str(path), "--search", "none", "--min-time", "2000-01-01"])
    assert rc != 0  # every event is before the floor: a clear error, not a traceback
