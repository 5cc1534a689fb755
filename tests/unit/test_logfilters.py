"""CloudWatch Logs filter patterns, as the local runtime's subscription filters apply them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfwise.served_lists import FILTER_PATTERN, served_list_line
from shelfwise_local.runtime.logfilters import UnsupportedPatternError, compile_pattern

EVENT = json.dumps(
    {
        "shelfwise": "served_list",
        "k": 20,
        "ratio": 0.25,
        "variant": "challenger",
        "ok": True,
        "gone": None,
        "user": {"tier": "gold", "tags": ["a", "b"]},
    }
)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ('{ $.shelfwise = "served_list" }', True),
        ('{$.shelfwise="served_list"}', True),
        ("{ $.shelfwise = served_list }", True),  # bare strings
        ('{ $.shelfwise = "served" }', False),
        ('{ $.shelfwise = "served*" }', True),  # wildcard
        ('{ $.shelfwise != "served_list" }', False),
        ('{ $.variant != "champion" }', True),
        ('{ $.missing = "x" }', False),
        ("{ $.k = 20 }", True),
        ("{ $.k > 19 && $.k <= 20 }", True),
        ("{ $.k >= 21 }", False),
        ("{ $.ratio < 0.5 }", True),
        ('{ $.k = "20" }', False),  # a string never equals a number
        ('{ $.user.tier = "gold" }', True),
        ('{ $.user.tags[1] = "b" }', True),
        ('{ $.user.tags[5] = "b" }', False),
        ("{ $.gone IS NULL }", True),
        ("{ $.ok IS TRUE }", True),
        ("{ $.ok IS FALSE }", False),
        ("{ $.nothing NOT EXISTS }", True),
        ("{ $.k NOT EXISTS }", False),
        ('{ $.k = 1 || $.variant = "challenger" }', True),
        ('{ ($.k = 1 || $.k = 20) && $.variant = "champion" }', False),
        ("{ $.k = 1 && $.k = 2 || $.ok IS TRUE }", True),  # && binds tighter than ||
        ("", True),
        ("served_list", True),
        ('"variant":"challenger" 20', False),  # terms match the raw text
        ("challenger -champion", True),
        ("challenger -gold", False),
        ("?nothing ?gold", True),
    ],
)
def test_patterns_match_as_cloudwatch_logs_documents(pattern: str, expected: bool) -> None:
    assert compile_pattern(pattern)(EVENT) is expected


def test_json_patterns_match_only_json_object_events() -> None:
    match = compile_pattern('{ $.shelfwise = "served_list" }')
    assert not match("served_list but plain text")
    assert not match('["not", "an", "object"]')
    assert not match('{"shelfwise": "served_list"')  # truncated
    assert match('  {"shelfwise": "served_list"}  ')


@pytest.mark.parametrize(
    "pattern",
    [
        "[ip, user, status = 404]",
        "%ERROR [0-9]+%",
        '{ $.* = "x" }',
        '{ $.a IN ["x", "y"] }',
        '{ $.a = "x"',
        '{ $.a > "x" }',
        "{ $.a IS MAYBE }",
        "?a b",
    ],
)
def test_unsupported_patterns_are_refused_not_guessed(pattern: str) -> None:
    with pytest.raises(UnsupportedPatternError):
        compile_pattern(pattern)


@given(
    rec_id=st.text(min_size=1, max_size=20),
    items=st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=5),
)
def test_the_templates_pattern_selects_every_served_list_line_and_no_emf_line(
    rec_id: str, items: list[str]
) -> None:
    match = compile_pattern(FILTER_PATTERN)
    line = served_list_line((rec_id, "champion", "v1", "search", 5, 0.0, items, [0.5] * len(items)))
    assert match(line.rstrip("\n")) and match(line)  # Lambda keeps the newline in the message
    emf = {"_aws": {"CloudWatchMetrics": []}, "shelfwise": "metrics", "Latency": 3.1}
    assert not match(json.dumps(emf))
