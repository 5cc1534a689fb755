"""The ingest flags bot-like actors beside the curated rows, and every consumer leaves them out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from shelfwise import bots
from shelfwise.ingest import ingest_file, ingest_object, read_events
from shelfwise.monitoring.config import MonitoringConfig
from shelfwise.monitoring.data import LocalEventSource, S3EventSource
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.state import Deployment, MemoryStateStore
from shelfwise.simulator import Incident, ShopParams, simulate_to_files
from shelfwise.training.job import load_bot_flags

pytestmark = pytest.mark.unit

PARAMS = ShopParams(n_users=600, n_items=200, n_days=3, incidents=(Incident.parse("bot_traffic@1.5"),))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list[Path]]:
    out = tmp_path_factory.mktemp("botshop")
    result = simulate_to_files(PARAMS, 5, out / "shop")
    truth = {r["incident"]: r for r in result.ground_truth}["bot_traffic"]
    files = sorted((out / "shop" / "events").iterdir())
    return out, truth, files


def test_ingest_flags_the_simulated_crawler_keeps_its_rows_and_publishes_the_share(
    shop: tuple[Path, dict[str, str], list[Path]],
) -> None:
    out, truth, files = shop
    summaries = [ingest_file(f, out / "lake") for f in files]
    day = truth["start"][:10]
    with_bot = [s for s in summaries if day in s.event_dates and s.bots.get("bot_actors")]
    assert len(with_bot) == 1
    summary = with_bot[0]
    assert 0 < summary.bots["share"] < 1 and summary.bots["rules"]
    # the decision, beside the curated rows: the crawler by its rate, with all its events; the
    # repetition rule also takes a few shoppers who re-view one item dozens of times (a cheap miss)
    flags = pq.read_table(summary.bot_flags)
    assert flags.schema.equals(bots.FLAGS_SCHEMA)
    by_actor = {
        a: (r, n)
        for a, r, n in zip(*(flags[c].to_pylist() for c in ("actor", "rule", "events")), strict=True)
    }
    assert by_actor[truth["user_id"]] == ("rate", int(truth["views"]))
    assert sum(n for _, n in by_actor.values()) == summary.bots["bot_events"]
    assert {r for a, (r, _) in by_actor.items() if a != truth["user_id"]} <= {"repetition"}
    # the stored summary says the same
    stored = json.loads(Path(summary.summary or "").read_text())
    assert stored["bots"] == summary.bots and stored["bot_flags"] == summary.bot_flags
    # other days: no crawler, at most re-viewing shoppers
    for other in summaries:
        if other is not summary and other.bot_flags is not None:
            assert set(pq.read_table(other.bot_flags)["rule"].to_pylist()) == {"repetition"}
            assert other.bots["share"] < summary.bots["share"]
    # raw truth kept: the crawler's rows are all in the curated data, which readers see unchanged
    curated = read_events(out / "lake")
    mine = pc.sum(pc.cast(pc.equal(curated["user_id"], truth["user_id"]), pa.int64())).as_py()
    assert mine == int(truth["views"])
    # the flag files are not events
    assert curated.num_rows == sum(s.rows_valid for s in summaries)


def test_monitoring_excludes_ingest_flagged_actors_its_own_window_would_miss(tmp_path: Path) -> None:
    t0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []
    for u in range(300):
        t = float(rng.uniform(0, 3000))
        for _ in range(int(rng.integers(3, 12))):
            t += float(rng.exponential(60.0))
            rows.append({"user_id": f"u{u}", "item_id": f"i{int(rng.integers(0, 200))}", "t": t})
    # a crawler whose last hour holds only a few slow views: the rules over the hour cannot tell
    rows += [{"user_id": "crawler", "item_id": f"i{i}", "t": 3000.0 + 20 * i} for i in range(25)]
    table = pa.table(
        {
            "event_type": ["view"] * len(rows),
            "user_id": [r["user_id"] for r in rows],
            "session_id": pa.nulls(len(rows), pa.string()),
            "item_id": [r["item_id"] for r in rows],
            "timestamp": pa.array(
                [t0 + timedelta(seconds=float(r["t"])) for r in rows],  # type: ignore[arg-type]
                pa.timestamp("ms", tz="UTC"),
            ),
        }
    )
    day = tmp_path / "curated" / "events" / "event_date=2026-11-28"
    day.mkdir(parents=True)
    pq.write_table(table, day / "a.parquet")
    now = t0 + timedelta(seconds=3600 + 20)
    job = MonitoringJob(LocalEventSource(tmp_path), None, MemoryStateStore(), MonitoringConfig())  # type: ignore[arg-type]
    assert job.fast_pass(now, Deployment(champion=None)).summary["bots"]["bot_actors"] == 0
    # the ingest saw the crawler's whole day (thousands of views) and flagged it
    (tmp_path / bots.FLAGS_PREFIX).mkdir(parents=True)
    pq.write_table(
        pa.table({"actor": ["crawler"], "rule": ["rate"], "events": [5000]}, schema=bots.FLAGS_SCHEMA),
        tmp_path / bots.FLAGS_PREFIX / "obj.parquet",
    )
    job = MonitoringJob(LocalEventSource(tmp_path), None, MemoryStateStore(), MonitoringConfig())  # type: ignore[arg-type]
    found = job.fast_pass(now, Deployment(champion=None)).summary["bots"]
    assert found["bot_actors"] == 1 and found["rules"] == ["ingest:rate"]
    assert found["bot_events"] == 25


@mock_aws
def test_s3_ingest_publishes_flags_that_training_and_monitoring_read(
    shop: tuple[Path, dict[str, str], list[Path]],
) -> None:
    _, truth, files = shop
    s3 = boto3.client("s3", region_name="eu-west-1")
    for b in ("raw", "curated", "quarantine"):
        s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    day = truth["start"][:10]
    path = next(f for f in files if day.replace("-", "") in f.name or day in f.name)
    s3.put_object(Bucket="raw", Key=f"raw/native/{path.name}", Body=path.read_bytes())
    summary = ingest_object(
        s3, "raw", f"raw/native/{path.name}", curated_bucket="curated", quarantine_bucket="quarantine"
    )
    assert summary.bot_flags and summary.bot_flags.startswith(f"s3://curated/{bots.FLAGS_PREFIX}/")
    flagged = load_bot_flags(s3, "curated")
    assert flagged[truth["user_id"]] == "rate" and len(flagged) == summary.bots["bot_actors"]
    assert S3EventSource(s3, "curated").bot_flags() == flagged
