"""Bot-like actors: found by rate, regularity and repetition, and kept out of metrics and training.

An actor is a ``user_id`` (else ``session_id``) of behaviour events (view, click, add_to_cart,
remove_from_cart, purchase, search). It is bot-like, over the events given, when any rule holds:

- *rate*: more than ``max_events_per_hour`` events per hour of its activity (no shopper views an
  item every few seconds for an hour);
- *regularity*: at least ``min_events`` events whose gaps are short (median at most
  ``max_median_gap_s``) and machine-regular (coefficient of variation at most ``max_gap_cv``);
- *repetition*: at least ``min_events`` events spread over so few items that the item entropy is at
  most ``max_item_entropy_bits`` (hammering one or two pages).

Rules rather than a learned classifier: they need no labels, read in one line each, and a false
positive costs little (one heavy shopper's events left out of a quality metric), while the thing
they guard against (a crawler's thousands of views moving popularity, input-drift and training
data) is gross. Monitoring publishes the excluded share (``BotShare``) and alarms on a surge; the
training job drops the same actors' events from its data and records the share in the manifest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.monitoring.config import BotRules

BEHAVIOUR = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search")


@dataclass
class BotReport:
    """Which actors looked like bots, why, and how much of the behaviour they were."""

    actors: dict[str, str] = field(default_factory=dict)  # actor -> the rule that flagged it
    bot_events: int = 0
    behaviour_events: int = 0

    @property
    def share(self) -> float | None:
        return self.bot_events / self.behaviour_events if self.behaviour_events else None

    def to_dict(self) -> dict[str, object]:
        return {
            "bot_actors": len(self.actors),
            "bot_events": self.bot_events,
            "behaviour_events": self.behaviour_events,
            "share": None if self.share is None else round(self.share, 6),
            "rules": sorted(set(self.actors.values())),
        }


def actor_key(events: pa.Table) -> pa.ChunkedArray | pa.Array:
    """``user_id``, else ``session_id``, as strings (null when an event has neither)."""
    cols = [pc.cast(events[c], pa.string()) for c in ("user_id", "session_id") if c in events.column_names]
    if not cols:
        return pa.nulls(events.num_rows, pa.string())
    return pc.coalesce(*cols) if len(cols) > 1 else cols[0]


def _ms(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.timestamp("ms", tz="UTC"))
    return np.asarray(pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def detect(events: pa.Table, rules: BotRules = BotRules()) -> BotReport:
    """Bot-like actors among the behaviour events of ``events`` (other rows are ignored)."""
    report = BotReport()
    if events.num_rows == 0 or "event_type" not in events.column_names:
        return report
    et = pc.cast(events["event_type"], pa.string())
    actor = actor_key(events)
    mask = pc.and_(pc.is_in(et, pa.array(BEHAVIOUR)), pc.is_valid(actor))
    beh = pa.table(
        {
            "actor": pc.filter(actor, mask),
            "ts": pc.filter(events["timestamp"], mask),
            "item": pc.filter(pc.cast(events["item_id"], pa.string()), mask)
            if "item_id" in events.column_names
            else pa.nulls(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0, pa.string()),
        }
    )
    report.behaviour_events = beh.num_rows
    if beh.num_rows == 0:
        return report
    counts = beh.group_by("actor", use_threads=False).aggregate([("actor", "count")])
    heavy = counts.filter(pc.greater_equal(counts["actor_count"], rules.min_events))["actor"]
    if len(heavy) == 0:
        return report
    cand = beh.filter(pc.is_in(beh["actor"], heavy))
    order = pc.sort_indices(cand, [("actor", "ascending"), ("ts", "ascending")])
    cand = cand.take(order)
    actors = cand["actor"].to_numpy(zero_copy_only=False)
    ts = _ms(cand["ts"])
    items = cand["item"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, actors[1:] != actors[:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        why = _verdict(ts[lo:hi], items[lo:hi], rules)
        if why:
            report.actors[str(actors[lo])] = why
            report.bot_events += int(hi - lo)
    return report


def _verdict(ts: np.ndarray, items: np.ndarray, rules: BotRules) -> str | None:
    n = len(ts)
    span_h = (int(ts[-1]) - int(ts[0])) / 3_600_000.0
    if n / max(span_h, 1.0) > rules.max_events_per_hour:
        return "rate"
    gaps = np.diff(ts).astype(np.float64) / 1000.0
    if gaps.size >= 2:
        med, mean = float(np.median(gaps)), float(gaps.mean())
        if med <= rules.max_median_gap_s and mean > 0 and float(gaps.std()) / mean <= rules.max_gap_cv:
            return "regularity"
    _, c = np.unique(items.astype(str), return_counts=True)
    p = c / c.sum()
    if float(-(p * np.log2(p)).sum()) <= rules.max_item_entropy_bits:
        return "repetition"
    return None


def behaviour_events(events: pa.Table) -> int:
    """How many rows of ``events`` are behaviour events with an actor."""
    if events.num_rows == 0 or "event_type" not in events.column_names:
        return 0
    mask = pc.and_(
        pc.is_in(pc.cast(events["event_type"], pa.string()), pa.array(BEHAVIOUR)),
        pc.is_valid(actor_key(events)),
    )
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def exclude(events: pa.Table, report: BotReport) -> pa.Table:
    """``events`` without the rows of the report's bot actors (rows without an actor are kept)."""
    if not report.actors or events.num_rows == 0:
        return events
    actor = actor_key(events)
    bot = pc.fill_null(pc.is_in(actor, pa.array(sorted(report.actors), pa.string())), False)
    return events.filter(pc.invert(bot))
