"""The floor of accepted event times: a deployment's setting that the ingest and the events API share.

By default only the impossible is refused (before the Unix epoch, :data:`shelfwise.events.MIN_TIMESTAMP`);
a stack that knows its data starts later sets ``IngestMinTime`` (template), which reaches the
functions as ``INGEST_MIN_TIME`` and is read here once, at cold start. The CLI's ``--min-time``
reads the same way.
"""

from __future__ import annotations

from functools import cached_property

from pydantic import BaseModel, field_validator

from shelfwise.errors import InputError
from shelfwise.events import MIN_TS_MS
from shelfwise.instants import epoch_ms

VARIABLE = "INGEST_MIN_TIME"


def floor_ms(value: str, what: str) -> int:
    """A configured floor (ISO 8601 date or time, UTC unless it names a zone) in epoch ms; empty
    means the default, the Unix epoch. Unreadable: ``InputError`` naming ``what`` (the flag or
    variable the value came from)."""
    if not value.strip():
        return MIN_TS_MS
    try:
        return epoch_ms(value, what)
    except InputError as exc:
        raise InputError(
            f"{what} must be an ISO 8601 date or time (2000-01-01, 2000-01-01T00:00:00Z), got {value!r}"
        ) from exc


class TimeFloorSettings(BaseModel):
    """A function's floor setting (``INGEST_MIN_TIME``); a bad value fails the cold start."""

    # ISO date or time (UTC unless it names a zone); empty: only times before 1970 are refused.
    ingest_min_time: str = ""

    @field_validator("ingest_min_time")
    @classmethod
    def _a_time(cls, value: str) -> str:
        try:
            floor_ms(value, VARIABLE)
        except InputError as exc:
            raise ValueError(str(exc)) from exc
        return value.strip()

    @cached_property
    def min_ts_ms(self) -> int:
        """The floor in epoch milliseconds, as the domain takes it (read once per cold start)."""
        return floor_ms(self.ingest_min_time, VARIABLE)
