"""Reading instants: one rule for every time an AWS event, a stored record or a user gives."""

from __future__ import annotations

from datetime import UTC, datetime

from shelfwise.errors import InputError


def aware_time(value: object, what: str = "time") -> datetime:
    """``value`` as an aware time: a datetime, or an ISO 8601 string as Python reads it (``Z``,
    ``+0000``, a bare date, the basic format); no zone means UTC. Unreadable: ``InputError``
    naming ``what``."""
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError as exc:
            raise InputError(f"{what} must be an ISO 8601 time, got {value!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)
