"""The Arrow schema of curated events and the quarantine reasons, built from ``shelfwise.events``.

Kept apart from ``shelfwise.events`` so that the serving path (which validates API bodies with the
Pydantic model) never imports pyarrow.
"""

from __future__ import annotations

import pyarrow as pa

from shelfwise.events import DERIVED_COLUMNS, EVENT_TYPES, EVENT_WEIGHTS, NATIVE_COLUMNS

TIMESTAMP_TYPE = pa.timestamp("ms", tz="UTC")
EVENT_TYPE_TYPE = pa.dictionary(pa.int8(), pa.string())

# The dictionary of `event_type` is fixed (the order of EVENT_TYPES), so every batch and every file
# shares it and readers can concatenate curated data without unifying dictionaries.
EVENT_TYPE_VALUES = pa.array(EVENT_TYPES, pa.string())
EVENT_WEIGHT_BY_INDEX = pa.array([EVENT_WEIGHTS[t] for t in EVENT_TYPES], pa.float32())

_TYPES: dict[str, pa.DataType] = {
    "event_id": pa.string(),
    "event_type": EVENT_TYPE_TYPE,
    "user_id": pa.string(),
    "session_id": pa.string(),
    "item_id": pa.string(),
    "timestamp": TIMESTAMP_TYPE,
    "price": pa.float64(),
    "quantity": pa.float64(),
    "query": pa.string(),
    "recommendation_id": pa.string(),
    "position": pa.int32(),
    "category": pa.string(),
    "variant": pa.string(),
    "model_version": pa.string(),
    "score": pa.float32(),
    "properties": pa.string(),
    "weight": pa.float32(),
    "hour": pa.int8(),
    "dow": pa.int8(),
    "source_format": pa.string(),
    "source_key": pa.string(),
    "source_line": pa.int64(),
    "schema_version": pa.int16(),
}
_NOT_NULL = {"event_id", "event_type", "session_id", "timestamp", "weight", "hour", "dow", "schema_version"}

CURATED_SCHEMA = pa.schema(
    [
        pa.field(name, _TYPES[name], nullable=name not in _NOT_NULL)
        for name in NATIVE_COLUMNS + DERIVED_COLUMNS
    ]
)
CURATED_COLUMNS: tuple[str, ...] = tuple(CURATED_SCHEMA.names)

# Parquet dictionary encoding for the low-cardinality and id columns (not event_id, which is unique,
# nor session_id, whose cardinality overflows a dictionary page and falls back at a cost).
DICTIONARY_COLUMNS = [
    "event_type",
    "user_id",
    "item_id",
    "category",
    "variant",
    "model_version",
    "source_format",
    "source_key",
]

# Quarantine reasons, in priority order: a bad row is filed under the first reason that applies.
REASONS: tuple[str, ...] = (
    "",  # 0 = valid
    "malformed_row",  # wrong number of fields, not a JSON object
    "invalid_utf8",
    "missing_event_type",
    "unknown_event_type",
    "missing_timestamp",
    "bad_timestamp",
    "timestamp_out_of_range",
    "missing_user_and_session",
    "missing_item_id",
    "wrong_type",
    "negative_price",
    "negative_quantity",
    "invalid_position",
    "oversize_field",
    "malformed_served_list",  # a served-list line that breaks its contract (filed whole)
    "number_out_of_range",  # price or quantity above the API's bounds (shelfwise.events)
)
REASON_CODE = {name: code for code, name in enumerate(REASONS) if name}
# The reason whose records also state the range they missed (events and catalogue rows alike).
OUT_OF_RANGE = "timestamp_out_of_range"
