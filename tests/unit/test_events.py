from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shelfwise.cli import main
from shelfwise.events import EVENT_TYPES, EVENT_WEIGHTS, Event, derive_event_id


def test_every_event_type_has_a_weight() -> None:
    assert set(EVENT_WEIGHTS) == set(EVENT_TYPES)
    assert (
        EVENT_WEIGHTS["view"]
        < EVENT_WEIGHTS["click"]
        < EVENT_WEIGHTS["add_to_cart"]
        < EVENT_WEIGHTS["purchase"]
    )


def test_derived_ids_are_deterministic_and_distinguish_none_from_text() -> None:
    assert derive_event_id("a", 1, None) == derive_event_id("a", 1, None)
    assert derive_event_id("a", None) != derive_event_id("a", "None")
    assert derive_event_id("ab", "c") != derive_event_id("a", "bc")


def test_event_requires_an_actor_and_an_item() -> None:
    with pytest.raises(ValidationError, match="user_id or session_id"):
        Event(event_type="view", item_id="i", timestamp=datetime.now(UTC))
    with pytest.raises(ValidationError, match="item_id is required"):
        Event(event_type="purchase", user_id="u", timestamp=datetime.now(UTC))
    search = Event(event_type="search", session_id="s", query="red mug", timestamp="2026-01-01T10:00:00")
    assert search.timestamp.tzinfo is not None


def test_cli_lists_commands_and_rejects_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "ingest" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
