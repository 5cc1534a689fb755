"""Reading instants: one rule for every time an AWS event, a stored record or a user gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(value: object, what: str = "time") -> int:
    """``value`` (as :func:`aware_time` reads it) in whole epoch milliseconds, rounded down."""
    return (aware_time(value, what) - _EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with a ``Z``, milliseconds only when there are any."""
    when = _EPOCH + timedelta(milliseconds=int(ms))
    return when.isoformat(timespec="milliseconds" if ms % 1000 else "seconds").replace("+00:00", "Z")
