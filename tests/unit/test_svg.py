"""The SVG plotter: round ticks with units, a colour per series, gaps not drawn, responsive size."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shelfwise import svg

pytestmark = pytest.mark.unit


@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6))
def test_ticks_are_round_and_cover_the_range(lo: float, span: float) -> None:
    assume(span > 1e-9 * abs(lo))  # a chart's range is never below float resolution
    ticks = svg.nice_ticks(lo, lo + span)
    assert ticks[0] <= lo + 1e-9 * abs(lo) and ticks[-1] >= (lo + span) - 1e-9 * abs(lo + span)
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** int(f"{step:e}".split("e")[1])
    assert any(abs(mantissa - m) < 1e-3 * m for m in (1.0, 2.0, 5.0, 10.0))
    assert 2 <= len(ticks) <= 7


def test_labels_carry_units() -> None:
    assert svg.fmt_value(0.25, "%") == "25%"
    assert svg.fmt_value(25000, "impr.") == "25k impr."
    assert svg.fmt_value(1.5) == "1.5"


def test_every_series_gets_its_own_colour() -> None:
    names = [f"s{i}" for i in range(10)]
    assert len(set(svg.colors(names).values())) == 10
    # a preferred colour is kept once; a second series asking for it gets another
    chosen = svg.colors(["a", "b"], {"a": "#111111", "b": "#111111"})
    assert chosen["a"] == "#111111" and chosen["b"] != "#111111"


def test_a_gap_in_time_breaks_the_line() -> None:
    points = [(t * 300.0, 1.0) for t in range(10)] + [(t * 300.0, 1.0) for t in range(30, 40)]
    assert [len(s) for s in svg.segments(points)] == [10, 10]
    chart = svg.line_chart("x", {"m": points}, time_axis=True)
    assert chart.count("<polyline") == 2
    assert 'viewBox="0 0 ' in chart and not re.search(r'<svg[^>]* width="\d', chart)


def test_histogram_and_bars_render() -> None:
    assert svg.histogram([0.0, 0.5, 1.0], [3, 4], "h").count("<rect") == 2
    assert svg.bar_chart(["a", "b"], {"x": [0.1, 0.2], "y": [0.3, 0.4]}, "t").count("<rect") >= 4
    assert "empty" in svg.histogram([], [], "h")
