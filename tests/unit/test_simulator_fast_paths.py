"""The simulator's fast paths give exactly what the plain ways give (the files depend on it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.simulator import ShopParams, simulate_to_files
from shelfwise.simulator.blocks import take_rows, time_order
from shelfwise.simulator.export import _Coded, _Digits, _ints, _lines, iso_timestamps

MAX_MS = 4_102_444_799_999  # 2099-12-31


@settings(max_examples=80)
@given(
    st.lists(st.integers(min_value=0, max_value=50), max_size=300),
    st.sampled_from([1, 1000, 86_400_000, 2**45]),
)
def test_time_order_is_the_stable_argsort(offsets: list[int], scale: int) -> None:
    ts = 1_767_571_200_000 + np.array(offsets, dtype=np.int64) * scale  # many ties
    assert time_order(ts).tolist() == np.argsort(ts, kind="stable").tolist()


def test_take_rows_is_take_on_the_first_axis() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((50, 16)).astype(np.float32)
    idx = rng.integers(0, 50, 400)
    assert np.array_equal(take_rows(a, idx), np.take(a, idx, axis=0))
    assert take_rows(a, idx[:0]).shape == (0, 16)


_naturals = st.integers(min_value=0, max_value=10**15)


@st.composite
def _cells(draw: st.DrawFn) -> tuple[list[object], int]:
    """A few columns of every kind the exporter uses, with empty values, over n rows."""
    n = draw(st.integers(min_value=1, max_value=40))
    rows = st.lists(_naturals, min_size=n, max_size=n)
    null = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    same = draw(st.integers(min_value=0, max_value=10**12))
    names = tuple(draw(st.lists(st.text("abcxyz/ ", min_size=1, max_size=6), min_size=1, max_size=5)))
    codes = np.array(draw(st.lists(st.integers(-1, len(names) - 1), min_size=n, max_size=n)))
    stamps = np.array(draw(st.lists(st.integers(0, MAX_MS), min_size=n, max_size=n)))
    cells = [
        _Digits(same + np.arange(n, dtype=np.int64), "1f-"),  # one width: the numpy path
        _Digits(np.array(draw(rows), dtype=np.int64)),  # widths vary: Arrow's cast
        _ints(np.array(draw(rows), dtype=np.int64), null),  # Arrow's text, with empty values
        iso_timestamps(stamps),
        _Coded(codes, names),
        _Coded(None),
        _Coded(codes[::-1].copy(), names),
    ]
    picked = draw(st.lists(st.sampled_from(range(len(cells))), min_size=1, max_size=6))
    return [cells[i] for i in picked], n


@settings(max_examples=150)
@given(_cells())
def test_lines_are_what_arrows_csv_writer_writes(drawn: tuple[list[object], int]) -> None:
    cells, n = drawn
    arrays = [c if isinstance(c, pa.Array) else c.array(n) for c in cells]  # type: ignore[attr-defined]
    table = pa.table({f"c{i}": a for i, a in enumerate(arrays)})
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(quoting_style="none", include_header=False))
    assert bytes(_lines(cells, n)) == buf.getvalue()  # type: ignore[arg-type]


@settings(max_examples=60)
@given(st.lists(_naturals, min_size=1, max_size=30), st.text("ab-", max_size=3))
def test_digits_are_decimal_text(values: list[int], prefix: str) -> None:
    got = _Digits(np.array(values, dtype=np.int64), prefix).array(len(values)).to_pylist()
    assert got == [f"{prefix}{v}" for v in values]


def test_workers_report_their_cpu_and_memory(tmp_path: Path) -> None:
    result = simulate_to_files(ShopParams(n_users=800, n_items=200, n_days=3), 5, tmp_path, workers=2)
    assert 1 <= len(result.workers) <= 2
    assert {w["pid"] for w in result.workers}.isdisjoint({0})
    assert all(w["peak_rss_mb"] > 0 and w["cpu_seconds"] >= 0 for w in result.workers)
    assert (
        simulate_to_files(ShopParams(n_users=800, n_items=200, n_days=3), 5, tmp_path / "one").workers == []
    )
