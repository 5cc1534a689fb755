"""Realism figures of an event log: the numbers that characterise a shop's behaviour.

Works on the curated table (``shelfwise.ingest.read_events``), so the same figures come out for a
simulated log and a real one (Taobao, RetailRocket, UCI Online Retail II ...).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TAOBAO_TYPES = ("view", "add_to_cart", "add_to_wishlist", "purchase")


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, -> 1 = one item has everything)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def _dist(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    q = np.percentile(values, [50, 90, 99])
    return {
        "mean": round(float(values.mean()), 3),
        "median": round(float(q[0]), 3),
        "p90": round(float(q[1]), 3),
        "p99": round(float(q[2]), 3),
    }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 5) if b else None


def _codes(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes of a string column (nulls -> -1), for fast numpy grouping."""
    enc = pc.dictionary_encode(arr)
    if isinstance(enc, pa.ChunkedArray):
        enc = (
            enc.unify_dictionaries().combine_chunks()
            if enc.num_chunks
            else pa.array([], pa.dictionary(pa.int32(), pa.string()))
        )
    return np.asarray(enc.indices.fill_null(-1), dtype=np.int64)


def _as_string(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        return pc.cast(col, pa.string())
    return col


def compute_stats(table: pa.Table) -> dict[str, Any]:
    """Figures of a curated event table: volume, events per user, item popularity Gini, event type
    shares (and the Taobao-comparable mix), funnel rates, session length, repeat purchases."""
    n = table.num_rows
    out: dict[str, Any] = {"events": n}
    if n == 0:
        return out
    etype = _as_string(table["event_type"])
    counts = pc.value_counts(etype)
    by_type = {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}
    out["event_types"] = {k: round(c / n, 5) for k, c in sorted(by_type.items(), key=lambda kv: -kv[1])}
    core = {t: by_type.get(t, 0) for t in TAOBAO_TYPES}
    core_n = sum(core.values())
    out["taobao_mix"] = {t: round(c / core_n, 5) for t, c in core.items()} if core_n else None
    out["view_to_cart"] = _ratio(by_type.get("add_to_cart", 0), by_type.get("view", 0))
    out["cart_to_purchase"] = _ratio(by_type.get("purchase", 0), by_type.get("add_to_cart", 0))

    user = _as_string(table["user_id"])
    session = _as_string(table["session_id"]) if "session_id" in table.column_names else user
    who = pc.coalesce(user, session)
    who_c = _codes(who)
    out["users"] = int(who_c.max() + 1) if len(who_c) else 0
    out["events_per_user"] = _dist(np.bincount(who_c[who_c >= 0]))

    item_c = _codes(_as_string(table["item_id"]))
    has_item = item_c >= 0
    item_counts = np.bincount(item_c[has_item])
    out["items"] = int((item_counts > 0).sum())
    out["item_gini"] = round(gini(item_counts[item_counts > 0]), 4)
    top = np.sort(item_counts)[::-1]
    k = max(1, math.ceil(len(top) * 0.01))
    out["top1pct_item_share"] = round(float(top[:k].sum()) / max(1.0, float(top.sum())), 4)

    ts = np.asarray(pc.cast(table["timestamp"], pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    # The curated timestamp is milliseconds since the epoch.
    days = ts // 86_400_000
    out["days"] = int(days.max() - days.min() + 1)
    out["events_per_day"] = round(n / out["days"], 1)

    sess_c = _codes(session)
    ok = sess_c >= 0
    if ok.any():
        sc = sess_c[ok]
        n_s = int(sc.max() + 1)
        length = np.bincount(sc, minlength=n_s)
        tmin = np.full(n_s, np.iinfo(np.int64).max)
        tmax = np.full(n_s, np.iinfo(np.int64).min)
        np.minimum.at(tmin, sc, ts[ok])
        np.maximum.at(tmax, sc, ts[ok])
        used = length > 0
        out["sessions"] = int(used.sum())
        out["session_events"] = _dist(length[used])
        out["session_minutes"] = _dist((tmax[used] - tmin[used]) / 60_000.0)

    is_buy = np.asarray(pc.equal(etype, "purchase").fill_null(False).to_numpy(zero_copy_only=False))
    buy = is_buy & has_item & (who_c >= 0)
    if buy.any():
        bu, bi, bd = who_c[buy], item_c[buy], days[buy]
        n_items = int(item_c.max() + 1)
        # Repeat customers: purchasing users who bought on two or more distinct days.
        ud = np.unique(bu * (int(bd.max() - bd.min()) + 1) + (bd - bd.min()))
        days_per_buyer = np.bincount(ud // (int(bd.max() - bd.min()) + 1))
        buyers = days_per_buyer > 0
        out["buyers"] = int(buyers.sum())
        out["repeat_customer_rate"] = round(float((days_per_buyer[buyers] >= 2).mean()), 4)
        # Repeat purchases of the same item by the same user on another day.
        pair = bu * n_items + bi
        pd_ = np.unique(np.stack([pair, bd]), axis=1)
        _pairs, n_days = np.unique(pd_[0], return_counts=True)
        out["repeat_item_purchase_rate"] = round(float((n_days >= 2).mean()), 4)
        out["purchases_per_buyer"] = _dist(np.bincount(bu)[buyers])
        bought = np.bincount(bi)
        out["purchase_item_gini"] = round(gini(bought[bought > 0]), 4)
        if "quantity" in table.column_names:
            q = table["quantity"].to_numpy(zero_copy_only=False)
            q = np.asarray(q, dtype=np.float64)[buy]
            q = q[np.isfinite(q)]
            out["purchase_quantity"] = _dist(q) if len(q) else None
        if ok.any():
            baskets = np.bincount(sess_c[buy & ok])
            out["purchase_lines_per_basket"] = _dist(baskets[baskets > 0])
    return out
