"""Online quality from delayed labels: impressions joined to feedback by ``recommendation_id``.

A feedback row (click, add_to_cart, purchase) counts for an impression when it echoes the
impression's ``recommendation_id`` and ``item_id`` and arrives within that event type's attribution
window. Rates are per ``(variant, model_version)``; a family of rates is *mature* for a window once
its attribution window has closed after the window's end, and only mature families are published.
Everything is pyarrow compute and hash joins (no pandas), so a window of 1M impressions takes
seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.errors import InputError
from shelfwise.monitoring.config import AttributionWindows

FEEDBACK_TYPES = ("click", "add_to_cart", "purchase")
REQUIRED_COLUMNS = ("event_type", "recommendation_id", "item_id", "timestamp")
# Client clocks run a little behind the server that logged the impression; tolerate that much.
CLOCK_SKEW_MS = 60_000
FAMILIES = ("click", "add_to_cart", "purchase")


@dataclass
class VariantQuality:
    """Counts for one (variant, model_version) over one window; rates are derived properties."""

    variant: str
    model_version: str
    impressions: int = 0
    lists: int = 0
    clicked_impressions: int = 0
    clicked_lists: int = 0
    early_clicked_lists: int = 0
    carted_lists: int = 0
    purchased_lists: int = 0
    revenue: float = 0.0
    ndcg_sum: float = 0.0

    @property
    def ctr(self) -> float | None:
        return self.clicked_impressions / self.impressions if self.impressions else None

    @property
    def list_ctr(self) -> float | None:
        return self.clicked_lists / self.lists if self.lists else None

    @property
    def add_to_cart_rate(self) -> float | None:
        return self.carted_lists / self.lists if self.lists else None

    @property
    def conversion_rate(self) -> float | None:
        return self.purchased_lists / self.lists if self.lists else None

    @property
    def revenue_per_mille(self) -> float | None:
        return 1000.0 * self.revenue / self.impressions if self.impressions else None

    @property
    def ndcg(self) -> float | None:
        """Mean NDCG of the clicked positions over lists with at least one click."""
        return self.ndcg_sum / self.clicked_lists if self.clicked_lists else None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def to_ms(when: datetime) -> int:
    """Epoch milliseconds of an aware datetime (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


def mature_families(window_end: datetime, as_of: datetime, windows: AttributionWindows) -> tuple[str, ...]:
    """The rate families whose attribution window has closed for a window ending at ``window_end``."""
    age = (to_ms(as_of) - to_ms(window_end)) / 1000.0
    return tuple(f for f in FAMILIES if age >= windows.for_type(f))


def _string(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.cast(col, pa.string()) if pa.types.is_dictionary(col.type) else col


def _ms(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.timestamp("ms", tz="UTC"))
    return pc.cast(col, pa.int64())


def _prepare(events: pa.Table) -> pa.Table:
    missing = [c for c in REQUIRED_COLUMNS if c not in events.column_names]
    if missing:
        raise InputError(f"events table lacks columns {missing}")
    cols = {
        "event_type": _string(events["event_type"]),
        "recommendation_id": _string(events["recommendation_id"]),
        "item_id": _string(events["item_id"]),
        "ts": _ms(events["timestamp"]),
    }
    n = events.num_rows
    for name, typ in (("variant", pa.string()), ("model_version", pa.string())):
        cols[name] = _string(events[name]) if name in events.column_names else pa.nulls(n, typ)
    cols["position"] = (
        pc.cast(events["position"], pa.int32())
        if "position" in events.column_names
        else pa.nulls(n, pa.int32())
    )
    for name in ("price", "quantity"):
        cols[name] = (
            pc.cast(events[name], pa.float64()) if name in events.column_names else pa.nulls(n, pa.float64())
        )
    return pa.table(cols)


def _idcg_table(max_n: int) -> np.ndarray:
    gains = 1.0 / np.log2(np.arange(max_n) + 2.0)
    return np.concatenate([[0.0], np.cumsum(gains)])


def compute_quality(
    events: pa.Table,
    start: datetime,
    end: datetime,
    windows: AttributionWindows,
    as_of: datetime,
) -> dict[tuple[str, str], VariantQuality]:
    """Per (variant, model_version) counts for impressions served in ``[start, end)``.

    ``events`` must contain the impressions of the window and the feedback up to ``as_of``
    (extra rows are ignored). Feedback after ``as_of`` is ignored, so recomputing a window later
    with more data only adds labels inside the attribution windows.
    """
    t = _prepare(events)
    start_ms, end_ms, as_of_ms = to_ms(start), to_ms(end), to_ms(as_of)
    et = t["event_type"]
    is_imp = pc.and_(
        pc.and_(pc.equal(et, "impression"), pc.is_valid(t["recommendation_id"])),
        pc.and_(pc.greater_equal(t["ts"], start_ms), pc.less(t["ts"], end_ms)),
    )
    imp = t.filter(is_imp).select(
        ["recommendation_id", "item_id", "position", "variant", "model_version", "ts"]
    )
    imp = imp.set_column(2, "position", pc.fill_null(imp["position"], 0))
    imp = imp.set_column(3, "variant", pc.fill_null(imp["variant"], "unknown"))
    imp = imp.set_column(4, "model_version", pc.fill_null(imp["model_version"], "unknown"))
    result: dict[tuple[str, str], VariantQuality] = {}
    if imp.num_rows == 0:
        return result

    lists = imp.group_by(["recommendation_id"], use_threads=False).aggregate(
        [("ts", "min"), ("variant", "first"), ("model_version", "first"), ("item_id", "count")]
    )
    lists = lists.rename_columns(
        {
            "ts_min": "list_ts",
            "variant_first": "variant",
            "model_version_first": "model_version",
            "item_id_count": "n_items",
        }
    )
    per_variant = lists.group_by(["variant", "model_version"], use_threads=False).aggregate(
        [("recommendation_id", "count"), ("n_items", "sum")]
    )
    for row in per_variant.to_pylist():
        key = (row["variant"], row["model_version"])
        result[key] = VariantQuality(
            variant=key[0],
            model_version=key[1],
            lists=int(row["recommendation_id_count"]),
            impressions=int(row["n_items_sum"]),
        )

    is_fb = pc.and_(
        pc.and_(pc.is_in(et, pa.array(FEEDBACK_TYPES)), pc.is_valid(t["recommendation_id"])),
        pc.and_(pc.greater_equal(t["ts"], start_ms - CLOCK_SKEW_MS), pc.less(t["ts"], as_of_ms)),
    )
    fb = t.filter(is_fb).select(["recommendation_id", "item_id", "event_type", "ts", "price", "quantity"])
    if fb.num_rows == 0:
        return result
    fb = fb.rename_columns(["recommendation_id", "item_id", "event_type", "fb_ts", "price", "quantity"])
    # Only impressions of lists that got feedback can match: shrinking the build side first makes
    # the hash join cost the size of the feedback, not of the window's impressions.
    touched = imp.filter(pc.is_in(imp["recommendation_id"], pc.unique(fb["recommendation_id"])))
    joined = fb.join(
        touched.select(["recommendation_id", "item_id", "position", "variant", "model_version", "ts"]),
        keys=["recommendation_id", "item_id"],
        join_type="inner",
        use_threads=False,
    )
    if joined.num_rows == 0:
        return result
    delay = pc.subtract(joined["fb_ts"], joined["ts"])
    fet = joined["event_type"]
    limit = pc.if_else(
        pc.equal(fet, "click"),
        windows.click * 1000,
        pc.if_else(pc.equal(fet, "add_to_cart"), windows.add_to_cart * 1000, windows.purchase * 1000),
    )
    attributed = joined.filter(pc.and_(pc.greater_equal(delay, -CLOCK_SKEW_MS), pc.less_equal(delay, limit)))
    delay = pc.subtract(attributed["fb_ts"], attributed["ts"])
    attributed = attributed.append_column("delay", delay)

    clicks = attributed.filter(pc.equal(attributed["event_type"], "click"))
    if clicks.num_rows:
        _add_clicks(result, clicks, windows)
    for etype, field_name in (("add_to_cart", "carted_lists"), ("purchase", "purchased_lists")):
        rows = attributed.filter(pc.equal(attributed["event_type"], etype))
        if rows.num_rows == 0:
            continue
        per_list = rows.group_by(["recommendation_id"], use_threads=False).aggregate(
            [("variant", "first"), ("model_version", "first")]
        )
        per_list = per_list.rename_columns(
            {"variant_first": "variant", "model_version_first": "model_version"}
        )
        counts = per_list.group_by(["variant", "model_version"], use_threads=False).aggregate(
            [("recommendation_id", "count")]
        )
        for row in counts.to_pylist():
            q = result[(row["variant"], row["model_version"])]
            setattr(q, field_name, int(row["recommendation_id_count"]))
        if etype == "purchase":
            qty = pc.fill_null(rows["quantity"], 1.0)
            amount = pc.multiply(pc.fill_null(rows["price"], 0.0), qty)
            rev = (
                pa.table(
                    {"variant": rows["variant"], "model_version": rows["model_version"], "amount": amount}
                )
                .group_by(["variant", "model_version"], use_threads=False)
                .aggregate([("amount", "sum")])
            )
            for row in rev.to_pylist():
                result[(row["variant"], row["model_version"])].revenue = float(row["amount_sum"] or 0.0)
    return result


def _add_clicks(
    result: dict[tuple[str, str], VariantQuality], clicks: pa.Table, windows: AttributionWindows
) -> None:
    """Clicked impressions, clicked lists, early-clicked lists and NDCG of clicked positions."""
    pairs = clicks.group_by(["recommendation_id", "item_id"], use_threads=False).aggregate(
        [("position", "min"), ("variant", "first"), ("model_version", "first"), ("delay", "min")]
    )
    pos = pairs["position_min"].to_numpy(zero_copy_only=False).astype(np.float64)
    gain = 1.0 / np.log2(pos + 2.0)
    early = pc.less_equal(pairs["delay_min"], windows.early_click * 1000)
    pairs = pa.table(
        {
            "recommendation_id": pairs["recommendation_id"],
            "item_id": pairs["item_id"],
            "variant": pairs["variant_first"],
            "model_version": pairs["model_version_first"],
            "gain": pa.array(gain),
            "early": pc.cast(early, pa.int64()),
        }
    )
    per_list = pairs.group_by(["recommendation_id"], use_threads=False).aggregate(
        [
            ("gain", "sum"),
            ("item_id", "count"),
            ("variant", "first"),
            ("model_version", "first"),
            ("early", "max"),
        ]
    )
    n = per_list["item_id_count"].to_numpy(zero_copy_only=False)
    idcg = _idcg_table(int(n.max()) if len(n) else 1)[n]
    ndcg = per_list["gain_sum"].to_numpy(zero_copy_only=False) / idcg
    per_list = pa.table(
        {
            "recommendation_id": per_list["recommendation_id"],
            "variant": per_list["variant_first"],
            "model_version": per_list["model_version_first"],
            "item_id_count": per_list["item_id_count"],
            "early_max": per_list["early_max"],
            "ndcg": pa.array(np.minimum(ndcg, 1.0)),
        }
    )
    agg = per_list.group_by(["variant", "model_version"], use_threads=False).aggregate(
        [("item_id_count", "sum"), ("recommendation_id", "count"), ("ndcg", "sum"), ("early_max", "sum")]
    )
    for row in agg.to_pylist():
        q = result[(row["variant"], row["model_version"])]
        q.clicked_impressions = int(row["item_id_count_sum"])
        q.clicked_lists = int(row["recommendation_id_count"])
        q.ndcg_sum = float(row["ndcg_sum"])
        q.early_clicked_lists = int(row["early_max_sum"])


def rate_metrics(q: VariantQuality, families: tuple[str, ...], min_lists: int) -> dict[str, float]:
    """The publishable rates of one variant for the mature families, if the sample is big enough."""
    if q.lists < min_lists:
        return {}
    out: dict[str, float] = {}
    if "click" in families:
        out.update(CTR=q.ctr or 0.0, ListCTR=q.list_ctr or 0.0)
        if q.ndcg is not None:
            out["ClickNDCG"] = q.ndcg
    if "add_to_cart" in families:
        out["AddToCartRate"] = q.add_to_cart_rate or 0.0
    if "purchase" in families:
        out["ConversionRate"] = q.conversion_rate or 0.0
        out["RevenuePerMille"] = q.revenue_per_mille or 0.0
    return {k: v for k, v in out.items() if math.isfinite(v)}


INTERLEAVED = "interleaved"


@dataclass
class InterleavingCounts:
    """Per-list credit of one window's interleaved lists between two model versions.

    A list is *won* by the version whose items got more of its clicks (credited to the version that
    contributed each item); lists without clicks, or with as many for each, are ties and carry no
    information about which ranking is better. ``early_*`` count only clicks within the early-click
    window, ``purchase_*`` purchases within theirs.
    """

    lists: int = 0
    wins: dict[str, int] = field(default_factory=dict)
    early_wins: dict[str, int] = field(default_factory=dict)
    purchase_wins: dict[str, int] = field(default_factory=dict)
    impressions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def compute_interleaving(
    events: pa.Table, start: datetime, end: datetime, windows: AttributionWindows, as_of: datetime
) -> InterleavingCounts:
    """Wins per contributing version over the interleaved lists served in ``[start, end)``.

    Feedback is matched as in :func:`compute_quality` (same ``recommendation_id`` and ``item_id``,
    within the attribution window of its type, client clock skew tolerated), then credited to the
    version that contributed the item (the impression row's ``model_version``).
    """
    t = _prepare(events)
    start_ms, end_ms, as_of_ms = to_ms(start), to_ms(end), to_ms(as_of)
    et = t["event_type"]
    imp = t.filter(
        pc.and_(
            pc.and_(pc.equal(et, "impression"), pc.equal(t["variant"], INTERLEAVED)),
            pc.and_(pc.greater_equal(t["ts"], start_ms), pc.less(t["ts"], end_ms)),
        )
    ).select(["recommendation_id", "item_id", "model_version", "ts"])
    out = InterleavingCounts()
    if imp.num_rows == 0:
        return out
    imp = imp.set_column(2, "model_version", pc.fill_null(imp["model_version"], "unknown"))
    out.lists = len(pc.unique(imp["recommendation_id"]))
    per_version = imp.group_by(["model_version"], use_threads=False).aggregate([("item_id", "count")])
    out.impressions = {str(r["model_version"]): int(r["item_id_count"]) for r in per_version.to_pylist()}
    fb = t.filter(
        pc.and_(
            pc.and_(pc.is_in(et, pa.array(("click", "purchase"))), pc.is_valid(t["recommendation_id"])),
            pc.and_(pc.greater_equal(t["ts"], start_ms - CLOCK_SKEW_MS), pc.less(t["ts"], as_of_ms)),
        )
    ).select(["recommendation_id", "item_id", "event_type", "ts"])
    if fb.num_rows == 0:
        return out
    fb = fb.rename_columns(["recommendation_id", "item_id", "event_type", "fb_ts"])
    touched = imp.filter(pc.is_in(imp["recommendation_id"], pc.unique(fb["recommendation_id"])))
    joined = fb.join(touched, keys=["recommendation_id", "item_id"], join_type="inner", use_threads=False)
    if joined.num_rows == 0:
        return out
    delay = pc.subtract(joined["fb_ts"], joined["ts"])
    is_click = pc.equal(joined["event_type"], "click")
    limit = pc.if_else(is_click, windows.click * 1000, windows.purchase * 1000)
    joined = joined.append_column("delay", delay).filter(
        pc.and_(pc.greater_equal(delay, -CLOCK_SKEW_MS), pc.less_equal(delay, limit))
    )
    is_click = pc.equal(joined["event_type"], "click")
    early = pc.and_(is_click, pc.less_equal(joined["delay"], windows.early_click * 1000))
    for mask, target in ((is_click, out.wins), (early, out.early_wins)):
        _credit(joined.filter(mask), target)
    _credit(joined.filter(pc.equal(joined["event_type"], "purchase")), out.purchase_wins)
    return out


def _credit(rows: pa.Table, target: dict[str, int]) -> None:
    """Count, per version, the lists it won: more distinct credited items than any other version."""
    if rows.num_rows == 0:
        return
    pairs = rows.group_by(["recommendation_id", "item_id"], use_threads=False).aggregate(
        [("model_version", "first")]
    )
    per = pairs.group_by(["recommendation_id", "model_version_first"], use_threads=False).aggregate(
        [("item_id", "count")]
    )
    best: dict[str, tuple[int, str | None]] = {}
    for r in per.to_pylist():
        rid, version, n = r["recommendation_id"], str(r["model_version_first"]), int(r["item_id_count"])
        cur = best.get(rid)
        if cur is None or n > cur[0]:
            best[rid] = (n, version)
        elif n == cur[0]:
            best[rid] = (n, None)  # a tie carries no preference
    for _n, winner in best.values():
        if winner is not None:
            target[winner] = target.get(winner, 0) + 1


USER_HASH_PATTERN = '"user_hash":\\s*"(?P<v>[^"]*)"'


def _list_users(imp: pa.Table) -> pa.Array | pa.ChunkedArray:
    """Each impression's shopper: the served list's ``user_hash`` (its properties), else the list itself.

    A list whose shopper is unknown (an older served-list line, an anonymous request without a
    session) counts as a shopper of its own, which is what the list-level comparison assumed.
    """
    rec = imp["recommendation_id"]
    if "properties" not in imp.column_names:
        return rec
    props = pc.cast(imp["properties"], pa.string())
    got = pc.struct_field(pc.extract_regex(props, USER_HASH_PATTERN), [0])
    return pc.if_else(pc.is_valid(got), got, rec)


def shopper_counts(
    events: pa.Table, start: datetime, end: datetime, windows: AttributionWindows, as_of: datetime
) -> dict[tuple[str, str], tuple[list[str], list[int], list[int]]]:
    """Per (variant, model_version): each shopper's lists served in ``[start, end)`` and how many got a
    click (matched as in :func:`compute_quality`: same list and item, within the click window,
    feedback up to ``as_of``). Interleaved lists are not counted (their unit is the list's credit)."""
    start_ms, end_ms, as_of_ms = to_ms(start), to_ms(end), to_ms(as_of)
    t = _prepare(events)
    if "properties" in events.column_names:
        t = t.append_column("properties", events["properties"])
    et = t["event_type"]
    imp = t.filter(
        pc.and_(
            pc.and_(pc.equal(et, "impression"), pc.is_valid(t["recommendation_id"])),
            pc.and_(
                pc.and_(pc.greater_equal(t["ts"], start_ms), pc.less(t["ts"], end_ms)),
                pc.is_in(t["variant"], pa.array(("champion", "challenger"))),
            ),
        )
    )
    out: dict[tuple[str, str], tuple[list[str], list[int], list[int]]] = {}
    if imp.num_rows == 0:
        return out
    imp = imp.set_column(
        imp.column_names.index("model_version"),
        "model_version",
        pc.fill_null(imp["model_version"], "unknown"),
    )
    lists = (
        pa.table(
            {
                "recommendation_id": imp["recommendation_id"],
                "user": _list_users(imp),
                "variant": imp["variant"],
                "model_version": imp["model_version"],
            }
        )
        .group_by(["recommendation_id"], use_threads=False)
        .aggregate([("user", "first"), ("variant", "first"), ("model_version", "first")])
    )
    fb = t.filter(
        pc.and_(
            pc.and_(pc.equal(et, "click"), pc.is_valid(t["recommendation_id"])),
            pc.and_(pc.greater_equal(t["ts"], start_ms - CLOCK_SKEW_MS), pc.less(t["ts"], as_of_ms)),
        )
    ).select(["recommendation_id", "item_id", "ts"])
    clicked = pa.array([], pa.string())
    if fb.num_rows:
        fb = fb.rename_columns(["recommendation_id", "item_id", "fb_ts"])
        joined = fb.join(
            imp.select(["recommendation_id", "item_id", "ts"]),
            keys=["recommendation_id", "item_id"],
            join_type="inner",
            use_threads=False,
        )
        delay = pc.subtract(joined["fb_ts"], joined["ts"])
        ok = pc.and_(pc.greater_equal(delay, -CLOCK_SKEW_MS), pc.less_equal(delay, windows.click * 1000))
        clicked = pc.unique(joined.filter(ok)["recommendation_id"])
    lists = lists.append_column("clicked", pc.cast(pc.is_in(lists["recommendation_id"], clicked), pa.int64()))
    per = lists.group_by(["variant_first", "model_version_first", "user_first"], use_threads=False).aggregate(
        [("recommendation_id", "count"), ("clicked", "sum")]
    )
    for variant, version in {
        (v, m)
        for v, m in zip(per["variant_first"].to_pylist(), per["model_version_first"].to_pylist(), strict=True)
    }:
        mine = per.filter(
            pc.and_(pc.equal(per["variant_first"], variant), pc.equal(per["model_version_first"], version))
        )
        out[(str(variant), str(version))] = (
            [str(u) for u in mine["user_first"].to_pylist()],
            [int(n) for n in mine["recommendation_id_count"].to_pylist()],
            [int(x) for x in mine["clicked_sum"].to_pylist()],
        )
    return out
