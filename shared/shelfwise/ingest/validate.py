"""Vectorised coercion and validation of native columns: typed values and one reason per bad row.

Everything is pyarrow compute or numpy over whole batches. The only per-row Python is the fallback
for values no kernel can parse (bad UTF-8 bytes, exotic timestamp spellings), and it runs only on
batches that contain such values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.events import (
    MAX_FUTURE_SECONDS,
    MAX_ID_LENGTH,
    MAX_POSITION,
    MAX_PRICE,
    MAX_PROPERTIES_BYTES,
    MAX_QUANTITY,
    MAX_QUERY_LENGTH,
    MIN_TS_MS,
)
from shelfwise.ingest.schema import EVENT_TYPE_VALUES, OUT_OF_RANGE, REASON_CODE, TIMESTAMP_TYPE
from shelfwise.instants import iso_ms

# The API's bounds (shelfwise.events), so a file that did not come through the API is held to them.
_MAX_VALUE = {"price": MAX_PRICE, "quantity": MAX_QUANTITY}
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_INTEGER = r"^\s*[+-]?\d+\s*$"
_EPOCH = re.compile(r"^\s*\d{9,13}(\.\d+)?\s*$")
_STRING_LIMITS = {
    "event_id": MAX_ID_LENGTH,
    "event_type": MAX_ID_LENGTH,
    "user_id": MAX_ID_LENGTH,
    "session_id": MAX_ID_LENGTH,
    "item_id": MAX_ID_LENGTH,
    "recommendation_id": MAX_ID_LENGTH,
    "category": MAX_ID_LENGTH,
    "variant": MAX_ID_LENGTH,
    "model_version": MAX_ID_LENGTH,
    "query": MAX_QUERY_LENGTH,
    "properties": MAX_PROPERTIES_BYTES,
}
STRING_COLUMNS = tuple(_STRING_LIMITS)


@dataclass
class Validated:
    """Typed native columns (bad values nulled) and the reason code of every row (0 = valid)."""

    columns: dict[str, pa.Array]
    codes: np.ndarray
    event_type_index: pa.Array  # int8 indices into EVENT_TYPES (null where invalid)
    ts_ms: np.ndarray  # int64 epoch milliseconds (0 where invalid)


class _Codes:
    """Collects (reason, mask) pairs and resolves each row to its highest-priority reason."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.codes = np.zeros(n, np.int8)

    def flag(self, reason: str, mask: pa.Array | np.ndarray | None) -> None:
        if mask is None:
            return
        m = _np_bool(mask)
        if not m.any():
            return
        code = REASON_CODE[reason]
        current = self.codes[m]
        # Lower code = higher priority; 0 = not yet flagged.
        self.codes[m] = np.where((current == 0) | (current > code), code, current)


