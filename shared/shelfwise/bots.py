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

The ingest applies the rules to every object it curates (a daily export holds a crawler's whole
day) and publishes its decision beside the curated rows, which stay as they arrived (raw truth):
``curated/_bots/<object>.parquet`` lists the flagged actors (``actor``, ``rule``, ``events``) and
the object's summary the excluded share. Training and monitoring exclude those actors too
(:func:`with_flagged`), besides what the rules find over their own, wider windows (an actor whose
events arrive spread over many small objects).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.monitoring.config import BotRules

BEHAVIOUR = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search")
# The ingest's decisions: one Parquet file of flagged actors per curated object that had any.
FLAGS_PREFIX = "curated/_bots"
FLAGS_SCHEMA = pa.schema([("actor", pa.string()), ("rule", pa.string()), ("events", pa.int64())])


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


def _actor_events(events: pa.Table, actors: Iterable[str]) -> dict[str, int]:
    """Behaviour events of each of ``actors`` in ``events``."""
    wanted = pa.array(sorted(set(actors)), pa.string())
    if len(wanted) == 0 or events.num_rows == 0 or "event_type" not in events.column_names:
        return {}
    actor = actor_key(events)
    mask = pc.and_(
        pc.is_in(pc.cast(events["event_type"], pa.string()), pa.array(BEHAVIOUR)),
        pc.fill_null(pc.is_in(actor, wanted), False),
    )
    hits = pc.filter(actor, mask)
    if len(hits) == 0:
        return {}
    counts = pc.value_counts(hits)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


def with_flagged(report: BotReport, flagged: Mapping[str, str], events: pa.Table) -> BotReport:
    """``report`` plus the actors the ingest flagged (``flagged``: actor -> rule) that act in
    ``events``, their behaviour events counted; what the rules found stays as it is."""
    extra = {a: r for a, r in flagged.items() if a not in report.actors}
    counts = _actor_events(events, extra)
    out = BotReport(dict(report.actors), report.bot_events, report.behaviour_events)
    for a, n in counts.items():
        out.actors[a] = f"ingest:{extra[a]}"
        out.bot_events += n
    return out


def flags_table(report: BotReport, events: pa.Table) -> pa.Table:
    """The ingest's published decision for one object: each flagged actor, its rule and events."""
    counts = _actor_events(events, report.actors)
    actors = sorted(report.actors)
    return pa.table(
        {
            "actor": pa.array(actors, pa.string()),
            "rule": pa.array([report.actors[a] for a in actors], pa.string()),
            "events": pa.array([counts.get(a, 0) for a in actors], pa.int64()),
        },
        schema=FLAGS_SCHEMA,
    )


def read_flags(tables: Iterable[pa.Table]) -> dict[str, str]:
    """actor -> rule over published flag tables (``FLAGS_SCHEMA``)."""
    out: dict[str, str] = {}
    for t in tables:
        if t.num_rows and {"actor", "rule"} <= set(t.column_names):
            for a, r in zip(t["actor"].to_pylist(), t["rule"].to_pylist(), strict=True):
                if a is not None:
                    out.setdefault(str(a), str(r))
    return out
