"""Exploration as a monitored variant: what it costs in clicks, per matured window and variant.

Published as ``ExplorationCtrCost`` (relative: 1 - logged clicks / the same lists as ranked,
estimated from the slots exploration kept; :func:`shelfwise.offpolicy.exploration_cost`) and
``ExploredSlotShare``, stamped at the matured click window, only for windows whose lists carry
propensities and hold at least ``min_lists`` lists of the variant.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.monitoring.publish import MetricDatum
from shelfwise.offpolicy import exploration_cost
from shelfwise.offpolicy_log import logged_lists


def exploration_metrics(
    events: pa.Table, start: datetime, end: datetime, click_seconds: int, min_lists: int
) -> list[MetricDatum]:
    """Exploration's cost for the lists served in [start, end), with their clicks."""
    if events.num_rows == 0 or "properties" not in events.column_names:
        return []
    ts = events["timestamp"]
    lo = pa.scalar(start, pa.timestamp("ms", tz="UTC"))
    hi = pa.scalar(end, pa.timestamp("ms", tz="UTC"))
    fb_hi = pa.scalar(end + timedelta(seconds=click_seconds), pa.timestamp("ms", tz="UTC"))
    is_imp = pc.equal(events["event_type"], "impression")
    in_window = pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))
    imp = pc.and_(is_imp, in_window)
    explored = pc.match_substring(pc.fill_null(events["properties"], ""), '"spread":true')
    if not pc.any(pc.and_(imp, explored)).as_py():
        return []
    clicks = pc.and_(
        pc.equal(events["event_type"], "click"), pc.and_(pc.greater_equal(ts, lo), pc.less(ts, fb_hi))
    )
    data = logged_lists(events.filter(pc.or_(imp, clicks)))
    out: list[MetricDatum] = []
    for variant in ("champion", "challenger"):
        keep = np.asarray(data.variants == variant)
        if keep.sum() < min_lists:
            continue
        cost = exploration_cost(data.subset(keep).lists)
        if cost is None or not np.isfinite(cost.cost):
            continue
        dims = {"Variant": variant}
        out.append(MetricDatum("ExplorationCtrCost", cost.cost, start, dims))
        out.append(MetricDatum("ExploredSlotShare", cost.explored_slots, start, dims))
    return out