def _np_bool(mask: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        return mask
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _utf8(arr: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """Binary -> string; values that are not UTF-8 become null and are reported."""
    try:
        return arr.cast(pa.string()), None
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    values = arr.to_pylist()
    bad = np.zeros(len(values), bool)
    out: list[str | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(v.decode("utf-8"))
        except UnicodeDecodeError:
            bad[i] = True
            out.append(None)
    return pa.array(out, pa.string()), bad


def _cast_each(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Cast value by value (the slow path): null and flagged where a value does not fit."""
    out: list[object] = []
    bad: list[bool] = []
    for v in arr.to_pylist():
        try:
            out.append(None if v is None else pc.cast(pa.array([v], arr.type), target, safe=False)[0].as_py())
            bad.append(False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out.append(None)
            bad.append(True)
    return pa.array(out, target), pa.array(bad, pa.bool_())


def _number(arr: pa.Array, target: pa.DataType, pattern: str) -> tuple[pa.Array, pa.Array | None]:
    """Cast to a number; values that are not numbers become null and are reported as wrong_type."""
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        out = pc.cast(arr, target, safe=False) if arr.type != target else arr
        bad = None
    else:
        if arr.type != pa.string():
            arr = pc.cast(arr, pa.string())
        try:
            out = pc.cast(arr, target)
            bad = None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ok = pc.fill_null(pc.match_substring_regex(arr, pattern), True)
            cleaned = pc.utf8_trim_whitespace(pc.if_else(ok, arr, pa.scalar(None, pa.string())))
            bad = pc.invert(ok)
            try:
                out = pc.cast(cleaned, target, safe=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                # A number spelled right but out of the target's range (2**63 for int64).
                out, too_big = _cast_each(cleaned, target)
                bad = pc.or_(bad, too_big)
    if pa.types.is_floating(target):
        finite = pc.fill_null(pc.is_finite(out), True)
        if not pc.all(finite).as_py():
            bad = pc.invert(finite) if bad is None else pc.or_(bad, pc.invert(finite))
            out = pc.if_else(finite, out, pa.scalar(None, target))
    return out, bad


def _parse_ts_slow(value: str) -> int | None:
    s = value.strip()
    if not s:
        return None
    if _EPOCH.match(s):
        x = float(s)
        return int(x if x > 1e11 else x * 1000)
    for candidate in (s.replace("Z", "+00:00").replace("z", "+00:00"),):
        try:
            dt = datetime.fromisoformat(candidate)
        except ValueError:
            break
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    for fmt in ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S"):
        try:
            return int(datetime.strptime(s, fmt).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            continue
    return None


def timestamps_ms(arr: pa.Array, epoch_unit: str | None) -> pa.Array:
    """Epoch milliseconds (int64, null where unparseable) from timestamps, epochs or text."""
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            arr = arr.cast(pa.timestamp(t.unit))
        return pc.cast(pc.cast(arr, pa.timestamp("ms", tz=t.tz), safe=False), pa.int64())
    if pa.types.is_date(t):
        return pc.cast(pc.cast(arr, pa.timestamp("ms")), pa.int64())
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        x = pc.cast(arr, pa.float64(), safe=False)  # epochs beyond 2**53 are nonsense, not a crash
        if epoch_unit is None:
            # Undeclared unit: decided per value, so a file mixing seconds and milliseconds cannot
            # turn its seconds into January 1970. Above 1e11 is milliseconds (1e11 s is the year
            # 5138; 1e11 ms is March 1973); a millisecond epoch before 1973 reads as seconds and
            # lands in the far future, where the range check refuses it.
            scale_arr = pc.if_else(pc.greater(pc.abs(x), 1e11), 1.0, 1000.0)
            return pc.cast(pc.multiply(x, scale_arr), pa.int64(), safe=False)
        scale = 1000.0 if epoch_unit == "s" else 1.0
        return pc.cast(pc.multiply(x, scale), pa.int64(), safe=False)
    if t != pa.string():
        arr = pc.cast(arr, pa.string())
    # Try the spelling of the first value first (a failed cast costs a pass).
    first = next((v for v in arr.drop_null().slice(0, 1).to_pylist()), "")
    zoned = first.endswith(("Z", "z")) or (len(first) > 19 and first[-6] in "+-")
    targets = (TIMESTAMP_TYPE, pa.timestamp("ms")) if zoned else (pa.timestamp("ms"), TIMESTAMP_TYPE)
    for target in targets:
        try:
            return pc.cast(pc.cast(arr, target), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return pa.array([None if v is None else _parse_ts_slow(v) for v in arr.to_pylist()], pa.int64())


def latest_ts_ms(reference: datetime) -> int:
    """The latest instant (epoch ms) a record that arrived at ``reference`` (its object's upload
    time, so reprocessing gives the same result) may carry: a day later, for clock skew."""
    return int(reference.timestamp() * 1000) + MAX_FUTURE_SECONDS * 1000


def time_range(min_ts_ms: int, max_ts_ms: int) -> dict[str, str]:
    """The range an object's instants were held to, as its summary and its quarantined
    ``timestamp_out_of_range`` records state it."""
    return {"valid_from": iso_ms(min_ts_ms), "valid_until": iso_ms(max_ts_ms)}


def out_of_range(ts_ms: np.ndarray, min_ts_ms: int, max_ts_ms: int) -> np.ndarray:
    """Where an instant (epoch ms) is impossible: before the floor or after the latest
    (``timestamp_out_of_range``, for events and catalogue rows alike)."""
    return (ts_ms < min_ts_ms) | (ts_ms > max_ts_ms)


def validate(
    native: dict[str, pa.Array],
    n: int,
    *,
    max_ts_ms: int,
    min_ts_ms: int = MIN_TS_MS,
    epoch_unit: str | None = None,
    pre_codes: np.ndarray | None = None,
) -> Validated:
    """Coerce native columns to their curated types and give every row a reason code (0 = valid)."""
    codes = _Codes(n)
    if pre_codes is not None:
        codes.codes[:] = pre_codes
    cols: dict[str, pa.Array] = {}

    # Strings: UTF-8, empty -> null, length limits.
    for name in STRING_COLUMNS:
        arr = native.get(name)
        if arr is None:
            continue
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            arr, bad = _utf8(arr)
            codes.flag("invalid_utf8", bad)
        elif not pa.types.is_string(arr.type):
            arr = pc.cast(arr, pa.string())
        lengths = pc.binary_length(arr)
        if name != "properties" and arr.null_count < len(arr) and pc.min(lengths).as_py() == 0:
            empty = pc.equal(lengths, 0)
            arr = pc.if_else(empty, pa.scalar(None, pa.string()), arr)
        limit = _STRING_LIMITS[name]
        if (pc.max(lengths).as_py() or 0) > limit:
            codes.flag("oversize_field", pc.greater(lengths, limit))
        cols[name] = arr

    # Event type: index into the fixed dictionary; null means missing or unknown.
    et = cols.get("event_type")
    if et is None:
        codes.flag("missing_event_type", np.ones(n, bool))
        et_index = pa.nulls(n, pa.int8())
    else:
        idx = pc.index_in(et, value_set=EVENT_TYPE_VALUES)
        if idx.null_count:
            codes.flag("missing_event_type", pc.is_null(et))
            codes.flag("unknown_event_type", pc.and_(pc.is_valid(et), pc.is_null(idx)))
        et_index = pc.cast(idx, pa.int8())

    # Timestamp.
    raw_ts = native.get("timestamp")
    if raw_ts is None:
        codes.flag("missing_timestamp", np.ones(n, bool))
        ts = pa.nulls(n, pa.int64())
    else:
        if pa.types.is_binary(raw_ts.type):
            raw_ts, bad = _utf8(raw_ts)
            codes.flag("bad_timestamp", bad)
        ts = timestamps_ms(raw_ts, epoch_unit)
        if ts.null_count:
            codes.flag("missing_timestamp", pc.is_null(raw_ts))
            codes.flag("bad_timestamp", pc.and_(pc.is_valid(raw_ts), pc.is_null(ts)))
    ts_np = np.asarray(ts.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    impossible = out_of_range(ts_np, min_ts_ms, max_ts_ms)
    if ts.null_count:
        impossible &= np.asarray(ts.is_valid().to_numpy(zero_copy_only=False), bool)
    codes.flag(OUT_OF_RANGE, impossible)

    # Actor and item.
    user, session, item = cols.get("user_id"), cols.get("session_id"), cols.get("item_id")
    no_user = pc.is_null(user) if user is not None else None
    no_session = pc.is_null(session) if session is not None else None
    if no_user is None and no_session is None:
        codes.flag("missing_user_and_session", np.ones(n, bool))
    elif no_user is None or no_session is None:
        codes.flag("missing_user_and_session", no_user if no_user is not None else no_session)
    else:
        codes.flag("missing_user_and_session", pc.and_(no_user, no_session))
    itemless = pc.equal(et, "search") if et is not None else None
    if item is None:
        codes.flag(
            "missing_item_id",
            pc.invert(pc.fill_null(itemless, False)) if itemless is not None else np.ones(n, bool),
        )
    elif item.null_count:
        needs_item = pc.invert(pc.fill_null(itemless, False)) if itemless is not None else None
        codes.flag(
            "missing_item_id",
            pc.and_(pc.is_null(item), needs_item) if needs_item is not None else pc.is_null(item),
        )

    # Numbers.
    for name, target, pattern in (
        ("price", pa.float64(), _NUMBER),
        ("quantity", pa.float64(), _NUMBER),
        ("score", pa.float32(), _NUMBER),
        ("position", pa.int32(), _INTEGER),
    ):
        arr = native.get(name)
        if arr is None:
            continue
        if pa.types.is_binary(arr.type):
            arr, bad = _utf8(arr)
            codes.flag("wrong_type", bad)
        if name == "score" and not pa.types.is_string(arr.type):
            value, bad = _number(arr, pa.float64(), pattern)
            value = pc.cast(value, pa.float32(), safe=False)
        elif name == "position" and not pa.types.is_string(arr.type) and not pa.types.is_integer(arr.type):
            value, bad = _number(arr, pa.float64(), pattern)
            integral = pc.fill_null(pc.equal(pc.floor(value), value), True)
            bad = pc.invert(integral) if bad is None else pc.or_(bad, pc.invert(integral))
            value = pc.cast(
                pc.if_else(integral, value, pa.scalar(None, pa.float64())), pa.int32(), safe=False
            )
        else:
            value, bad = _number(arr, pa.int64() if name == "position" else target, pattern)
            if name == "position":
                in_range = pc.fill_null(
                    pc.and_(pc.greater_equal(value, 0), pc.less_equal(value, MAX_POSITION)), True
                )
                codes.flag("invalid_position", pc.invert(in_range))
                value = pc.cast(pc.if_else(in_range, value, pa.scalar(None, pa.int64())), pa.int32())
        codes.flag("wrong_type", bad)
        if name in ("price", "quantity") and value.null_count < len(value):
            neg = pc.less(value, 0)
            if pc.any(neg).as_py():
                codes.flag(f"negative_{name}", neg)
            too_big = pc.greater(value, _MAX_VALUE[name])
            if pc.any(too_big).as_py():
                codes.flag("number_out_of_range", too_big)
        cols[name] = value

    return Validated(columns=cols, codes=codes.codes, event_type_index=et_index, ts_ms=ts_np)


def normalise_types(
    batch: pa.RecordBatch, types: dict[str, pa.DataType], n: int
) -> tuple[pa.RecordBatch, np.ndarray | None]:
    """Bring a block that fell back to raw bytes to the types of the fast path, flagging bad values."""
    if all(f.type == types.get(f.name, f.type) for f in batch.schema):
        return batch, None
    codes = np.zeros(n, np.int8)
    arrays = []
    for f, arr in zip(batch.schema, batch.columns, strict=True):
        target = types.get(f.name, pa.string())
        if pa.types.is_binary(arr.type):
            arr, bad = _utf8(arr)
            if bad is not None:
                codes[(codes == 0) & bad] = REASON_CODE["invalid_utf8"]
        if target != pa.string() and arr.type == pa.string():
            pattern = (
                r"^\s*[+-]?\d+\s*$"
                if pa.types.is_integer(target)
                else r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
            )
            arr, bad = _number(arr, target, pattern)
            if bad is not None:
                m = np.asarray(bad.fill_null(False).to_numpy(zero_copy_only=False), bool)
                codes[(codes == 0) & m] = REASON_CODE["wrong_type"]
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names), codes
