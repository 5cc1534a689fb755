"""The event contract (DESIGN.md section 3), shared by ingest, serving, training and monitoring.

Pure Python and Pydantic only: the serving functions validate ``POST /v1/events`` bodies with it
and must not pull pyarrow. The Arrow schema of curated Parquet lives in ``shelfwise.ingest.schema``
and is built from the names here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.instants import aware_time, epoch_ms

SCHEMA_VERSION = 1

EventType = Literal[
    "view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "add_to_wishlist",
    "purchase",
    "return",
    "search",
    "impression",
    "rating",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

# Implicit-feedback strength per event type (view < click < cart < purchase). Used for curated
# `weight`, for matrix factorisation and for session fold-in at serving time.
EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_wishlist": 3.0,
    "rating": 3.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "remove_from_cart": 0.0,
    "return": 0.0,
    "search": 0.0,
    "impression": 0.0,
}

# Events that carry no item (everything else must have item_id).
ITEMLESS_EVENT_TYPES = frozenset({"search"})

# Native columns, in order. `properties` holds unknown extra columns as a JSON object.
NATIVE_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "user_id",
    "session_id",
    "item_id",
    "timestamp",
    "price",
    "quantity",
    "query",
    "recommendation_id",
    "position",
    "category",
    "variant",
    "model_version",
    "score",
    "properties",
)

# Added by the ingest to every curated row.
DERIVED_COLUMNS: tuple[str, ...] = (
    "weight",
    "hour",
    "dow",
    "source_format",
    "source_key",
    "source_line",
    "schema_version",
)

PARTITION_COLUMN = "event_date"

# Limits that keep one hostile value from hurting everyone downstream. The API refuses (422) and
# the ingest quarantines by the same numbers, so an event the API accepted is an event training
# uses: these constants are the one place both read them from.
MAX_ID_LENGTH = 256
MAX_QUERY_LENGTH = 1024
# Free-form properties: their compact JSON text (properties_json) in UTF-8 bytes.
MAX_PROPERTIES_BYTES = 16 * 1024
# Accepted timestamp range by default: anything from the Unix epoch (public logs go back to the
# 1990s: MovieLens 100K is from 1997-98) up to a day into the future (clock skew). Only the
# impossible is refused; a deployment that knows better sets its own floor (IngestOptions.min_ts_ms).
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MIN_TS_MS = epoch_ms(MIN_TIMESTAMP)  # the same floor in epoch milliseconds
MAX_FUTURE_SECONDS = 24 * 3600
# Largest price and quantity of one event (a price of 1e308 is a bug or an attack, not a sale).
MAX_PRICE = 1e9
MAX_QUANTITY = 1e6
MAX_POSITION = 10_000


def properties_json(value: Any) -> str | None:
    """The text free-form properties are stored as (curated ``properties``), compact UTF-8 JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def derive_event_id(*parts: object) -> str:
    """A deterministic event id from the fields that identify an event when the source has none."""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(b"\x1f" if part is None else str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


class Event(BaseModel):
    """One behaviour event as accepted by the ``/v1/events`` API (the native schema)."""

    # built on first use: serving imports this module for its limits, not for the model
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)

    event_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    event_type: EventType
    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    session_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    item_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    timestamp: datetime
    price: float | None = Field(default=None, ge=0, le=MAX_PRICE)
    quantity: float | None = Field(default=None, ge=0, le=MAX_QUANTITY)
    query: str | None = Field(default=None, max_length=MAX_QUERY_LENGTH)
    recommendation_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    position: int | None = Field(default=None, ge=0, le=MAX_POSITION)
    category: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    properties: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Event:
        if self.user_id is None and self.session_id is None:
            raise ValueError("one of user_id or session_id is required")
        if self.item_id is None and self.event_type not in ITEMLESS_EVENT_TYPES:
            raise ValueError(f"item_id is required for event_type {self.event_type!r}")
        if self.timestamp.tzinfo is None:
            self.timestamp = self.timestamp.replace(tzinfo=UTC)
        # The ingest's bounds (timestamp_out_of_range, oversize_field), checked here too.
        latest = datetime.now(UTC) + timedelta(seconds=MAX_FUTURE_SECONDS)
        if not MIN_TIMESTAMP <= self.timestamp <= latest:
            raise ValueError(f"timestamp must be between {MIN_TIMESTAMP:%Y-%m-%d} and a day from now (UTC)")
        if self.properties:
            try:
                size = len((properties_json(self.properties) or "").encode("utf-8"))
            except (ValueError, UnicodeEncodeError) as exc:
                raise ValueError(f"properties cannot be stored: {exc}") from exc
            if size > MAX_PROPERTIES_BYTES:
                raise ValueError(f"properties are {size} bytes of JSON; the limit is {MAX_PROPERTIES_BYTES}")
        return self


def event_time(event: dict[str, Any]) -> datetime:
    """The instant an AWS event (EventBridge schedule or rule) happened, from its ``time`` field.

    Scheduled handlers act "as of" this instant rather than the wall clock, so a late or replayed
    invocation computes the window it was meant for (and the local runtime's clock drives them).
    Every trigger in template.yaml passes one (a rule's own event, Scheduler's
    ``<aws.scheduler.scheduled-time>``, an input transformer's ``$.time``); no ``time``, as in an
    operator's manual invocation, means now.
    """
    raw = event.get("time")
    if not raw:
        return datetime.now(UTC)
    return aware_time(raw, "event time")
