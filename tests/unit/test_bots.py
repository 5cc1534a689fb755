"""Bot-like actors: found by rate, regularity and repetition; left out of monitoring and training."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from shelfwise import bots
from shelfwise.monitoring.config import MonitoringConfig
from shelfwise.monitoring.job import MonitoringJob
from shelfwise.monitoring.state import Deployment, MemoryStateStore

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _table(rows: list[tuple[str, str, str, float]]) -> pa.Table:
    """(event_type, user_id, item_id, seconds after T0)."""
    return pa.table(
        {
            "event_type": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "session_id": pa.nulls(len(rows), pa.string()),
            "item_id": [r[2] for r in rows],
            "timestamp": pa.array([T0 + timedelta(seconds=r[3]) for r in rows], pa.timestamp("ms", tz="UTC")),
            "category": ["a"] * len(rows),
            "recommendation_id": pa.nulls(len(rows), pa.string()),
            "score": pa.nulls(len(rows), pa.float64()),
            "variant": pa.nulls(len(rows), pa.string()),
            "model_version": pa.nulls(len(rows), pa.string()),
        }
    )


def shoppers(n: int, seed: int) -> list[tuple[str, str, str, float]]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n):
        t = float(rng.uniform(0, 3000))
        for _ in range(int(rng.integers(3, 40))):
            t += float(rng.exponential(40.0))
            rows.append(("view", f"u{u}", f"i{int(rng.integers(0, 300))}", t))
    return rows


def test_crawler_hammerer_and_fast_regular_client_are_flagged_shoppers_are_not() -> None:
    crawler = [("view", "crawler", f"i{i}", i * 1.0) for i in range(1200)]  # 1/s, every item once
    hammer = [("view", "hammer", "i1" if i % 3 else "i2", i * 37.0) for i in range(40)]  # two pages
    ticker = [("view", "ticker", f"i{i}", 100 + i * 2.0) for i in range(35)]  # every 2 s exactly
    report = bots.detect(_table(shoppers(300, 1) + crawler + hammer + ticker))
    assert report.actors == {"crawler": "rate", "hammer": "repetition", "ticker": "regularity"}
    assert report.bot_events == 1200 + 40 + 35
    assert 0 < report.share < 1
    kept = bots.exclude(_table(shoppers(5, 2) + crawler), report)
    assert "crawler" not in set(kept["user_id"].to_pylist()) and kept.num_rows > 0


def test_monitoring_publishes_the_bot_share() -> None:
    crawler = [("view", "crawler", f"i{i}", 3300 + i * 0.5) for i in range(400)]
    table = _table(shoppers(400, 3) + crawler)
    job = MonitoringJob(_Source(table), _NoManifests(), MemoryStateStore(), MonitoringConfig())
    result = job.fast_pass(T0 + timedelta(seconds=3600 + 20), Deployment(champion="v1"))
    assert result.summary["bots"]["bot_actors"] == 1
    share = result.values()["BotShare"]
    assert 0.3 < share < 1.0


class _Source:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def read(self, start: datetime, end: datetime) -> pa.Table:
        import pyarrow.compute as pc

        ts = self.table["timestamp"]
        return self.table.filter(
            pc.and_(
                pc.greater_equal(ts, pa.scalar(start, pa.timestamp("ms", tz="UTC"))),
                pc.less(ts, pa.scalar(end, pa.timestamp("ms", tz="UTC"))),
            )
        )


class _NoManifests:
    def manifest(self, version: str) -> None:
        return None
