"""One reading of instants for events, alarms, stored records and command-line flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shelfwise.errors import InputError
from shelfwise.instants import aware_time

pytestmark = pytest.mark.unit

NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-07T12:00:00Z",  # EventBridge, Scheduler
        "2026-12-07T12:00:00.000+0000",  # CloudWatch alarm state timestamps
        "2026-12-07T12:00:00+00:00",  # isoformat()
        "2026-12-07T12:00:00",  # no zone: UTC
        "20261207T120000Z",  # basic format
        " 2026-12-07T13:00:00+01:00 ",
    ],
)
def test_every_spelling_of_one_instant_reads_the_same(text: str) -> None:
    assert aware_time(text) == NOON
    assert aware_time(text).tzinfo is not None


def test_a_datetime_keeps_its_zone_and_a_naive_one_is_utc() -> None:
    plus_one = NOON.astimezone(timezone(timedelta(hours=1)))
    assert aware_time(plus_one) is plus_one
    assert aware_time(datetime(2026, 12, 7, 12, 0)) == NOON
    assert aware_time("2026-12-07") == datetime(2026, 12, 7, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["yesterday", "", None, "2026-13-01", 17])
def test_an_unreadable_time_is_an_input_error_naming_what_it_was(bad: object) -> None:
    with pytest.raises(InputError, match="--since must be an ISO 8601 time"):
        aware_time(bad, "--since")
