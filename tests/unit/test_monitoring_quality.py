"""Quality from delayed labels: golden numbers on tiny hand-made tables, and properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.errors import InputError
from shelfwise.monitoring.config import AttributionWindows
from shelfwise.monitoring.quality import compute_quality, mature_families, rate_metrics

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
W = AttributionWindows()
LATER = T0 + timedelta(days=3)


def table(rows: list[dict]) -> pa.Table:
    schema = pa.schema(
        [
            ("event_type", pa.dictionary(pa.int32(), pa.string())),
            ("recommendation_id", pa.string()),
            ("item_id", pa.string()),
            ("timestamp", pa.timestamp("ms", tz="UTC")),
            ("position", pa.int32()),
            ("score", pa.float32()),
            ("variant", pa.string()),
            ("model_version", pa.string()),
            ("price", pa.float64()),
            ("quantity", pa.float64()),
        ]
    )
    full = [{f.name: r.get(f.name) for f in schema} for r in rows]
    return pa.Table.from_pylist(full, schema=schema)


def imp(rid: str, items: list[str], variant: str, version: str, at: float = 10) -> list[dict]:
    return [
        dict(
            event_type="impression",
            recommendation_id=rid,
            item_id=it,
            timestamp=T0 + timedelta(seconds=at),
            position=p,
            score=1.0 - 0.1 * p,
            variant=variant,
            model_version=version,
        )
        for p, it in enumerate(items)
    ]


def fb(kind: str, rid: str, item: str, at: float, **kw: float) -> dict:
    return dict(
        event_type=kind, recommendation_id=rid, item_id=item, timestamp=T0 + timedelta(seconds=at), **kw
    )


def golden_rows() -> list[dict]:
    rows = imp("r1", ["a", "b", "c"], "champion", "v1") + imp("r2", ["a", "b", "c"], "challenger", "v2")
    rows += imp("r3", ["d", "e"], "champion", "v1")
    rows += [
        fb("click", "r1", "b", 20),
        fb("click", "r1", "b", 25),  # a double click counts once
        fb("click", "r1", "c", 4000),  # after the 30-minute click window
        fb("click", "r1", "zzz", 30),  # not in the list: not attributed
        fb("add_to_cart", "r1", "b", 60),
        fb("purchase", "r1", "b", 100, price=10.0, quantity=2),
        fb("click", "r2", "a", 30),
        fb("click", "r2", "c", 400),  # a late-ish click: in the window, not early
        fb("click", "r3", "e", 31),
    ]
    return rows


def test_golden_counts_and_rates() -> None:
    q = compute_quality(table(golden_rows()), T0, T0 + timedelta(minutes=5), W, as_of=LATER)
    champ, chall = q[("champion", "v1")], q[("challenger", "v2")]
    assert (champ.impressions, champ.lists) == (5, 2)
    assert (champ.clicked_impressions, champ.clicked_lists, champ.early_clicked_lists) == (2, 2, 2)
    assert (champ.carted_lists, champ.purchased_lists, champ.revenue) == (1, 1, 20.0)
    # r1 clicked position 1 -> 1/log2(3); r3 clicked position 1 -> 1/log2(3); both IDCG 1.
    assert champ.ndcg == pytest.approx(1 / math.log2(3))
    assert champ.ctr == pytest.approx(2 / 5)
    assert champ.revenue_per_mille == pytest.approx(1000 * 20 / 5)
    assert (chall.clicked_impressions, chall.clicked_lists, chall.early_clicked_lists) == (2, 1, 1)
    # r2 clicked positions 0 and 2: (1 + 1/2) / (1 + 1/log2(3)).
    assert chall.ndcg == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert chall.list_ctr == 1.0


def test_feedback_after_as_of_is_ignored() -> None:
    q = compute_quality(
        table(golden_rows()), T0, T0 + timedelta(minutes=5), W, as_of=T0 + timedelta(seconds=22)
    )
    assert q[("champion", "v1")].clicked_lists == 1
    assert q[("challenger", "v2")].clicked_lists == 0


def test_impressions_outside_window_do_not_count() -> None:
    rows = golden_rows() + imp("r9", ["x"], "champion", "v1", at=400)
    q = compute_quality(table(rows), T0, T0 + timedelta(minutes=5), W, as_of=LATER)
    assert q[("champion", "v1")].lists == 2


def test_missing_columns_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="lacks columns"):
        compute_quality(pa.table({"event_type": ["click"]}), T0, T0, W, as_of=T0)


def test_maturity_per_family() -> None:
    end = T0 + timedelta(minutes=5)
    assert mature_families(end, end + timedelta(minutes=29), W) == ()
    assert mature_families(end, end + timedelta(minutes=30), W) == ("click",)
    assert mature_families(end, end + timedelta(hours=24), W) == ("click", "add_to_cart", "purchase")


def test_rate_metrics_respect_guard_and_families() -> None:
    q = compute_quality(table(golden_rows()), T0, T0 + timedelta(minutes=5), W, as_of=LATER)[
        ("champion", "v1")
    ]
    assert rate_metrics(q, ("click",), min_lists=3) == {}
    out = rate_metrics(q, ("click",), min_lists=1)
    assert set(out) == {"CTR", "ListCTR", "ClickNDCG"}
    assert "ConversionRate" in rate_metrics(q, ("click", "add_to_cart", "purchase"), min_lists=1)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),
            st.integers(0, 3),
            st.sampled_from(["click", "add_to_cart", "purchase"]),
            st.integers(-30, 90_000),
        ),
        max_size=40,
    )
)
def test_rates_are_bounded(feedback: list[tuple[int, int, str, int]]) -> None:
    rows = []
    for r in range(6):
        rows += imp(f"r{r}", ["a", "b", "c", "d"], "champion" if r % 2 else "challenger", "v")
    for r, pos, kind, at in feedback:
        rows.append(fb(kind, f"r{r}", "abcd"[pos], 10 + at, price=1.0))
    q = compute_quality(table(rows), T0, T0 + timedelta(minutes=5), W, as_of=LATER)
    for v in q.values():
        assert 0 <= v.clicked_impressions <= v.impressions
        assert 0 <= v.early_clicked_lists <= v.clicked_lists <= v.lists
        assert 0 <= v.purchased_lists <= v.lists and 0 <= v.carted_lists <= v.lists
        if v.ndcg is not None:
            assert 0 < v.ndcg <= 1.0 + 1e-12
